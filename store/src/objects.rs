//! Where archive and report files live: a local directory or an S3 prefix, behind the
//! [`ObjectSink`]/[`ObjectSource`] ports. The archive's layout and formats are `meter-archive`'s; these
//! adapters only put and get bytes at relative paths.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aws_sdk_s3::primitives::ByteStream;
use meter_model::{ObjectSink, ObjectSource, StoreError};

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

/// A local directory. Files appear atomically (written aside, then renamed).
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl ObjectSink for LocalDir {
    async fn put(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        _content_type: &'static str,
    ) -> Result<String, StoreError> {
        let (path, staged) = self.stage(relative, &bytes, "write archive")?;
        staged.persist(&path).map_err(|e| write_error("write archive", &path, e.error))?;
        Ok(path.display().to_string())
    }
}

/// A local file system failure: what was being done, and to which path.
fn io_error(operation: &str, action: &str, path: &Path, err: std::io::Error) -> StoreError {
    StoreError::Unavailable {
        operation: operation.into(),
        hint: format!("cannot {action} {}", path.display()),
        source: Some(err.into()),
    }
}

fn write_error(operation: &str, path: &Path, err: std::io::Error) -> StoreError {
    io_error(operation, "write", path, err)
}

impl LocalDir {
    /// Writes `bytes` to a synced temporary file beside `relative`, for the caller to rename into place
    /// (so readers never see half a file).
    fn stage(
        &self,
        relative: &str,
        bytes: &[u8],
        operation: &str,
    ) -> Result<(PathBuf, tempfile::NamedTempFile), StoreError> {
        let path = self.root.join(relative);
        let fail = |e| write_error(operation, &path, e);
        let dir = path.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(fail)?;
        let mut staged = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
        std::io::Write::write_all(&mut staged, bytes).map_err(fail)?;
        staged.as_file().sync_all().map_err(fail)?;
        Ok((path, staged))
    }

    /// A directory (created on first write).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Files from this size on are mapped rather than read: a rollup reads the archive once, and copying
/// its files out of the page cache cost a tenth of its CPU time, on the one thread that feeds the
/// decoders. Smaller files are cheaper to copy than to map and unmap.
const MAP_FROM_BYTES: u64 = 1 << 20;

/// A file's bytes: mapped when it is big, read otherwise.
fn file_bytes(path: &Path) -> std::io::Result<bytes::Bytes> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    if size >= MAP_FROM_BYTES {
        // A file system that cannot map files is read instead.
        if let Ok(map) = map_file(&file) {
            return Ok(bytes::Bytes::from_owner(map));
        }
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    std::io::Read::read_to_end(&mut file, &mut bytes)?;
    Ok(bytes.into())
}

#[allow(unsafe_code)]
fn map_file(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: a mapping is undefined behaviour if the file changes while it is mapped. Files this
    // big under a `meter` directory are written once and never changed in place: archive files
    // (Firehose's objects, or `meter`'s own, written aside and renamed into place), rollups and
    // reports (the same). A file truncated by another program while it is mapped stops the process
    // (SIGBUS) as it is read, and every reader here reads what it fetched before it writes anything:
    // a rollup reads its whole range first, an issued report's files are hashed and dropped.
    unsafe { memmap2::Mmap::map(file) }
}

fn read_error(operation: &str, path: &Path, err: std::io::Error) -> StoreError {
    io_error(operation, "read", path, err)
}

impl ObjectSource for LocalDir {
    async fn list(&self, relative: &str) -> Result<Vec<String>, StoreError> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), StoreError> {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(read_error("list archive", dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| read_error("list archive", dir, e))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|e| read_error("list archive", &path, e))?;
                if kind.is_dir() {
                    walk(root, &path, out)?;
                } else if let Ok(rel) = path.strip_prefix(root) {
                    let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>();
                    out.push(rel.join("/"));
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, &self.root.join(relative), &mut out)?;
        out.sort();
        Ok(out)
    }

    async fn get(&self, relative: &str) -> Result<bytes::Bytes, StoreError> {
        let path = self.root.join(relative);
        match file_bytes(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { what: path.display().to_string() })
            }
            Err(e) => Err(read_error("read archive", &path, e)),
        }
    }

    async fn put_new(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        _content_type: &'static str,
    ) -> Result<String, StoreError> {
        let (path, staged) = self.stage(relative, &bytes, "write file")?;
        // A hard link fails if the name exists: the file appears whole, and only once.
        match staged.persist_noclobber(&path) {
            Ok(_) => Ok(path.display().to_string()),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::AlreadyExists { what: path.display().to_string() })
            }
            Err(e) => Err(write_error("write file", &path, e.error)),
        }
    }

    fn location(&self, relative: &str) -> String {
        self.root.join(relative).display().to_string()
    }

    async fn download_link(
        &self,
        relative: &str,
        _expires_in: std::time::Duration,
    ) -> Result<String, StoreError> {
        let path = self.root.join(relative);
        let absolute = std::path::absolute(&path).map_err(|e| read_error("link to a file", &path, e))?;
        Ok(format!("file://{}", absolute.display()))
    }
}

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
        crate::s3::get_object(&self.client, &self.bucket, &self.key(relative), "read archive").await
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
            ArchiveLocation::Local(root) => Self::Local(LocalDir { root: root.clone() }),
            ArchiveLocation::S3 { bucket, prefix } => {
                let sdk = crate::config::load_aws_config().await;
                Self::S3(S3Prefix {
                    client: crate::s3::client(&sdk),
                    bucket: bucket.clone(),
                    prefix: prefix.clone(),
                })
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
    /// Big files are mapped and small ones read: either way `get` returns the file's bytes exactly,
    /// and a missing file is `NotFound`.
    #[tokio::test]
    async fn local_files_read_whole_whether_mapped_or_copied() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalDir::new(dir.path());
        let size = usize::try_from(MAP_FROM_BYTES).unwrap();
        for (name, len) in
            [("empty", 0), ("small", 1000), ("edge", size - 1), ("big", size), ("bigger", 3 * size + 7)]
        {
            let bytes: Vec<u8> = (0..len).map(|i| u8::try_from(i * 31 % 251).unwrap()).collect();
            std::fs::write(dir.path().join(name), &bytes).unwrap();
            assert_eq!(local.get(name).await.unwrap(), bytes, "{name}");
        }
        assert!(matches!(local.get("missing").await, Err(StoreError::NotFound { .. })));
    }
}
