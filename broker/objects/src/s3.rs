//! The S3 backend (aws-sdk-s3): any S3-compatible endpoint. Endpoint,
//! region, bucket, path-style addressing and credentials come from the
//! config, else from the standard AWS environment (variables, profile,
//! instance role). For non-AWS endpoints the SDK's default request checksums
//! are turned down to "when required", since many S3-compatible servers
//! reject them. The SDK's standard retry mode retries 5xx answers,
//! throttling and timeouts with exponential backoff and jitter.
//!
//! Objects larger than one part go up as a multipart upload.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use serde::Deserialize;

use crate::store::{ObjectStore, StoreError};

/// Objects at least this large are uploaded in parts of this size.
pub const PART_BYTES: usize = 16 << 20;

/// Where the objects live, as the config gives it.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// An S3-compatible endpoint (`http://host:port`); empty for AWS itself.
    #[serde(default)]
    pub endpoint: String,
    /// Empty: from the AWS environment, else `us-east-1`.
    #[serde(default)]
    pub region: String,
    /// `bucket` in the path rather than the host name (most S3-compatible servers).
    #[serde(default)]
    pub path_style: bool,
    /// Static credentials; empty: the AWS environment's.
    #[serde(default)]
    pub access_key_id: String,
    #[serde(default)]
    pub secret_access_key: String,
    /// Attempts per call, the first included.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_attempts() -> u32 {
    6
}

/// The secret never reaches a log.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret_access_key.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    config: S3Config,
}

impl S3Store {
    pub async fn connect(config: S3Config) -> Result<S3Store, StoreError> {
        if config.bucket.is_empty() {
            return Err(StoreError::Failed("the S3 bucket is not set".into()));
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if !config.region.is_empty() {
            loader = loader.region(Region::new(config.region.clone()));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if !config.endpoint.is_empty() {
            builder = builder
                .endpoint_url(config.endpoint.clone())
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        if !config.access_key_id.is_empty() {
            let credentials =
                Credentials::new(&config.access_key_id, &config.secret_access_key, None, None, "keel-config");
            builder = builder.credentials_provider(credentials);
        }
        Ok(S3Store { client: aws_sdk_s3::Client::from_conf(builder.build()), config })
    }

    async fn put_multipart(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let bucket = &self.config.bucket;
        let created = self.client.create_multipart_upload().bucket(bucket).key(key).send().await.map_err(failed)?;
        let upload_id = created.upload_id().ok_or_else(|| StoreError::Failed("no multipart upload id".into()))?;
        let upload = async {
            let mut parts = Vec::new();
            for (index, start) in (0..bytes.len()).step_by(PART_BYTES).enumerate() {
                let part = bytes.slice(start..(start + PART_BYTES).min(bytes.len()));
                let number = index as i32 + 1;
                let sent = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(part))
                    .send()
                    .await
                    .map_err(failed)?;
                parts.push(
                    CompletedPart::builder().part_number(number).set_e_tag(sent.e_tag().map(str::to_owned)).build(),
                );
            }
            let completed = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
            let answer = self
                .client
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(completed)
                .send()
                .await;
            match answer {
                Ok(_) => Ok(()),
                // The outcome is unknown (a timeout, or an answer the SDK cannot
                // parse, as some S3-compatible servers give): the object is
                // there, whole, or the upload failed.
                Err(error) => match self.client.head_object().bucket(bucket).key(key).send().await {
                    Ok(head) if head.content_length() == Some(bytes.len() as i64) => {
                        tracing::debug!(
                            key,
                            "multipart completion answered oddly, but the object is whole: {}",
                            DisplayErrorContext(&error)
                        );
                        Ok(())
                    }
                    _ => Err(failed(error)),
                },
            }
        };
        match upload.await {
            Ok(()) => Ok(()),
            Err(error) => {
                // Best effort: an abandoned upload costs storage until aborted.
                let abort = self.client.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id);
                if let Err(abort_error) = abort.send().await {
                    tracing::warn!(
                        key,
                        "could not abort a failed multipart upload: {}",
                        DisplayErrorContext(&abort_error)
                    );
                }
                Err(error)
            }
        }
    }
}

fn failed<E: std::error::Error + 'static, R: std::fmt::Debug>(error: SdkError<E, R>) -> StoreError {
    StoreError::Failed(DisplayErrorContext(&error).to_string())
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        if bytes.len() > PART_BYTES {
            return self.put_multipart(key, bytes).await;
        }
        let request = self.client.put_object().bucket(&self.config.bucket).key(key).body(ByteStream::from(bytes));
        request.send().await.map(|_| ()).map_err(failed)
    }

    async fn get_range(&self, key: &str, pos: u64, len: u64) -> Result<Bytes, StoreError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={}-{}", pos, pos + len - 1);
        let answer = self.client.get_object().bucket(&self.config.bucket).key(key).range(range).send().await;
        let output = match answer {
            Ok(output) => output,
            Err(SdkError::ServiceError(error)) if error.err().is_no_such_key() => {
                return Err(StoreError::NotFound { key: key.to_owned() });
            }
            Err(SdkError::ServiceError(error)) if error.raw().status().as_u16() == 416 => {
                return Err(StoreError::OutOfRange { key: key.to_owned() });
            }
            Err(error) => return Err(failed(error)),
        };
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|error| StoreError::Failed(format!("{key}: reading the body: {error}")))?
            .into_bytes();
        if bytes.len() as u64 != len {
            return Err(StoreError::OutOfRange { key: key.to_owned() });
        }
        Ok(bytes)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let request = self.client.delete_object().bucket(&self.config.bucket).key(key);
        request.send().await.map(|_| ()).map_err(failed)
    }

    fn describe(&self) -> String {
        let endpoint = if self.config.endpoint.is_empty() { "AWS" } else { &self.config.endpoint };
        format!("S3 bucket {} at {endpoint}", self.config.bucket)
    }
}
