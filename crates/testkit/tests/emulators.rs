//! The GCS and Azure emulators: they install and start by themselves, and
//! an `object_store` client stores, describes, lists, assembles from parts
//! and deletes objects there with their attributes.

use corral_testkit::azure::{self, AzureServer};
use corral_testkit::gcs::GcsServer;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
};

use futures::TryStreamExt;

fn gcs(bucket: &str) -> object_store::gcp::GoogleCloudStorage {
    GoogleCloudStorageBuilder::new()
        .with_base_url(&GcsServer::require().endpoint())
        // fake-gcs-server checks no token, and without one object_store
        // would ask the GCE metadata service for one.
        .with_service_account_key(corral_testkit::gcs::NO_OAUTH)
        .with_bucket_name(bucket)
        .build()
        .unwrap()
}

fn azurite(container: &str) -> object_store::azure::MicrosoftAzure {
    MicrosoftAzureBuilder::new()
        .with_endpoint(AzureServer::require().account_endpoint())
        .with_allow_http(true)
        .with_account(azure::ACCOUNT)
        .with_access_key(azure::ACCESS_KEY)
        .with_container_name(container)
        .build()
        .unwrap()
}

fn attributes() -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, "text/plain".into());
    attributes.insert(Attribute::Metadata("sha256".into()), "abc123".into());
    attributes
}

async fn described(store: &dyn ObjectStore, path: &Path) -> (u64, Attributes) {
    let head = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let got = store.get_opts(path, head).await.unwrap();
    (got.meta.size, got.attributes)
}

/// What every emulator must do for the store's conformance tests.
async fn round_trip(store: &dyn ObjectStore) {
    let path = Path::from("dir/with space/日本.txt");
    let options = PutOptions::from(attributes());
    store
        .put_opts(&path, b"hello".to_vec().into(), options)
        .await
        .unwrap();
    let (size, attributes) = described(store, &path).await;
    assert_eq!(size, 5);
    assert_eq!(attributes, self::attributes());
    let range = store.get_range(&path, 1..3).await.unwrap();
    assert_eq!(range.as_ref(), b"el");
    let listed: Vec<_> = store
        .list(Some(&Path::from("dir")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].location, path);
    store.delete(&path).await.unwrap();
    let gone = store.head(&path).await;
    assert!(
        matches!(gone, Err(object_store::Error::NotFound { .. })),
        "{gone:?}"
    );
}

/// Parts by number, completed in order.
async fn parts(store: &dyn MultipartStore, options: PutMultipartOptions) -> Path {
    let path = Path::from("large.bin");
    let id = store.create_multipart_opts(&path, options).await.unwrap();
    let first = store
        .put_part(&path, &id, 0, vec![1; 5 << 20].into())
        .await
        .unwrap();
    let second = store
        .put_part(&path, &id, 1, b"end".to_vec().into())
        .await
        .unwrap();
    store
        .complete_multipart(&path, &id, vec![first, second])
        .await
        .unwrap();
    path
}

#[tokio::test]
async fn gcs_objects_round_trip_with_their_attributes() {
    let bucket = GcsServer::require().new_bucket("round-trip").unwrap();
    round_trip(&gcs(&bucket)).await;
}

#[tokio::test]
async fn gcs_multipart_uploads_keep_the_attributes_they_started_with() {
    let bucket = GcsServer::require().new_bucket("parts").unwrap();
    let store = gcs(&bucket);
    let options = PutMultipartOptions {
        attributes: attributes(),
        ..PutMultipartOptions::default()
    };
    let path = parts(&store, options).await;
    let (size, attributes) = described(&store, &path).await;
    assert_eq!(size, (5 << 20) + 3);
    assert_eq!(attributes, self::attributes());
    let tail = store.get_range(&path, (5 << 20) - 1..(5 << 20) + 3).await;
    assert_eq!(tail.unwrap().as_ref(), b"\x01end");
    // An aborted upload is gone.
    let id = store.create_multipart(&path).await.unwrap();
    store.abort_multipart(&path, &id).await.unwrap();
    let again = store.put_part(&path, &id, 0, b"x".to_vec().into()).await;
    assert!(again.is_err(), "{again:?}");
}

#[tokio::test]
async fn gcs_buckets_are_created_once() {
    let gcs = GcsServer::require();
    let bucket = gcs.new_bucket("once").unwrap();
    let error = gcs.create_bucket(&bucket).unwrap_err();
    assert!(error.to_string().contains("409"), "{error}");
}

#[tokio::test]
async fn azure_objects_round_trip_with_their_attributes() {
    let container = AzureServer::require().new_container("round-trip").unwrap();
    round_trip(&azurite(&container)).await;
}

#[tokio::test]
async fn azure_blocks_make_one_blob() {
    let container = AzureServer::require().new_container("parts").unwrap();
    let store = azurite(&container);
    let path = parts(&store, PutMultipartOptions::default()).await;
    let (size, _) = described(&store, &path).await;
    assert_eq!(size, (5 << 20) + 3);
}

#[test]
fn azure_containers_are_created_by_a_signed_request() {
    let azurite = AzureServer::require();
    let container = azurite.new_container("signed").unwrap();
    let listing = azurite
        .request(
            "GET",
            &format!(
                "/{}/{container}?restype=container&comp=list",
                azure::ACCOUNT
            ),
            &[],
            &[],
        )
        .unwrap()
        .ok()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.body).contains("<Blobs"));
    let error = azurite.create_container(&container).unwrap_err();
    assert!(
        error.to_string().contains("ContainerAlreadyExists"),
        "{error}"
    );
}
