//! Adapters for the ports of `meter-model`: the tables as an embedded SQLite store (the default) or
//! DynamoDB, and the files of the archive and the reports on a local directory or S3. The two table stores pass the same
//! contract test suite (`tests/contract`), so a handler cannot tell them apart.

pub mod athena;
mod config;
pub mod dynamodb;
pub mod grace_end;
pub mod kms;
pub mod objects;
pub mod s3;
mod sdk;
pub mod sns;
pub mod sqlite;

pub use athena::{AthenaEngine, AthenaSettings};
pub use config::{AnyStore, DEFAULT_HOME, StoreConfig, load_aws_config};
pub use dynamodb::{DynamoStore, TableNames};
pub use grace_end::GraceEndWorkflow;
pub use kms::KmsMacKey;
pub use objects::{AnySink, ArchiveLocation, LocalDir, S3Prefix};
pub use sns::{SnsNotifier, client as sns_client};
pub use sqlite::SqliteStore;
