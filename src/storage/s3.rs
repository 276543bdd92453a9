//! The S3 store: aws-sdk-s3 with aws-config's standard credential chain (environment,
//! profile, instance role), a custom endpoint and path-style switch for S3-compatible
//! stores, a checksum-mode setting, and the SDK's standard retry mode (exponential backoff
//! with jitter on throttling, 5xx and transient network errors).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use std::sync::{Arc, Mutex};

use super::{
    ByteStream, ListResult, MultipartUpload, ObjectMeta, PendingUpload, S3Settings, Storage,
    StorageError, StorageResult,
};

/// A store in an S3 bucket under a prefix.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// Whether multipart uploads carry per-part CRC32 checksums (see `start_multipart`).
    part_checksums: bool,
}

impl S3Store {
    /// Build a client from the standard AWS configuration plus `settings`. Does not contact
    /// the server.
    pub async fn new(bucket: &str, prefix: &str, settings: &S3Settings) -> Self {
        let attempts = if settings.max_attempts == 0 {
            5
        } else {
            settings.max_attempts
        };
        let connect = if settings.connect_timeout_secs == 0 {
            5
        } else {
            settings.connect_timeout_secs
        };
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(attempts)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(10)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(connect))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(r) = &settings.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some((ak, sk)) = &settings.static_credentials {
            crate::redact::register_secret(sk);
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                ak.clone(),
                sk.clone(),
                None,
                None,
                "mongokeep-static",
            ));
        }
        let shared = loader.load().await;
        let mut b =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(settings.path_style);
        if shared.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(e) = &settings.endpoint {
            b = b.endpoint_url(e.clone());
        }
        if settings.checksum_when_required {
            b = b
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        Self {
            client: Client::from_conf(b.build()),
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            part_checksums: !settings.checksum_when_required,
        }
    }

    /// The underlying client (tests use it to create buckets).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn rel(&self, full: &str) -> String {
        full.strip_prefix(&self.prefix).unwrap_or(full).to_string()
    }

    fn map<E, R>(&self, op: &'static str, key: &str, e: SdkError<E, R>) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus,
    {
        map_err(&self.bucket, op, key, e)
    }
}

/// The HTTP status of a raw response, where the SDK kept one.
pub trait HttpStatus {
    /// The status code.
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn map_err<E, R>(bucket: &str, op: &'static str, key: &str, e: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus,
{
    let status = e.raw_response().map(|r| r.status_code());
    match &e {
        SdkError::DispatchFailure(_) if error_chain(&e).contains("credential") => {
            return StorageError::AccessDenied {
                detail: format!(
                    "{op} {key}: no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
                ),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            return StorageError::Unreachable {
                detail: format!("{op} {key}: {}", error_chain(&e)),
            }
        }
        _ => {}
    }
    let code = e.code().map(str::to_string);
    let message = e.message().map(str::to_string).unwrap_or_default();
    match (code.as_deref(), status) {
        (Some("NoSuchBucket"), _) => StorageError::NoSuchBucket {
            bucket: bucket.to_string(),
        },
        (Some("NoSuchKey" | "NotFound"), _) | (None, Some(404)) => StorageError::NotFound {
            key: key.to_string(),
        },
        (
            Some(
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidToken"
                | "ExpiredToken"
                | "AllAccessDisabled",
            ),
            _,
        )
        | (_, Some(401 | 403)) => StorageError::AccessDenied {
            detail: format!(
                "{op} {key}: {} {}",
                code.as_deref().unwrap_or("HTTP 403"),
                message
            ),
        },
        _ => StorageError::Other {
            op,
            key: key.to_string(),
            detail: format!(
                "{}{}{}",
                code.map(|c| format!("{c}: ")).unwrap_or_default(),
                if message.is_empty() {
                    error_chain(&e)
                } else {
                    message
                },
                status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
            ),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn to_utc(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|d| DateTime::<Utc>::from_timestamp(d.secs(), d.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

#[async_trait]
impl Storage for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .body(SdkByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.map("put", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> StorageResult<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.map("get", key, e))?;
        let data = out.body.collect().await.map_err(|e| StorageError::Other {
            op: "read",
            key: key.to_string(),
            detail: error_chain(&e),
        })?;
        Ok(data.into_bytes())
    }

    async fn get_stream(&self, key: &str) -> StorageResult<ByteStream> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.map("get", key, e))?;
        let key = key.to_string();
        let stream = futures::stream::unfold(Some(out.body), move |body| {
            let key = key.clone();
            async move {
                let mut body = body?;
                match body.next().await {
                    None => None,
                    Some(Ok(b)) => Some((Ok(b), Some(body))),
                    Some(Err(e)) => Some((
                        Err(StorageError::Other {
                            op: "read",
                            key,
                            detail: error_chain(&e),
                        }),
                        None,
                    )),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.map("head", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_utc(out.last_modified()),
        })
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        Ok(self.list_inner(prefix, false).await?.objects)
    }

    async fn list_with_delimiter(&self, prefix: &str) -> StorageResult<ListResult> {
        self.list_inner(prefix, true).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key))
            .send()
            .await
            .map_err(|e| self.map("delete", key, e))?;
        Ok(())
    }

    async fn start_multipart(&self, key: &str) -> StorageResult<Box<dyn MultipartUpload>> {
        // The SDK checksums every part it sends unless checksums are "when required"; the
        // upload must then declare the algorithm, or stores (Garage, AWS) reject the part
        // checksums at completion.
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(key))
            .set_checksum_algorithm(
                self.part_checksums
                    .then_some(aws_sdk_s3::types::ChecksumAlgorithm::Crc32),
            )
            .send()
            .await
            .map_err(|e| self.map("start upload", key, e))?;
        let upload_id = out.upload_id().unwrap_or_default().to_string();
        Ok(Box::new(S3Upload {
            store: self.clone(),
            key: key.to_string(),
            upload_id,
            next_part: 1,
            done: Arc::new(Mutex::new(Vec::new())),
        }))
    }

    async fn list_pending_uploads(&self, prefix: &str) -> StorageResult<Vec<PendingUpload>> {
        let mut out = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut id_marker: Option<String> = None;
        loop {
            let r = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.map("list uploads", prefix, e))?;
            for u in r.uploads() {
                out.push(PendingUpload {
                    key: self.rel(u.key().unwrap_or_default()),
                    upload_id: u.upload_id().unwrap_or_default().to_string(),
                    initiated: to_utc(u.initiated()),
                });
            }
            if r.is_truncated() == Some(true) {
                key_marker = r.next_key_marker().map(str::to_string);
                id_marker = r.next_upload_id_marker().map(str::to_string);
            } else {
                return Ok(out);
            }
        }
    }

    async fn abort_pending_upload(&self, upload: &PendingUpload) -> StorageResult<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(self.full(&upload.key))
            .upload_id(&upload.upload_id)
            .send()
            .await
            .map_err(|e| self.map("abort upload", &upload.key, e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
    }
}

impl S3Store {
    async fn list_inner(&self, prefix: &str, delimited: bool) -> StorageResult<ListResult> {
        let mut out = ListResult::default();
        let mut token: Option<String> = None;
        loop {
            let mut req = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full(prefix))
                .set_continuation_token(token.clone());
            if delimited {
                req = req.delimiter("/");
            }
            let r = req.send().await.map_err(|e| self.map("list", prefix, e))?;
            for o in r.contents() {
                out.objects.push(ObjectMeta {
                    key: self.rel(o.key().unwrap_or_default()),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: to_utc(o.last_modified()),
                });
            }
            for p in r.common_prefixes() {
                out.prefixes.push(self.rel(p.prefix().unwrap_or_default()));
            }
            match r.next_continuation_token() {
                Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        out.prefixes.sort();
        Ok(out)
    }
}

struct S3Upload {
    store: S3Store,
    key: String,
    upload_id: String,
    next_part: i32,
    done: Arc<Mutex<Vec<CompletedPart>>>,
}

#[async_trait]
impl MultipartUpload for S3Upload {
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, StorageResult<()>> {
        let n = self.next_part;
        self.next_part += 1;
        let store = self.store.clone();
        let key = self.key.clone();
        let id = self.upload_id.clone();
        let done = self.done.clone();
        Box::pin(async move {
            let mut req = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(store.full(&key))
                .upload_id(id)
                .part_number(n)
                .body(SdkByteStream::from(data));
            if store.part_checksums {
                req = req.checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32);
            }
            let out = req
                .send()
                .await
                .map_err(|e| store.map("upload part", &key, e))?;
            let part = CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag().map(str::to_string))
                .set_checksum_crc32(
                    out.checksum_crc32()
                        .filter(|_| store.part_checksums)
                        .map(str::to_string),
                )
                .build();
            done.lock().unwrap_or_else(|e| e.into_inner()).push(part);
            Ok(())
        })
    }

    async fn complete(self: Box<Self>) -> StorageResult<()> {
        let mut parts = std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()));
        parts.sort_by_key(|p| p.part_number());
        self.store
            .client
            .complete_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.full(&self.key))
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.store.map("complete upload", &self.key, e))?;
        Ok(())
    }

    async fn abort(self: Box<Self>) -> StorageResult<()> {
        self.store
            .client
            .abort_multipart_upload()
            .bucket(&self.store.bucket)
            .key(self.store.full(&self.key))
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| self.store.map("abort upload", &self.key, e))?;
        Ok(())
    }
}
