//! The store contract against DynamoDB, served by moto's emulator. `scripts/test` starts it and sets
//! `METER_TEST_AWS_ENDPOINT`; without it these tests fail rather than skip, so a run that lost its
//! emulator cannot pass silently.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

#[macro_use]
mod contract;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use meter_model::time::format_instant;
use meter_model::{DayUsage, KeyStore, StoreError};
use meter_store::{DynamoStore, TableNames};

use meter_testkit::{dynamodb_client as client, dynamodb_client_for as client_for};

/// Fresh tables per test, so tests run in parallel against one emulator.
async fn make() -> DynamoStore {
    meter_testkit::fresh_dynamo_store().await
}

async fn seed(store: &DynamoStore, day: DayUsage) {
    let mut item = HashMap::from([
        ("keyId".to_owned(), AttributeValue::S(day.key_id.to_string())),
        ("day".to_owned(), AttributeValue::S(day.day.to_string())),
        ("successfulCalls".to_owned(), AttributeValue::N(day.tally.successful_calls.to_string())),
        ("failedCalls".to_owned(), AttributeValue::N(day.tally.failed_calls.to_string())),
        ("usageCount".to_owned(), AttributeValue::N(day.tally.usage_count.to_string())),
    ]);
    if let Some(at) = day.last_used {
        item.insert("lastUsed".to_owned(), AttributeValue::S(format_instant(at)));
    }
    if let Some(at) = day.reconciled_at {
        item.insert("reconciledAt".to_owned(), AttributeValue::S(format_instant(at)));
    }
    client().put_item().table_name(&store.tables().usage_counters).set_item(Some(item)).send().await.unwrap();
}

contract_suite!(make, seed);

#[tokio::test]
async fn ensure_tables_is_idempotent_and_sets_up_the_index_and_ttl() {
    let store = make().await;
    assert!(store.ensure_tables().await.unwrap().is_empty(), "second run creates nothing");
    let client = client();
    let keys = client.describe_table().table_name(&store.tables().api_keys).send().await.unwrap();
    let indexes = keys.table().unwrap().global_secondary_indexes();
    assert_eq!(indexes.len(), 1);
    assert_eq!(indexes[0].index_name(), Some(meter_store::dynamodb::HASHED_KEY_INDEX));
    let ttl = client.describe_time_to_live().table_name(&store.tables().usage_counters).send().await.unwrap();
    assert_eq!(
        ttl.time_to_live_description().unwrap().attribute_name(),
        Some(meter_store::dynamodb::TTL_ATTRIBUTE)
    );
}

#[tokio::test]
async fn a_missing_table_says_how_to_create_it() {
    let store = DynamoStore::new(
        client(),
        TableNames { api_keys: "NoSuchKeysTable".into(), usage_counters: "NoSuchCounters".into() },
    );
    let err = store.list_keys().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("meter store init"), "{err}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable() {
    // Port 9 (discard) on loopback is closed here: the connection is refused at once.
    let store = DynamoStore::new(client_for("http://127.0.0.1:9"), TableNames::default());
    let err = store.revocation_epoch().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("AWS_ENDPOINT_URL"), "{err}");
}

#[tokio::test]
async fn a_buffer_cut_short_after_its_markers_reports_exactly_what_it_did_not_apply() {
    use meter_model::{Tally, UsageReader, UsageWriter};
    let store = make().await;
    let records: Vec<_> = (0..30).map(|i| contract::new_record(&format!("u{i}@example.com"), None)).collect();
    for record in &records {
        store.insert_key(record).await.unwrap();
    }
    let deliveries: Vec<_> = records
        .chunks(3)
        .enumerate()
        .map(|(i, keys)| {
            let deltas =
                keys.iter().map(|r| contract::delta(&r.id, "2026-11-10T10:00:00Z", 200, true, 3)).collect();
            contract::batch_of(u8::try_from(i).unwrap() + 100, deltas)
        })
        .collect();
    // The function dies after five of its thirty counter writes (as a timed-out invocation would).
    let failing = store.clone().with_write_limit(5);
    let report = failing.apply_deliveries(&deliveries, contract::at("2026-11-10T10:00:05Z")).await.unwrap();
    assert_eq!(report.deliveries_applied, 10, "every delivery was marked");
    assert_eq!(report.key_days_written, 5);
    assert_eq!(report.not_applied, Tally { successful_calls: 75, failed_calls: 0, usage_count: 75 });
    assert!(report.failure.as_deref().is_some_and(|f| f.contains("fault drill")), "{report:?}");
    let mut counted = 0;
    for r in &records {
        counted +=
            store.lifetime_usage(&r.id).await.unwrap().iter().map(|d| d.tally.usage_count).sum::<u64>();
    }
    assert_eq!(counted, 15, "what was written, and nothing else");
    // A retried invocation finds every delivery marked: nothing is counted twice; reconcile restores
    // the 75 calls from the archive.
    let retry = store.apply_deliveries(&deliveries, contract::at("2026-11-10T10:01:00Z")).await.unwrap();
    assert_eq!((retry.deliveries_applied, retry.deliveries_already_applied), (0, 10));
}

#[tokio::test]
async fn a_store_that_cannot_mark_anything_fails_so_the_whole_buffer_can_be_retried() {
    use meter_model::UsageWriter;
    let store = DynamoStore::new(
        client(),
        TableNames { api_keys: "NoSuchKeysTable".into(), usage_counters: "NoSuchCounters".into() },
    );
    let record = contract::new_record("ada@example.com", None);
    let batch =
        contract::batch_of(9, vec![contract::delta(&record.id, "2026-11-10T10:00:00Z", 200, true, 1)]);
    let err = store.apply_deliveries(&[batch], contract::at("2026-11-10T10:00:05Z")).await.unwrap_err();
    assert!(err.is_transient() && err.to_string().contains("meter store init"), "{err}");
}

#[tokio::test]
async fn delivery_markers_are_sets_per_slot_that_expire_by_ttl() {
    use meter_model::UsageWriter;
    let store = make().await;
    let record = contract::new_record("ada@example.com", None);
    store.insert_key(&record).await.unwrap();
    let deliveries: Vec<_> = (0..3)
        .map(|i| {
            contract::batch_of(
                20 + i,
                vec![contract::delta(&record.id, "2026-11-10T10:00:00Z", 200, true, 1)],
            )
        })
        .collect();
    store.apply_deliveries(&deliveries, contract::at("2026-11-10T10:00:05Z")).await.unwrap();
    let markers = client()
        .scan()
        .table_name(&store.tables().usage_counters)
        .filter_expression("begins_with(keyId, :p)")
        .expression_attribute_values(":p", AttributeValue::S("#delivered#".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(markers.items().len(), 1, "one item for the slot's three deliveries");
    assert_eq!(markers.items()[0]["keyId"], AttributeValue::S("#delivered#2026-11-10T10:00#00".into()));
    assert!(matches!(&markers.items()[0]["ids"], AttributeValue::Ns(ids) if ids.len() == 3));
    let expires: i64 = match &markers.items()[0]["expiresAt"] {
        AttributeValue::N(n) => n.parse().unwrap(),
        other => panic!("{other:?}"),
    };
    let ttl = expires - contract::at("2026-11-10T10:00:05Z").timestamp();
    assert!(ttl >= 24 * 3600, "markers outlive CloudWatch's retries: {ttl}s");
}

/// Which operation each call of a client was, and on which table.
#[derive(Debug, Default, Clone)]
struct Operations(std::sync::Arc<std::sync::Mutex<Vec<(&'static str, String)>>>);

impl aws_sdk_dynamodb::config::Intercept for Operations {
    fn name(&self) -> &'static str {
        "operations"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        use aws_sdk_dynamodb::operation::{query::QueryInput, scan::ScanInput};
        let input = context.input();
        let seen = if let Some(scan) = input.downcast_ref::<ScanInput>() {
            ("Scan", scan.table_name().unwrap_or_default().to_owned())
        } else if let Some(query) = input.downcast_ref::<QueryInput>() {
            ("Query", query.table_name().unwrap_or_default().to_owned())
        } else {
            ("other", String::new())
        };
        self.0.lock().unwrap().push(seen);
        Ok(())
    }
}

/// Reconcile's read of a range never scans the counters table, whose history grows every day: one
/// Query per key reads the range's days only.
#[tokio::test]
async fn day_items_query_each_key_for_the_range_and_never_scan_the_history() {
    let store = make().await;
    let keys: Vec<_> = (0..3).map(|i| contract::new_record(&format!("k{i}@example.com"), None)).collect();
    for key in &keys {
        store.insert_key(key).await.unwrap();
        let mut day: meter_model::Day = "2026-09-01".parse().unwrap();
        for _ in 0..90 {
            seed(&store, contract::day_item(&key.id, &day.to_string(), 1)).await;
            day = day.succ();
        }
    }
    let operations = Operations::default();
    let config =
        aws_sdk_dynamodb::config::Builder::from(&meter_testkit::sdk_config_for(&meter_testkit::endpoint()))
            .interceptor(operations.clone())
            .build();
    let watched = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(config), store.tables().clone());
    let (from, to) = ("2026-11-27".parse().unwrap(), "2026-11-29".parse().unwrap());
    let items = meter_model::CounterCorrector::day_items(&watched, from, to).await.unwrap();
    assert_eq!(items.len(), 9, "three days of three keys");
    assert!(items.iter().all(|item| item.day >= from && item.day <= to));
    let calls = operations.0.lock().unwrap().clone();
    let counters = &store.tables().usage_counters;
    assert!(!calls.iter().any(|(op, table)| *op == "Scan" && table == counters), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|(op, table)| *op == "Query" && table == counters).count(),
        3,
        "{calls:?}"
    );
}

/// A key item keeps its folds (`p#<day>`, CONTRACTS.md §2) only while a parked entry may still need
/// them: the parked refresh removes those older than the parked items' lifetime, measured from the
/// newest fold any key holds.
#[tokio::test]
async fn the_parked_refresh_removes_folds_no_parked_entry_can_need() {
    let store = make().await;
    let record = contract::new_record("ada@example.com", None);
    store.insert_key(&record).await.unwrap();
    let fold = |day: &str, until: &str| (format!("p#{day}"), AttributeValue::S(until.to_owned()));
    let (old, recent) =
        (fold("2026-10-01", "2026-10-02T07:00:00.000Z"), fold("2026-11-29", "2026-11-30T07:00:00.000Z"));
    client()
        .update_item()
        .table_name(&store.tables().api_keys)
        .key("id", AttributeValue::S(record.id.to_string()))
        .update_expression("SET #old = :old, #recent = :recent")
        .expression_attribute_names("#old", &old.0)
        .expression_attribute_names("#recent", &recent.0)
        .expression_attribute_values(":old", old.1)
        .expression_attribute_values(":recent", recent.1)
        .send()
        .await
        .unwrap();
    meter_model::CounterCorrector::refresh_parked_totals(&store).await.unwrap();
    let item = client()
        .get_item()
        .table_name(&store.tables().api_keys)
        .key("id", AttributeValue::S(record.id.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!item.contains_key(&old.0), "58 days older than the newest fold: removed");
    assert!(item.contains_key(&recent.0), "the newest fold stays");
    assert_eq!(
        store.get_key(&record.id).await.unwrap().unwrap().id,
        record.id,
        "the key is otherwise intact"
    );
}
