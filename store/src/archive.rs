//! The Parquet archive of usage events (DESIGN §3.5) on a local directory or S3, and the rejects kept
//! beside it. Files are named by their writers after their content, so writing one again replaces it
//! with the same bytes rather than adding a duplicate.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int32Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use aws_sdk_s3::primitives::ByteStream;
use meter_model::{ArchiveWriter, Day, RejectedLine, StoreError, UsageEvent};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Folder (under the archive root) of rejected usage lines.
pub const REJECTS_DIR: &str = "rejects";

/// The columns of the archive, in order.
#[must_use]
pub fn archive_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("status_code", DataType::Int32, false),
        Field::new("should_count", DataType::Boolean, false),
        Field::new("method", DataType::Utf8, true),
        Field::new("resource", DataType::Utf8, true),
        Field::new("latency_ms", DataType::Int32, true),
    ]))
}

/// The Hive partition of a day: `year=YYYY/month=MM/day=DD`.
#[must_use]
pub fn partition(day: Day) -> String {
    let text = day.to_string();
    format!("year={}/month={}/day={}", &text[..4], &text[5..7], &text[8..10])
}

fn archive_error(operation: &str, err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other { operation: operation.into(), source: err.into() }
}

/// Encodes events as one Parquet file (Snappy, the codec Firehose's conversion uses).
pub fn encode_parquet(events: &[UsageEvent<'_>]) -> Result<Vec<u8>, StoreError> {
    let rows = events.len();
    let mut request_id = StringBuilder::with_capacity(rows, rows * 36);
    let mut key_id = StringBuilder::with_capacity(rows, rows * 12);
    let mut ts = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut status_code = Int32Builder::with_capacity(rows);
    let mut should_count = BooleanBuilder::with_capacity(rows);
    let mut method = StringBuilder::with_capacity(rows, rows * 4);
    let mut resource = StringBuilder::with_capacity(rows, rows * 16);
    let mut latency_ms = Int32Builder::with_capacity(rows);
    for event in events {
        request_id.append_value(&event.request_id);
        key_id.append_value(&event.key_id);
        ts.append_value(event.timestamp.timestamp_millis());
        status_code.append_value(i32::from(event.status_code));
        should_count.append_value(event.should_count);
        method.append_option(event.method.as_deref());
        resource.append_option(event.resource.as_deref());
        // The parser admits only latencies that fit an int32.
        latency_ms.append_option(event.latency_ms.and_then(|ms| i32::try_from(ms).ok()));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(request_id.finish()),
        Arc::new(key_id.finish()),
        Arc::new(ts.finish()),
        Arc::new(status_code.finish()),
        Arc::new(should_count.finish()),
        Arc::new(method.finish()),
        Arc::new(resource.finish()),
        Arc::new(latency_ms.finish()),
    ];
    parquet_file(archive_schema(), columns).map_err(|e| archive_error("encode Parquet", e))
}

/// One Parquet file (Snappy, the codec Firehose's conversion uses) holding `columns` as one batch.
/// Every Parquet file the project writes is made here.
pub fn parquet_file(
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
) -> Result<Vec<u8>, parquet::errors::ParquetError> {
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut buffer = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buffer, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(buffer)
}

/// Encodes rejected lines as JSON lines.
pub fn encode_rejects(rejects: &[RejectedLine]) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    for reject in rejects {
        serde_json::to_writer(&mut out, reject).map_err(|e| archive_error("encode rejects", e))?;
        out.push(b'\n');
    }
    Ok(out)
}

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

/// Where archive files go: a local directory or a bucket. The archive's layout and formats are the
/// same on both ([`Archive`]); only putting bytes at a relative path differs.
pub trait ObjectSink: Send + Sync {
    /// Writes `bytes` at `relative` (replacing what is there) and returns the full location.
    fn put(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> impl std::future::Future<Output = Result<String, StoreError>> + Send;
}

/// Reading back what an [`ObjectSink`] holds: what reconcile and reports need of the archive.
pub trait ObjectSource: Send + Sync {
    /// The files directly or indirectly under the folder `relative` (no trailing `/`), as paths
    /// relative to the root, sorted. A folder that does not exist holds no files.
    fn list(
        &self,
        relative: &str,
    ) -> impl std::future::Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The bytes of the file at `relative`; [`StoreError::NotFound`] when there is none.
    fn get(
        &self,
        relative: &str,
    ) -> impl std::future::Future<Output = Result<bytes::Bytes, StoreError>> + Send;

    /// Writes `bytes` at `relative` only if nothing is there yet; [`StoreError::AlreadyExists`] if
    /// something is (an S3 conditional put, `If-None-Match: *`, or an exclusive link on a local disk).
    fn put_new(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        content_type: &'static str,
    ) -> impl std::future::Future<Output = Result<String, StoreError>> + Send;

    /// The full location of `relative`, for messages and links.
    fn location(&self, relative: &str) -> String;

    /// A link that downloads `relative` for `expires_in`: a presigned GET URL on S3, a `file://` URL
    /// on a local disk (which needs no signature).
    fn download_link(
        &self,
        relative: &str,
        expires_in: std::time::Duration,
    ) -> impl std::future::Future<Output = Result<String, StoreError>> + Send;
}

/// Whether a listed file is data: Hive and Spark conventions hide names starting with `.` or `_`
/// (`_SUCCESS`, `.crc` files, writers' temporary files).
#[must_use]
pub fn is_data_file(relative: &str) -> bool {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    !(name.starts_with('.') || name.starts_with('_'))
}

/// The archive: the layout of DESIGN §3.5 over any [`ObjectSink`].
#[derive(Debug, Clone)]
pub struct Archive<S>(S);

impl<S> Archive<S> {
    /// Where the files are: to list, read, or write files beside the archive (rollups, reports).
    pub fn objects(&self) -> &S {
        &self.0
    }
}

impl<S: ObjectSink> ArchiveWriter for Archive<S> {
    async fn write_events(
        &self,
        day: Day,
        name: &str,
        events: &[UsageEvent<'_>],
    ) -> Result<String, StoreError> {
        let bytes = encode_parquet(events)?;
        self.0
            .put(&format!("{}/{name}.parquet", partition(day)), bytes, "application/vnd.apache.parquet")
            .await
    }

    async fn write_rejects(
        &self,
        day: Day,
        name: &str,
        rejects: &[RejectedLine],
    ) -> Result<String, StoreError> {
        let bytes = encode_rejects(rejects)?;
        self.0
            .put(&format!("{REJECTS_DIR}/{}/{name}.jsonl", partition(day)), bytes, "application/x-ndjson")
            .await
    }
}

/// The archive on a local directory.
pub type LocalArchive = Archive<LocalDir>;
/// The archive in an S3 bucket.
pub type S3Archive = Archive<S3Prefix>;
/// Either, chosen at run time.
pub type AnyArchive = Archive<AnySink>;

/// A local directory. Files appear atomically (written aside, then renamed).
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl Archive<LocalDir> {
    /// An archive rooted at `root` (created on first write).
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(LocalDir { root: root.into() })
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.0.root
    }
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

    /// A directory.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
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
        match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes.into()),
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

impl Archive<S3Prefix> {
    /// An archive under `s3://bucket/prefix`.
    #[must_use]
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self(S3Prefix { client, bucket: bucket.into(), prefix: prefix.into() })
    }
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
        let key = self.key(relative);
        let object = self.client.get_object().bucket(&self.bucket).key(&key).send().await.map_err(|e| {
            match crate::s3::store_error("read archive", &self.bucket, e) {
                StoreError::NotFound { .. } => {
                    StoreError::NotFound { what: format!("s3://{}/{key}", self.bucket) }
                }
                other => other,
            }
        })?;
        let body = object.body.collect().await.map_err(|e| StoreError::Retryable {
            operation: format!("read s3://{}/{key}", self.bucket),
            source: e.into(),
        })?;
        Ok(body.into_bytes())
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

impl Archive<AnySink> {
    /// Opens the archive at `location`; for S3 with the standard AWS configuration.
    pub async fn open(location: &ArchiveLocation) -> Self {
        Self(AnySink::open(location).await)
    }
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
    use meter_model::time::parse_instant;
    use parquet::file::reader::{FileReader, SerializedFileReader};

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

    #[test]
    fn partitions_are_hive_style_by_utc_day() {
        assert_eq!(partition("2026-01-05".parse().unwrap()), "year=2026/month=01/day=05");
    }

    #[test]
    fn parquet_has_the_contract_schema_with_millisecond_utc_timestamps() {
        let event = UsageEvent {
            request_id: "r1".into(),
            key_id: "0123456789ab".into(),
            timestamp: parse_instant("2026-11-29T14:03:07.123Z").unwrap(),
            status_code: 200,
            should_count: true,
            method: None,
            resource: Some("/v1/items/{id}".into()),
            latency_ms: Some(42),
        };
        let bytes = encode_parquet(&[event.clone(), event]).unwrap();
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 2);
        let schema = meta.file_metadata().schema_descr();
        let names: Vec<_> = schema.columns().iter().map(|c| c.name().to_owned()).collect();
        assert_eq!(
            names,
            ["request_id", "key_id", "ts", "status_code", "should_count", "method", "resource", "latency_ms"]
        );
        let ts = schema.column(2);
        assert_eq!(ts.physical_type(), parquet::basic::Type::INT64);
        assert!(
            matches!(
                ts.logical_type_ref(),
                Some(parquet::basic::LogicalType::Timestamp {
                    is_adjusted_to_u_t_c: true,
                    unit: parquet::basic::TimeUnit::MILLIS
                })
            ),
            "{:?}",
            ts.logical_type_ref()
        );
    }
}
