//! What the DynamoDB adapter does when a write's answer is lost: DynamoDB answers 500 (or the
//! connection drops) after it applied the write. The emulator never does this, so the answers are
//! replayed. A resent `ADD` must neither count twice nor take its own earlier mark for a redelivery
//! and drop the usage unreported.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use chrono::{TimeZone, Utc};
use meter_model::{BatchDelta, BatchId, DayDelta, KeyId, MarkerSlot, Tally, UsageWriter};
use meter_store::{DynamoStore, TableNames};

fn answer(status: u16, body: &str) -> http::Response<SdkBody> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .body(SdkBody::from(body.to_owned()))
        .unwrap()
}

fn request() -> http::Request<SdkBody> {
    http::Request::builder().uri("https://dynamodb.us-east-1.amazonaws.com/").body(SdkBody::empty()).unwrap()
}

/// A store whose DynamoDB gives `answers` in order, configured as `load_aws_config` configures the
/// real one (the SDK's standard retries on).
fn store_answering(answers: Vec<http::Response<SdkBody>>) -> (DynamoStore, StaticReplayClient) {
    let replay =
        StaticReplayClient::new(answers.into_iter().map(|a| ReplayEvent::new(request(), a)).collect());
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::standard().with_max_attempts(3))
        .http_client(replay.clone())
        .build();
    (DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), TableNames::default()), replay)
}

fn delivery() -> BatchDelta {
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 14, 3, 7).unwrap();
    let tally = Tally { successful_calls: 2, failed_calls: 0, usage_count: 3 };
    BatchDelta::new(
        BatchId::from_digest(b"one delivery"),
        MarkerSlot::default(),
        [DayDelta {
            key_id: KeyId::parse("0123456789ab").unwrap(),
            day: "2026-11-30".parse().unwrap(),
            tally,
            last_used: at,
        }],
    )
}

const SERVER_ERROR: &str =
    r#"{"__type":"com.amazon.coral.service#InternalServerError","message":"internal"}"#;

/// The marker write's first answer is a 500 although it landed; its resend finds the delivery's own
/// mark. The delivery's usage is reported as not applied (reconcile restores it), never taken for a
/// redelivery and dropped in silence.
#[tokio::test]
async fn a_marker_write_resent_after_a_lost_answer_reports_what_it_finds_marked() {
    let delivery = delivery();
    let marked = format!(r#"{{"Attributes":{{"ids":{{"NS":["{}"]}}}}}}"#, delivery.batch_id().short_digest());
    let (store, replay) = store_answering(vec![answer(500, SERVER_ERROR), answer(200, &marked)]);
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 14, 4, 0).unwrap();
    let report = store.apply_deliveries(std::slice::from_ref(&delivery), at).await.unwrap();
    assert_eq!(replay.actual_requests().count(), 2, "sent twice, by the adapter");
    assert_eq!(report.deliveries_already_applied, 0, "not taken for a redelivery");
    assert_eq!(report.not_applied, delivery.total(), "reported, for reconcile to restore");
    assert!(report.failure.as_deref().unwrap().contains("may have landed"), "{:?}", report.failure);
}

/// A day item's `ADD` answered 500 is not sent again: if it landed, a resend would add twice. Its
/// usage is reported as not applied.
#[tokio::test]
async fn a_day_write_whose_answer_is_lost_is_not_sent_again() {
    let delivery = delivery();
    let found = r#"{"Responses":{"ApiKeys":[{"id":{"S":"0123456789ab"}}]},"UnprocessedKeys":{}}"#;
    let (store, replay) = store_answering(vec![
        answer(200, "{}"),
        answer(200, found),
        answer(500, SERVER_ERROR),
        answer(200, "{}"),
    ]);
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 14, 4, 0).unwrap();
    let report = store.apply_deliveries(std::slice::from_ref(&delivery), at).await.unwrap();
    assert_eq!(replay.actual_requests().count(), 3, "mark, key lookup, one day write");
    assert_eq!(report.day_items_written, 0);
    assert_eq!(report.not_applied, delivery.total());
}
