//! `ListMultipartUploads` on S3: the one call corral needs that
//! `object_store` does not make, sent here and signed with AWS Signature
//! Version 4 by `aws-sigv4` (the AWS SDK's signer) using the same
//! credentials as `object_store`. What is done with the listing is
//! [`crate::orphan`]'s.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use object_store::aws::AwsCredentialProvider;
use serde::Deserialize;

use crate::error::StatusError;

/// `ListMultipartUploads` on one bucket, under one prefix.
#[derive(Debug)]
pub(crate) struct S3Uploads {
    /// The bucket's base URL, as `object_store` addresses it.
    bucket_url: String,
    region: String,
    credentials: AwsCredentialProvider,
    /// The store's prefix with its trailing `/`, or empty.
    prefix: String,
    client: reqwest::Client,
}

/// One multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The full key in the bucket (with the store's prefix).
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) initiated: DateTime<Utc>,
}

/// A page of the listing, and where the next starts.
pub(crate) struct Page {
    pub(crate) uploads: Vec<Pending>,
    pub(crate) next: Option<(String, String)>,
}

impl S3Uploads {
    pub(crate) fn new(
        bucket_url: String,
        region: String,
        credentials: AwsCredentialProvider,
        prefix: &str,
    ) -> Self {
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Self {
            bucket_url,
            region,
            credentials,
            prefix,
            client: reqwest::Client::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn bucket_url(&self) -> &str {
        &self.bucket_url
    }

    /// The store's prefix with its trailing `/`, or empty.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One page of the uploads under the prefix and then `under`, after
    /// `marker`.
    pub(crate) async fn list(
        &self,
        under: &str,
        marker: Option<(String, String)>,
    ) -> object_store::Result<Page> {
        let error = |message: String| object_store::Error::Generic {
            store: "S3",
            source: message.into(),
        };
        let mut url = reqwest::Url::parse(&self.bucket_url)
            .map_err(|e| error(format!("bad bucket URL {:?}: {e}", self.bucket_url)))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("uploads", "")
                .append_pair("encoding-type", "url")
                .append_pair("prefix", &format!("{}{under}", self.prefix));
            if let Some((key, upload_id)) = &marker {
                query
                    .append_pair("key-marker", key)
                    .append_pair("upload-id-marker", upload_id);
            }
        }
        let credential = self.credentials.get_credential().await?;
        let mut request = http::Request::get(url.as_str())
            .body(())
            .map_err(|e| error(e.to_string()))?;
        sign_v4(&mut request, &credential, &self.region).map_err(error)?;
        let mut builder = self.client.get(url);
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        let response = builder.send().await.map_err(|e| error(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| error(e.to_string()))?;
        if !status.is_success() {
            // Classified by its status (see `crate::error`).
            return Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(StatusError {
                    call: "ListMultipartUploads",
                    status: status.as_u16(),
                    body,
                }),
            });
        }
        parse_page(&body).map_err(|e| error(format!("ListMultipartUploads: {e}")))
    }
}

/// Signs `request` for S3 with AWS Signature Version 4.
fn sign_v4(
    request: &mut http::Request<()>,
    credential: &object_store::aws::AwsCredential,
    region: &str,
) -> Result<(), String> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
    };
    let identity = aws_credential_types::Credentials::new(
        &credential.key_id,
        &credential.secret_key,
        credential.token.clone(),
        None,
        "object_store",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    // S3 wants the path as sent, encoded once and not normalized.
    settings.percent_encoding_mode = aws_sigv4::http_request::PercentEncodingMode::Single;
    settings.uri_path_normalization_mode =
        aws_sigv4::http_request::UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.uri().to_string(),
        std::iter::empty(),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListResult {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<UploadXml>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: DateTime<Utc>,
}

fn parse_page(xml: &str) -> Result<Page, String> {
    let result: ListResult = quick_xml::de::from_str(xml).map_err(|e| e.to_string())?;
    let decode = |text: &str| {
        // `encoding-type=url`: keys come percent-encoded, so that any key
        // survives XML.
        percent_encoding::percent_decode_str(&text.replace('+', " "))
            .decode_utf8()
            .map(|key| key.into_owned())
            .map_err(|e| format!("key {text:?} is not UTF-8: {e}"))
    };
    let uploads = result
        .uploads
        .into_iter()
        .map(|upload| {
            Ok(Pending {
                key: decode(&upload.key)?,
                upload_id: upload.upload_id,
                initiated: upload.initiated,
            })
        })
        .collect::<Result<_, String>>()?;
    let next = match (
        result.is_truncated,
        result.next_key_marker,
        result.next_upload_id_marker,
    ) {
        (true, Some(key), Some(upload_id)) => Some((decode(&key)?, upload_id)),
        (true, _, _) => return Err("a truncated listing without its next markers".to_owned()),
        (false, _, _) => None,
    };
    Ok(Page { uploads, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_parsed_with_their_markers() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/t/a%20b.bin</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <EncodingType>url</EncodingType><MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/t/%C3%A9t%C3%A9.bin</Key><UploadId>u1</UploadId>
    <Initiator><ID>x</ID></Initiator><StorageClass>STANDARD</StorageClass>
    <Initiated>2026-11-20T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/t/a+b.bin</Key><UploadId>u2</UploadId>
    <Initiated>2026-11-23T10:00:00Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_page(xml).unwrap();
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "p/t/été.bin");
        assert_eq!(page.uploads[1].key, "p/t/a b.bin");
        assert_eq!(
            page.uploads[0].initiated,
            "2026-11-20T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(page.next, Some(("p/t/a b.bin".to_owned(), "u2".to_owned())));

        let last = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>\
                    </ListMultipartUploadsResult>";
        let page = parse_page(last).unwrap();
        assert!(page.uploads.is_empty() && page.next.is_none());
        let broken = "<ListMultipartUploadsResult><IsTruncated>true</IsTruncated>\
                      </ListMultipartUploadsResult>";
        assert!(parse_page(broken).is_err());
    }
}
