//! Opening a storage backend from its URL: what it is, and what it can do
//! beyond [`ObjectStore`]'s common interface.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, Checksum};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, RetryConfig};

use crate::error::{Error, Result};

mod aws_profile;
pub(crate) mod local;
pub(crate) mod local_parts;
pub(crate) mod s3_uploads;

use local::LocalStore;
use local_parts::LocalParts;
pub(crate) use s3_uploads::S3Uploads;

/// How an `s3://` store is reached. Credentials and anything not set here
/// come from the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
/// `AWS_ENDPOINT_URL`, ...), else from the static keys of the AWS profile
/// `AWS_PROFILE` (or `default`) in `~/.aws/credentials` and `~/.aws/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// The endpoint, for S3-compatible stores (`http://127.0.0.1:9000`).
    pub endpoint: Option<String>,
    /// The region.
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most S3-compatible
    /// stores want, rather than virtual-hosted style.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    /// An access key, in place of the environment's.
    pub access_key_id: Option<String>,
    /// Its secret.
    pub secret_access_key: Option<String>,
    /// Send each object's and each part's SHA-256 (`x-amz-checksum-sha256`),
    /// so that the store rejects bytes damaged on the way and keeps the
    /// checksum. On by default; turn it off only for an S3-compatible store
    /// that refuses the header.
    pub checksums: bool,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: None,
            region: None,
            path_style: false,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            checksums: true,
        }
    }
}

impl S3Options {
    /// An S3-compatible store at `endpoint` (MinIO, Ceph, moto...), with
    /// path-style requests, plain HTTP allowed if the endpoint uses it, and
    /// the given credentials.
    pub fn compatible(endpoint: &str, region: &str, access_key_id: &str, secret: &str) -> Self {
        Self {
            endpoint: Some(endpoint.to_owned()),
            region: Some(region.to_owned()),
            path_style: true,
            allow_http: endpoint.starts_with("http://"),
            access_key_id: Some(access_key_id.to_owned()),
            secret_access_key: Some(secret.to_owned()),
            ..Self::default()
        }
    }
}

/// How a `gs://` store is reached. Credentials and anything not set here
/// come from the environment (`GOOGLE_SERVICE_ACCOUNT`,
/// `GOOGLE_APPLICATION_CREDENTIALS`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcsOptions {
    /// The service's base URL, for an emulator (`http://127.0.0.1:4443`);
    /// Google's by default.
    pub endpoint: Option<String>,
    /// Send no credentials: for an emulator such as fake-gcs-server, which
    /// checks none. (Without credentials configured, the client would ask
    /// the GCE metadata service for a token.)
    pub no_auth: bool,
}

impl GcsOptions {
    /// A GCS emulator at `endpoint`, reached without credentials.
    pub fn emulator(endpoint: &str) -> Self {
        Self {
            endpoint: Some(endpoint.to_owned()),
            no_auth: true,
        }
    }
}

/// A service account key that turns OAuth off (`object_store`'s
/// `disable_oauth`, documented for emulators): requests carry an empty
/// bearer token.
const GCS_NO_OAUTH: &str =
    r#"{"disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}"#;

/// How an `az://` store is reached. Credentials and anything not set here
/// come from the environment (`AZURE_STORAGE_ACCOUNT_NAME`,
/// `AZURE_STORAGE_ACCOUNT_KEY`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureOptions {
    /// The account's URL, for an emulator or another cloud
    /// (`http://127.0.0.1:10000/devstoreaccount1`);
    /// `https://{account}.blob.core.windows.net` by default.
    pub endpoint: Option<String>,
    /// Allow a plain `http://` endpoint.
    pub allow_http: bool,
    /// The storage account, in place of the environment's.
    pub account: Option<String>,
    /// Its access key, in place of the environment's.
    pub access_key: Option<String>,
}

impl AzureOptions {
    /// An Azure-compatible blob service at `endpoint`, the account's URL
    /// (Azurite: `http://127.0.0.1:10000/devstoreaccount1`), with plain
    /// HTTP allowed if the endpoint uses it, and the given account and key.
    pub fn compatible(endpoint: &str, account: &str, access_key: &str) -> Self {
        Self {
            endpoint: Some(endpoint.to_owned()),
            allow_http: endpoint.starts_with("http://"),
            account: Some(account.to_owned()),
            access_key: Some(access_key.to_owned()),
        }
    }
}

/// How each kind of cloud store is reached.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloudOptions<'a> {
    pub(crate) s3: &'a S3Options,
    pub(crate) gcs: &'a GcsOptions,
    pub(crate) azure: &'a AzureOptions,
}

/// The parts interface of a backend, with the prefix its store adds.
#[derive(Clone)]
pub(crate) struct Parts {
    pub(crate) store: Arc<dyn MultipartStore>,
    /// What the backend's prefix store puts before every key.
    pub(crate) prefix: String,
    /// Whether an upload can be given attributes when it starts (S3, GCS).
    pub(crate) attributes_on_create: bool,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Parts {
    /// Parts kept by `store` itself, at the keys' own paths.
    fn unprefixed(store: Arc<dyn MultipartStore>) -> Self {
        Self {
            store,
            prefix: String::new(),
            attributes_on_create: false,
        }
    }

    pub(crate) fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }
}

/// How a backend's abandoned multipart uploads are found.
#[derive(Debug)]
pub(crate) enum Orphans {
    /// The backend leaves none (in memory).
    None,
    /// corral cannot list them; the reason says what does remove them.
    Unsupported(&'static str),
    /// Staging files `{key}#{n}` under this directory.
    Local(PathBuf),
    /// `ListMultipartUploads` on this bucket.
    S3(S3Uploads),
}

/// An opened backend.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Every object call goes here; keys are relative to the URL's prefix.
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The URL, for people (a local path made absolute).
    pub(crate) url: String,
    /// Parts by number, where the backend offers them.
    pub(crate) parts: Option<Parts>,
    /// Parts by number for resumable uploads, where [`Backend::parts`] has
    /// none: uploads that must outlive the process (see [`local_parts`]).
    pub(crate) resumable_parts: Option<Parts>,
    /// Whether objects keep attributes (content type, user metadata). The
    /// local backend keeps none: corral's metadata document is all there is.
    pub(crate) attributes: bool,
    /// How multipart uploads left behind are found.
    pub(crate) orphans: Orphans,
    /// What to tell people if the first call fails, beyond its error: set
    /// where the settings alone say what is likely wrong.
    pub(crate) hint: Option<&'static str>,
}

/// [`Error::Open`] for `url`.
fn refused(
    url: &str,
    reason: impl Into<String>,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Open {
        url: url.to_owned(),
        reason: reason.into(),
        source,
    }
}

/// [`Error::Open`] for `url`, caused by `source`.
fn failed(
    url: &str,
    reason: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    refused(url, reason, Some(Arc::new(source)))
}

/// Whether `url` names a local directory (a path, or `file://`), as
/// [`Store::open`](crate::Store::open) reads it: a backend whose calls are
/// this process's own file system calls, on this machine's CPUs and disk.
pub fn is_local(url: &str) -> bool {
    url.split_once("://")
        .is_none_or(|(scheme, _)| scheme == "file")
}

/// Opens the backend of `url`.
///
/// # Errors
///
/// [`Error::Open`], saying what is wrong with the URL or its settings.
pub(crate) fn open(url: &str, options: CloudOptions<'_>) -> Result<Backend> {
    if url == "memory://" || url == "memory:///" {
        let memory = Arc::new(InMemory::new());
        return Ok(Backend {
            store: memory.clone(),
            url: "memory://".to_owned(),
            parts: None,
            resumable_parts: Some(Parts::unprefixed(memory)),
            attributes: true,
            orphans: Orphans::None,
            hint: None,
        });
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return open_local(url, url);
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    if matches!(scheme, "s3" | "gs" | "az") && bucket.is_empty() {
        return Err(refused(
            url,
            format!("no bucket: expected {scheme}://bucket or {scheme}://bucket/prefix"),
            None,
        ));
    }
    match scheme {
        "file" => open_local(url, rest),
        "s3" => open_s3(url, bucket, prefix, options.s3),
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry());
            if let Some(endpoint) = &options.gcs.endpoint {
                builder = builder.with_base_url(endpoint);
            }
            if options.gcs.no_auth {
                builder = builder.with_service_account_key(GCS_NO_OAUTH);
            }
            use object_store::gcp::GoogleConfigKey as Key;
            let credentials = [
                Key::ServiceAccount,
                Key::ServiceAccountKey,
                Key::ApplicationCredentials,
                Key::BearerToken,
                Key::SkipSignature,
            ];
            let configured = configured(&credentials, |key| builder.get_config_value(key));
            let gcs = (builder.build()).map_err(|e| failed(url, "GCS settings refused", e))?;
            let orphans = Orphans::Unsupported(
                "on GCS, a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes \
                 incomplete uploads",
            );
            // GCS's XML API takes an object's attributes when its multipart
            // upload starts, as S3 does.
            let mut backend = cloud(url, gcs, prefix, true, orphans);
            backend.hint = (!configured && !options.gcs.no_auth).then_some(
                "no Google credentials are set (GOOGLE_SERVICE_ACCOUNT, \
                 GOOGLE_SERVICE_ACCOUNT_KEY or GOOGLE_APPLICATION_CREDENTIALS), so they were \
                 asked of the GCE metadata service",
            );
            Ok(backend)
        }
        "az" => {
            let azure = &options.azure;
            let mut builder = MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket)
                .with_retry(retry());
            if let Some(endpoint) = &azure.endpoint {
                builder = builder.with_endpoint(endpoint.clone());
            }
            if azure.allow_http {
                builder = builder.with_allow_http(true);
            }
            if let Some(account) = &azure.account {
                builder = builder.with_account(account);
            }
            if let Some(key) = &azure.access_key {
                builder = builder.with_access_key(key);
            }
            use object_store::azure::AzureConfigKey as Key;
            let credentials = [
                Key::AccessKey,
                Key::SasKey,
                Key::Token,
                Key::ClientSecret,
                Key::FederatedTokenFile,
                Key::UseAzureCli,
                Key::UseEmulator,
                Key::SkipSignature,
            ];
            let configured = configured(&credentials, |key| builder.get_config_value(key));
            let azure = (builder.build()).map_err(|e| failed(url, "Azure settings refused", e))?;
            let orphans = Orphans::Unsupported(
                "Azure discards uncommitted blocks by itself after seven days",
            );
            // object_store's Azure client takes no attributes at the start
            // of a multipart upload (its blocks are committed by a block
            // list that carries none): a multipart object has its content
            // type in corral's metadata document only.
            let mut backend = cloud(url, azure, prefix, false, orphans);
            backend.hint = (!configured).then_some(
                "no Azure credentials are set (AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_KEY, \
                 AZURE_STORAGE_TOKEN or a service principal's AZURE_CLIENT_SECRET), so they were \
                 asked of the managed identity endpoint",
            );
            Ok(backend)
        }
        _ => Err(refused(
            url,
            format!(
                "unknown scheme {scheme:?}: the supported stores are file://, s3://, gs://, \
                 az:// and memory://"
            ),
            None,
        )),
    }
}

fn open_local(url: &str, dir: &str) -> Result<Backend> {
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(url, format!("cannot create directory {dir:?}"), e))?;
    let dir = std::fs::canonicalize(dir)
        .map_err(|e| failed(url, format!("cannot resolve directory {dir:?}"), e))?;
    let local = LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| failed(url, "cannot use the directory", e))?
        .with_automatic_cleanup(true)
        .with_fsync(true);
    // Attributes as extended attributes where the file system keeps them
    // (see `local`); else metadata documents.
    let attributes = local::keeps_xattrs(&dir);
    let store: Arc<dyn ObjectStore> = match attributes {
        true => Arc::new(LocalStore::new(local)),
        false => Arc::new(local),
    };
    Ok(Backend {
        store,
        url: format!("file://{}", dir.display()),
        parts: None,
        resumable_parts: Some(Parts::unprefixed(Arc::new(LocalParts::new(dir.clone())))),
        attributes,
        orphans: Orphans::Local(PathBuf::from(&dir)),
        hint: None,
    })
}

/// No retries inside `object_store`: the scheduler retries whole calls,
/// under its budget, and must see every throttle. A `503 SlowDown` that
/// `object_store` retried by itself reached the adaptive limit as a slow
/// success instead of a loss, so the limit kept probing one call above
/// the backend's capacity (in `corral bench compare`, ~180 `503`s of
/// which the scheduler saw 22).
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        retry_timeout: Duration::from_secs(30),
        ..RetryConfig::default()
    }
}

fn open_s3(url: &str, bucket: &str, prefix: &str, options: &S3Options) -> Result<Backend> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry())
        .with_allow_http(options.allow_http)
        .with_virtual_hosted_style_request(!options.path_style);
    if options.checksums {
        builder = builder.with_checksum_algorithm(Checksum::SHA256);
    }
    if let Some(endpoint) = &options.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &options.region {
        builder = builder.with_region(region);
    }
    if let (Some(id), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    // With none of these, object_store asks the EC2 instance metadata
    // service for credentials, which off EC2 fails with an error that
    // says nothing of credentials.
    let credentials = [
        AmazonS3ConfigKey::AccessKeyId,
        AmazonS3ConfigKey::WebIdentityTokenFile,
        AmazonS3ConfigKey::ContainerCredentialsRelativeUri,
        AmazonS3ConfigKey::ContainerCredentialsFullUri,
        AmazonS3ConfigKey::SkipSignature,
    ];
    let mut credentials_configured = configured(&credentials, |key| builder.get_config_value(key));
    if !credentials_configured {
        // Then a profile's, as the AWS CLI would.
        let profile = aws_profile::load(|var| std::env::var(var).ok())
            .map_err(|reason| refused(url, reason, None))?;
        if let Some(profile) = profile {
            builder = builder
                .with_access_key_id(profile.access_key_id)
                .with_secret_access_key(profile.secret_access_key);
            if let Some(token) = profile.session_token {
                builder = builder.with_token(token);
            }
            if let Some(region) = profile.region
                && builder
                    .get_config_value(&AmazonS3ConfigKey::Region)
                    .is_none()
            {
                builder = builder.with_region(region);
            }
            credentials_configured = true;
        }
    }
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let s3 = (builder.build()).map_err(|e| failed(url, "S3 settings refused", e))?;
    // Where object_store sends the bucket's requests (see its builder).
    let bucket_url = match (endpoint, options.path_style) {
        (Some(endpoint), true) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
        (Some(endpoint), false) => endpoint,
        (None, true) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        (None, false) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
    };
    let orphans = Orphans::S3(S3Uploads::new(
        bucket_url,
        region,
        s3.credentials().clone(),
        prefix,
    ));
    let mut backend = cloud(url, s3, prefix, true, orphans);
    if !credentials_configured {
        backend.hint = Some(
            "no AWS credentials are set (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
             AWS_PROFILE and ~/.aws/credentials), so they were asked of the EC2 instance \
             metadata service",
        );
    }
    Ok(backend)
}

/// Whether any of the credential settings `keys` is set (and not to
/// `false`): without one, each cloud client falls back to its provider's
/// metadata service, whose failure off that cloud says nothing of
/// credentials; the backend's [`Backend::hint`] says it instead.
fn configured<K>(keys: &[K], value: impl Fn(&K) -> Option<String>) -> bool {
    keys.iter()
        .any(|key| value(key).is_some_and(|value| value != "false"))
}

/// A cloud backend: `store` under `prefix`, with its parts interface.
fn cloud<S: ObjectStore + MultipartStore + Clone>(
    url: &str,
    store: S,
    prefix: &str,
    attributes_on_create: bool,
    orphans: Orphans,
) -> Backend {
    let parts = Parts {
        store: Arc::new(store.clone()),
        prefix: prefix.to_owned(),
        attributes_on_create,
    };
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Backend {
        store,
        url: url.to_owned(),
        parts: Some(parts),
        resumable_parts: None,
        attributes: true,
        orphans,
        hint: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_with(url: &str, s3: &S3Options) -> Result<Backend> {
        let (gcs, azure) = (GcsOptions::default(), AzureOptions::default());
        let options = CloudOptions {
            s3,
            gcs: &gcs,
            azure: &azure,
        };
        open(url, options)
    }

    fn reason(url: &str) -> String {
        match open_with(url, &S3Options::default()) {
            Ok(_) => panic!("{url} opened"),
            Err(Error::Open { reason, .. }) => reason,
            Err(other) => panic!("{url}: {other}"),
        }
    }

    #[test]
    fn urls_name_their_backend() {
        assert!(reason("s4://bucket").contains("unknown scheme \"s4\""));
        for scheme in ["s3", "gs", "az"] {
            assert!(reason(&format!("{scheme}://")).contains("no bucket"));
            assert!(reason(&format!("{scheme}:///prefix")).contains("no bucket"));
        }
        let memory = open_with("memory://", &S3Options::default()).unwrap();
        assert_eq!(memory.url, "memory://");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        for url in [path.to_owned(), format!("file://{path}")] {
            let local = open_with(&url, &S3Options::default()).unwrap();
            assert!(local.url.starts_with("file:///"), "{}", local.url);
            // Kept as extended attributes, on the file systems the tests
            // run on (see `local`).
            assert_eq!(local.attributes, local::keeps_xattrs(dir.path()));
        }
    }

    #[test]
    fn cloud_stores_keep_their_prefix_and_parts() {
        let options = S3Options::compatible("http://127.0.0.1:1", "eu-west-1", "id", "secret");
        let s3 = open_with("s3://bucket/a/b/", &options).unwrap();
        let parts = s3.parts.unwrap();
        assert_eq!(parts.prefix, "a/b");
        assert!(parts.attributes_on_create);
        let Orphans::S3(uploads) = s3.orphans else {
            panic!("S3 uploads are swept")
        };
        assert_eq!(uploads.bucket_url(), "http://127.0.0.1:1/bucket");
        assert_eq!(uploads.prefix(), "a/b/");
    }

    #[test]
    fn each_cloud_without_credentials_names_its_own() {
        let (s3, mut gcs, mut azure) = (
            S3Options::default(),
            GcsOptions::default(),
            AzureOptions::default(),
        );
        let hint = |url: &str, gcs: &GcsOptions, azure: &AzureOptions| {
            let options = CloudOptions {
                s3: &s3,
                gcs,
                azure,
            };
            open(url, options).unwrap().hint.unwrap_or_default()
        };
        let unset = |prefix: &str| std::env::vars().all(|(name, _)| !name.starts_with(prefix));
        if unset("GOOGLE_") {
            let said = hint("gs://bucket", &gcs, &azure);
            assert!(said.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{said}");
            assert!(!said.contains("AWS"), "{said}");
        }
        if unset("AZURE_") {
            azure.account = Some("devstoreaccount1".to_owned());
            let said = hint("az://container", &gcs, &azure);
            assert!(said.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{said}");
            assert!(!said.contains("AWS"), "{said}");
        }
        // An emulator without authentication needs none.
        gcs.no_auth = true;
        assert_eq!(hint("gs://bucket", &gcs, &azure), "");
        azure.access_key = Some("a2V5".to_owned());
        assert_eq!(hint("az://container", &gcs, &azure), "");
    }

    #[test]
    fn s3_without_credentials_says_where_it_looked_for_them() {
        let options = S3Options::compatible("http://127.0.0.1:1", "eu-west-1", "id", "secret");
        assert_eq!(open_with("s3://bucket", &options).unwrap().hint, None);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            let options = S3Options {
                endpoint: Some("http://127.0.0.1:1".to_owned()),
                ..S3Options::default()
            };
            let hint = open_with("s3://bucket", &options).unwrap().hint;
            assert!(hint.is_some_and(|hint| hint.contains("AWS_ACCESS_KEY_ID")));
        }
    }
}
