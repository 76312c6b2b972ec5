//! Where archive and report files live: a local directory or an S3 prefix, behind the
//! [`ObjectSink`]/[`ObjectSource`] ports. The archive's layout and formats are `meter-archive`'s; these
//! adapters only put and get bytes at relative paths.
//!
//! `local` is the directory, `s3` the bucket prefix; [`AnySink`] is either, chosen at run time.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use meter_model::{ObjectSink, ObjectSource, StoreError};

mod local;
mod s3;

pub use local::LocalDir;
pub use s3::S3Prefix;

/// Where the archive lives: a local directory or `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveLocation {
    /// A local directory.
    Local(PathBuf),
    /// A bucket and a key prefix (without leading or trailing `/`; may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix.
        prefix: String,
    },
}

/// An `--archive` value that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an archive location: use a directory or s3://BUCKET[/PREFIX]")]
pub struct ArchiveLocationError(String);

impl From<ArchiveLocationError> for meter_lambda::env::ConfigError {
    fn from(err: ArchiveLocationError) -> Self {
        Self::Value(Box::new(err))
    }
}

impl FromStr for ArchiveLocation {
    type Err = ArchiveLocationError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'));
            if !bucket_ok {
                return Err(ArchiveLocationError(text.to_owned()));
            }
            return Ok(Self::S3 { bucket: bucket.to_owned(), prefix: prefix.trim_matches('/').to_owned() });
        }
        if text.is_empty() || text.contains("://") {
            return Err(ArchiveLocationError(text.to_owned()));
        }
        Ok(Self::Local(PathBuf::from(text)))
    }
}

impl fmt::Display for ArchiveLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A local directory or a bucket, chosen at run time.
#[derive(Debug, Clone)]
pub enum AnySink {
    /// A local directory.
    Local(LocalDir),
    /// A bucket.
    S3(S3Prefix),
}

impl AnySink {
    /// Opens `location`; for S3 with the standard AWS configuration.
    pub async fn open(location: &ArchiveLocation) -> Self {
        match location {
            ArchiveLocation::Local(root) => Self::Local(LocalDir::new(root.clone())),
            ArchiveLocation::S3 { bucket, prefix } => {
                let sdk = crate::sdk::load_aws_config().await;
                Self::S3(S3Prefix::new(crate::s3::client(&sdk), bucket.clone(), prefix.clone()))
            }
        }
    }
}

/// Hands a call to whichever place an [`AnySink`] is.
macro_rules! either {
    ($self:ident, $call:ident($($arg:expr),*).await) => {
        match $self {
            AnySink::Local(dir) => dir.$call($($arg),*).await,
            AnySink::S3(bucket) => bucket.$call($($arg),*).await,
        }
    };
    ($self:ident, $call:ident($($arg:expr),*)) => {
        match $self {
            AnySink::Local(dir) => dir.$call($($arg),*),
            AnySink::S3(bucket) => bucket.$call($($arg),*),
        }
    };
}

impl ObjectSource for AnySink {
    async fn list(&self, relative: &str) -> Result<Vec<String>, StoreError> {
        either!(self, list(relative).await)
    }

    async fn get(&self, relative: &str) -> Result<bytes::Bytes, StoreError> {
        either!(self, get(relative).await)
    }

    async fn get_tail(&self, relative: &str, len: u64) -> Result<bytes::Bytes, StoreError> {
        either!(self, get_tail(relative, len).await)
    }

    async fn put_new(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<String, StoreError> {
        either!(self, put_new(relative, bytes, content_type).await)
    }

    fn location(&self, relative: &str) -> String {
        either!(self, location(relative))
    }

    async fn download_link(
        &self,
        relative: &str,
        expires_in: std::time::Duration,
    ) -> Result<String, StoreError> {
        either!(self, download_link(relative, expires_in).await)
    }
}

impl ObjectSink for AnySink {
    async fn put(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> Result<String, StoreError> {
        either!(self, put(relative, bytes, content_type).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert_eq!(
            "s3://usage-archive/prod/events/".parse::<ArchiveLocation>().unwrap(),
            ArchiveLocation::S3 { bucket: "usage-archive".into(), prefix: "prod/events".into() }
        );
        assert_eq!(
            "s3://usage-archive".parse::<ArchiveLocation>().unwrap(),
            ArchiveLocation::S3 { bucket: "usage-archive".into(), prefix: String::new() }
        );
        assert_eq!(
            "./.meter/archive".parse::<ArchiveLocation>().unwrap(),
            ArchiveLocation::Local("./.meter/archive".into())
        );
        for bad in ["", "s3://", "s3://UPPER", "gs://bucket/x"] {
            assert!(bad.parse::<ArchiveLocation>().is_err(), "{bad}");
        }
    }
}
