//! Recordings to S3-compatible object storage (distributed mode): a dialer uploads each
//! recording when its call ends and points the CDR at `s3://<bucket>/<key>`.

use super::dist::RecordingsConfig;
use anyhow::{Context, Result};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::path::Path;
use std::sync::Arc;

/// Where a dialer's recordings go.
pub struct RecordingUploader {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    keep_local: bool,
}

impl RecordingUploader {
    /// The uploader of `[recordings]`, when it names a bucket. Credentials come from the
    /// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …), never from the config.
    pub fn from_config(cfg: &RecordingsConfig) -> Result<Option<RecordingUploader>> {
        let Some(bucket) = &cfg.s3_bucket else {
            return Ok(None);
        };
        let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(r) = &cfg.s3_region {
            b = b.with_region(r);
        }
        if let Some(e) = &cfg.s3_endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = b
            .build()
            .with_context(|| format!("[recordings] bucket {bucket}"))?;
        Ok(Some(RecordingUploader {
            store: Arc::new(store),
            bucket: bucket.clone(),
            prefix: cfg.s3_prefix.clone().unwrap_or_default(),
            keep_local: cfg.keep_local,
        }))
    }

    /// Uploads `file` as `<prefix><campaign>/<attempt>.wav` and returns its `s3://` URL; the
    /// local file is removed unless `keep_local`.
    pub async fn upload(&self, file: &Path, campaign: i64, attempt: &str) -> Result<String> {
        let bytes = tokio::fs::read(file)
            .await
            .with_context(|| format!("cannot read recording {}", file.display()))?;
        let key = format!(
            "{}{campaign}/{attempt}.wav",
            self.prefix.trim_start_matches('/')
        );
        self.store
            .put(&ObjectPath::from(key.as_str()), PutPayload::from(bytes))
            .await
            .with_context(|| format!("cannot upload recording to s3://{}/{key}", self.bucket))?;
        if !self.keep_local {
            let _ = tokio::fs::remove_file(file).await;
        }
        Ok(format!("s3://{}/{key}", self.bucket))
    }
}
