//! Test support for the emulator tests. `scripts/test` starts moto's server and sets
//! `METER_TEST_AWS_ENDPOINT`; without it these helpers panic with instructions, so an emulator test
//! fails rather than skips when the emulator is missing.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use meter_store::{DynamoStore, TableNames};

/// The emulator's endpoint.
///
/// # Panics
/// When `METER_TEST_AWS_ENDPOINT` is not set.
#[must_use]
pub fn endpoint() -> String {
    std::env::var("METER_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "METER_TEST_AWS_ENDPOINT is not set: this test needs moto_server. Run scripts/test, which installs and \
             starts it, or start `moto_server -p PORT` and set METER_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT"
        )
    })
}

/// Environment variables that point the `meter` binary (or any AWS SDK) at the emulator.
#[must_use]
pub fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
    ]
}

fn credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "moto")
}

/// A DynamoDB client for `endpoint`.
#[must_use]
pub fn dynamodb_client_for(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(credentials())
            .build(),
    )
}

/// A DynamoDB client for the emulator.
#[must_use]
pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    dynamodb_client_for(&endpoint())
}

/// An S3 client for the emulator (path-style addressing).
#[must_use]
pub fn s3_client() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint())
            .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "moto"))
            .force_path_style(true)
            .build(),
    )
}

/// A name unique to this test process and call, for tables and buckets (lowercase, digits, `-`).
#[must_use]
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A DynamoDB store over fresh tables of its own.
///
/// # Panics
/// When the emulator cannot be reached.
pub async fn fresh_dynamo_store() -> DynamoStore {
    let suffix = unique("t");
    let tables = TableNames {
        api_keys: format!("ApiKeys-{suffix}"),
        usage_counters: format!("UsageCounters-{suffix}"),
    };
    let store = DynamoStore::new(dynamodb_client(), tables);
    store.ensure_tables().await.expect("the emulator must be reachable at METER_TEST_AWS_ENDPOINT");
    store
}

/// A fresh, empty bucket.
///
/// # Panics
/// When the emulator cannot be reached.
pub async fn fresh_bucket() -> String {
    let bucket = unique("meter-test");
    s3_client().create_bucket().bucket(&bucket).send().await.expect("the emulator must be reachable");
    bucket
}
