//! Test support for the emulator tests. `scripts/test` starts moto's server and sets
//! `METER_TEST_AWS_ENDPOINT`; without it these helpers panic with instructions, so an emulator test
//! fails rather than skips when the emulator is missing.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
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

/// The SDK configuration of every emulator client: its endpoint, a region, test credentials.
#[must_use]
pub fn sdk_config_for(endpoint: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "moto",
        )))
        .build()
}

/// A DynamoDB client for `endpoint`.
#[must_use]
pub fn dynamodb_client_for(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&sdk_config_for(endpoint))
}

/// A DynamoDB client for the emulator.
#[must_use]
pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    dynamodb_client_for(&endpoint())
}

/// An S3 client for the emulator (path-style addressing, as the project's own S3 client uses there).
#[must_use]
pub fn s3_client() -> aws_sdk_s3::Client {
    meter_store::s3::client(&sdk_config_for(&endpoint()))
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

/// An SNS topic with an SQS queue subscribed to it: (topic ARN, queue URL).
///
/// # Panics
/// When the emulator cannot be reached.
pub async fn topic_with_queue() -> (String, String) {
    let name = unique("revocations");
    let sns = aws_sdk_sns::Client::new(&sdk_config_for(&endpoint()));
    let sqs = sqs_client();
    let topic =
        sns.create_topic().name(&name).send().await.expect("create topic").topic_arn.unwrap_or_default();
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap_or_default();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes");
    let queue_arn = attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    sns.subscribe().topic_arn(&topic).protocol("sqs").endpoint(queue_arn).send().await.expect("subscribe");
    (topic, queue)
}

fn sqs_client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&sdk_config_for(&endpoint()))
}

/// Every message body waiting in a queue.
///
/// # Panics
/// When the emulator cannot be reached.
pub async fn receive_all(queue: &str) -> Vec<String> {
    let received = sqs_client()
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    received.messages().iter().filter_map(|m| m.body().map(str::to_owned)).collect()
}

/// Queues canned Athena results in the emulator (moto runs no SQL): each query started afterwards
/// takes the next one, and moto also writes it as CSV to the query's result location. `results` is
/// moto's shape: `[{"rows": [{"Data": [{"VarCharValue": "…"}, …]}, …], "column_info": […]}, …]`.
///
/// # Panics
/// When the emulator is missing or refuses the request.
pub async fn queue_athena_results(results: serde_json::Value) {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let body = serde_json::json!({"account_id": "123456789012", "region": "us-east-1", "results": results});
    let request = hyper_util::client::legacy::connect::HttpConnector::new();
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build(request);
    let uri = format!("{}/moto-api/static/athena/query-results", endpoint());
    let answer = client
        .request(
            hyper::Request::post(uri)
                .header("content-type", "application/json")
                .body(Full::new(bytes::Bytes::from(body.to_string())))
                .expect("a valid request"),
        )
        .await
        .expect("the emulator answers");
    assert_eq!(answer.status().as_u16(), 201, "moto refused the canned Athena results");
}

/// A signing key held in memory (HMAC-SHA-256), for tests of what KMS's HMAC key does on AWS.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    /// The key with this secret.
    #[must_use]
    pub fn new(secret: &[u8]) -> Self {
        Self(secret.to_vec())
    }

    fn mac(&self) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac as _;
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    }
}

impl meter_model::MacKey for HmacKey {
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, meter_model::StoreError> {
        use hmac::Mac as _;
        let mut mac = self.mac();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }

    async fn verify(&self, message: &[u8], signature: &[u8]) -> Result<bool, meter_model::StoreError> {
        use hmac::Mac as _;
        let mut mac = self.mac();
        mac.update(message);
        Ok(mac.verify_slice(signature).is_ok())
    }
}

/// A fresh KMS HMAC key (`HMAC_256`, `GENERATE_VERIFY_MAC`) in the emulator: its id.
///
/// # Panics
/// When the emulator cannot be reached.
pub async fn fresh_mac_key() -> String {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let kms = aws_sdk_kms::Client::new(&sdk_config_for(&endpoint()));
    let key = kms
        .create_key()
        .key_spec(KeySpec::Hmac256)
        .key_usage(KeyUsageType::GenerateVerifyMac)
        .send()
        .await
        .expect("the emulator must be reachable");
    key.key_metadata.expect("CreateKey answers the key").key_id
}
