//! Adapters for the ports of `meter-model`: the tables as an embedded SQLite store (the default) or
//! DynamoDB, and the Parquet archive on a local directory or S3. The two table stores pass the same
//! contract test suite (`tests/contract`), so a handler cannot tell them apart.

pub mod archive;
mod config;
pub mod dynamodb;
pub mod lambda;
pub mod s3;
mod sdk;
pub mod sns;
pub mod sqlite;

pub use archive::{AnyArchive, ArchiveLocation, LocalArchive, S3Archive};
pub use config::{AnyStore, DEFAULT_HOME, StoreConfig, load_aws_config};
pub use dynamodb::{DynamoStore, TableNames};
pub use sns::{SnsNotifier, client as sns_client};
pub use sqlite::SqliteStore;
