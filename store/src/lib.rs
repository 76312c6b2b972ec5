//! Adapters for the ports of `meter-model`: an embedded SQLite store (the default) and DynamoDB.
//! Both pass the same contract test suite (`tests/contract`), so a handler cannot tell them apart.

mod config;
pub mod dynamodb;
pub mod sqlite;

pub use config::{AnyStore, DEFAULT_HOME, StoreConfig};
pub use dynamodb::{DynamoStore, TableNames};
pub use sqlite::SqliteStore;
