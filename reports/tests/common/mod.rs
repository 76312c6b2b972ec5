//! A small month of known usage: keys in a store, events in an archive, the reconcile that closes it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_model::{
    ApiKeyRecord, ArchiveWriter, CounterCorrector, Day, Email, HashedKey, KeyId, KeyStore, ManualClock,
    Month, NewKey, PlanName, StoreError, UsageEvent,
};
use meter_reconcile::{ReconcileOptions, reconcile};
use meter_reports::{Pricing, ReportOutcome, ReportRequest, produce_report};
use meter_store::archive::Archive;
use meter_store::archive::{ObjectSink, ObjectSource};

pub(crate) const PRICING: &str = include_str!("../../pricing.example.toml");
pub(crate) const ANN: &str = "aaaa00000001";
pub(crate) const BOB: &str = "bbbb00000001";

pub(crate) fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

pub(crate) fn month(text: &str) -> Month {
    text.parse().unwrap()
}

pub(crate) async fn create_keys<S: KeyStore>(store: &S) {
    for (id, email, plan) in [(ANN, "ann@example.com", None), (BOB, "bob@example.com", Some("pro"))] {
        let record = ApiKeyRecord::new(NewKey {
            id: KeyId::parse(id).unwrap(),
            hashed_key: HashedKey::of(id),
            user_email: Email::parse(email).unwrap(),
            plan: plan.map(|p| PlanName::parse(p).unwrap()),
            name: None,
            created_at: at(2026, 10, 1, 0),
        });
        store.insert_key(&record).await.unwrap();
    }
}

/// `count` events of `key` from `start`, one a second, request ids `prefix-N`.
pub(crate) fn events(
    prefix: &str,
    key: &'static str,
    start: DateTime<Utc>,
    count: u32,
    status: u16,
) -> Vec<UsageEvent<'static>> {
    (0..count)
        .map(|n| UsageEvent {
            request_id: format!("{prefix}-{n}").into(),
            key_id: key.into(),
            timestamp: start + Duration::seconds(i64::from(n)),
            status_code: status,
            should_count: true,
            method: Some("GET".into()),
            resource: None,
            latency_ms: None,
        })
        .collect()
}

pub(crate) async fn archive_events<S: meter_store::archive::ObjectSink>(
    archive: &Archive<S>,
    name: &str,
    events: &[UsageEvent<'static>],
) {
    let day = Day::of(events[0].timestamp);
    archive.write_events(day, name, events).await.unwrap();
}

/// November 2026: ann (payg) 1,010 billable and 1 failed, one request repeated in a second file;
/// bob (pro) 5 billable; 3 calls of a key id nobody has.
pub(crate) async fn november<S: meter_store::archive::ObjectSink>(archive: &Archive<S>) {
    let ann = events("ann", ANN, at(2026, 11, 3, 10), 1010, 200);
    archive_events(archive, "ann", &ann).await;
    archive_events(archive, "ann-retry", &ann[..1]).await;
    archive_events(archive, "ann-fail", &events("annf", ANN, at(2026, 11, 4, 10), 1, 500)).await;
    archive_events(archive, "bob", &events("bob", BOB, at(2026, 11, 30, 23), 5, 201)).await;
    archive_events(archive, "zzz", &events("zzz", "zzzz00000001", at(2026, 11, 5, 1), 3, 200)).await;
}

/// Runs the nightly reconcile over `month`, which closes it for issuing.
pub(crate) async fn reconcile_month<S, A>(store: &S, archive: &A, month: Month, now: DateTime<Utc>)
where
    S: CounterCorrector + KeyStore,
    A: ObjectSource + ObjectSink,
{
    let options = ReconcileOptions {
        from: month.first_day(),
        to: month.last_day(),
        dry_run: false,
        alert_threshold: None,
    };
    reconcile(store, archive, &None::<NoAlerts>, &ManualClock::new(now), &options, |_, _| {}).await.unwrap();
}

/// A publisher for runs that alert nobody.
pub(crate) struct NoAlerts;

impl meter_model::Publisher for NoAlerts {
    async fn publish_message(&self, _subject: &str, _message: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

pub(crate) async fn issue<S, A, R>(
    store: &S,
    archive: A,
    reports: &R,
    month: Month,
    now: DateTime<Utc>,
    draft: bool,
) -> Result<ReportOutcome, meter_reports::ReportError>
where
    S: KeyStore,
    A: ObjectSource,
    R: ObjectSource + ObjectSink,
{
    let pricing = Pricing::parse(PRICING).unwrap();
    let usage = meter_reports::ArchiveUsage::new(archive);
    let request = ReportRequest { month, draft, adjust_months: 3 };
    produce_report(&usage, store, reports, &pricing, PRICING, &ManualClock::new(now), &request).await
}
