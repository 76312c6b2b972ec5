//! An S3 bucket and key prefix as an object place.

use aws_sdk_s3::primitives::ByteStream;
use meter_model::{ObjectSink, ObjectSource, StoreError};

/// A bucket and key prefix.
#[derive(Debug, Clone)]
pub struct S3Prefix {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl ObjectSink for S3Prefix {
    async fn put(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<String, StoreError> {
        let key =
            if self.prefix.is_empty() { relative.to_owned() } else { format!("{}/{relative}", self.prefix) };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| crate::s3::store_error("write archive", &self.bucket, e))?;
        Ok(format!("s3://{}/{key}", self.bucket))
    }
}

impl S3Prefix {
    /// A bucket and key prefix.
    #[must_use]
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self { client, bucket: bucket.into(), prefix: prefix.into() }
    }

    fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() { relative.to_owned() } else { format!("{}/{relative}", self.prefix) }
    }

    /// The client, bucket and full key of `relative` (to presign links to it).
    #[must_use]
    pub fn object(&self, relative: &str) -> (&aws_sdk_s3::Client, &str, String) {
        (&self.client, &self.bucket, self.key(relative))
    }
}

impl ObjectSource for S3Prefix {
    async fn list(&self, relative: &str) -> Result<Vec<String>, StoreError> {
        let folder = format!("{}/", self.key(relative));
        let skip = if self.prefix.is_empty() { 0 } else { self.prefix.len() + 1 };
        let mut out = Vec::new();
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(&folder).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| crate::s3::store_error("list archive", &self.bucket, e))?;
            for object in page.contents() {
                if let Some(key) = object.key().filter(|k| !k.ends_with('/')) {
                    out.push(key[skip..].to_owned());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    async fn get(&self, relative: &str) -> Result<bytes::Bytes, StoreError> {
        crate::s3::get_object(&self.client, &self.bucket, &self.key(relative), None, "read archive").await
    }

    async fn get_tail(&self, relative: &str, len: u64) -> Result<bytes::Bytes, StoreError> {
        // A suffix range: S3 answers the whole object when it is shorter.
        let range = format!("bytes=-{len}");
        crate::s3::get_object(&self.client, &self.bucket, &self.key(relative), Some(range), "read archive")
            .await
    }

    async fn put_new(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<String, StoreError> {
        let key = self.key(relative);
        let location = format!("s3://{}/{key}", self.bucket);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .if_none_match("*")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| match crate::s3::store_error("write file", &self.bucket, e) {
                StoreError::ConditionFailed { .. } => StoreError::AlreadyExists { what: location.clone() },
                other => other,
            })?;
        Ok(location)
    }

    fn location(&self, relative: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(relative))
    }

    async fn download_link(
        &self,
        relative: &str,
        expires_in: std::time::Duration,
    ) -> Result<String, StoreError> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in).map_err(|e| {
            StoreError::Other { operation: "presign a download link".into(), source: e.into() }
        })?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(relative))
            .presigned(config)
            .await
            .map_err(|e| crate::s3::store_error("presign a download link", &self.bucket, e))?;
        Ok(request.uri().to_owned())
    }
}
