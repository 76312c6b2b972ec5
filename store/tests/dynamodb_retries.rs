//! What the DynamoDB adapter does when a write's answer is lost: DynamoDB answers 500 (or the
//! connection drops) after it applied the write. The emulator never does this, so the answers are
//! replayed. A resent `ADD` must neither count twice nor take its own earlier mark for a redelivery
//! and drop the usage unreported.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use chrono::{TimeZone, Utc};
use meter_model::{BatchDelta, BatchId, DayDelta, KeyId, MarkerSlot, Tally, UsageWriter};
use meter_store::{DynamoStore, TableNames};

/// DynamoDB as a list of answers (status, JSON body), given in order whatever is asked; counts the
/// requests it was sent.
#[derive(Debug, Clone, Default)]
struct Replay {
    answers: Arc<Mutex<VecDeque<(u16, String)>>>,
    sent: Arc<Mutex<usize>>,
}

impl Replay {
    fn sent(&self) -> usize {
        *self.sent.lock().unwrap()
    }
}

impl HttpConnector for Replay {
    fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
        *self.sent.lock().unwrap() += 1;
        let (status, body) = self.answers.lock().unwrap().pop_front().expect("more requests than answers");
        let mut answer = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body));
        answer.headers_mut().insert("content-type", "application/x-amz-json-1.0");
        HttpConnectorFuture::ready(Ok(answer))
    }
}

impl HttpClient for Replay {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

/// A store whose DynamoDB gives `answers` in order, configured as `load_aws_config` configures the
/// real one (the SDK's standard retries on).
fn store_answering(answers: &[(u16, &str)]) -> (DynamoStore, Replay) {
    let replay = Replay::default();
    replay.answers.lock().unwrap().extend(answers.iter().map(|(status, body)| (*status, (*body).to_owned())));
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
    let (store, replay) = store_answering(&[(500, SERVER_ERROR), (200, &marked)]);
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 14, 4, 0).unwrap();
    let report = store.apply_deliveries(std::slice::from_ref(&delivery), at).await.unwrap();
    assert_eq!(replay.sent(), 2, "sent twice, by the adapter");
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
    let (store, replay) = store_answering(&[(200, "{}"), (200, found), (500, SERVER_ERROR), (200, "{}")]);
    let at = Utc.with_ymd_and_hms(2026, 11, 30, 14, 4, 0).unwrap();
    let report = store.apply_deliveries(std::slice::from_ref(&delivery), at).await.unwrap();
    assert_eq!(replay.sent(), 3, "mark, key lookup, one day write");
    assert_eq!(report.key_days_written, 0);
    assert_eq!(report.not_applied, delivery.total());
}
