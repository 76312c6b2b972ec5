//! A small month of known usage: keys in a store, events in an archive, the reconcile that closes it.

use chrono::{DateTime, Duration, TimeZone, Utc};
use meter_archive::Archive;
use meter_model::{
    ApiKeyRecord, ArchiveWriter, Day, Email, HashedKey, KeyId, KeyStore, ManualClock, Month, NewKey,
    PlanName, UsageEvent,
};
use meter_model::{ObjectSink, ObjectSource};
use meter_reports::{Pricing, ReportOutcome, ReportRequest, produce_report};

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
            dropped: meter_model::DroppedFields::NONE,
        })
        .collect()
}

pub(crate) async fn archive_events<S: meter_model::ObjectSink>(
    archive: &Archive<S>,
    name: &str,
    events: &[UsageEvent<'static>],
) {
    let day = Day::of(events[0].timestamp);
    archive.write_events(day, name, events).await.unwrap();
}

/// November 2026: ann (payg) 1,010 billable and 1 failed, one request repeated in a second file;
/// bob (pro) 5 billable; 3 calls of a key id nobody has.
pub(crate) async fn november<S: meter_model::ObjectSink>(archive: &Archive<S>) {
    let ann = events("ann", ANN, at(2026, 11, 3, 10), 1010, 200);
    archive_events(archive, "ann", &ann).await;
    archive_events(archive, "ann-retry", &ann[..1]).await;
    archive_events(archive, "ann-fail", &events("annf", ANN, at(2026, 11, 4, 10), 1, 500)).await;
    archive_events(archive, "bob", &events("bob", BOB, at(2026, 11, 30, 23), 5, 201)).await;
    archive_events(archive, "zzz", &events("zzz", "zzzz00000001", at(2026, 11, 5, 1), 3, 200)).await;
}

/// Does what the nightly reconcile does to close `month` for issuing: writes the rollups of its days
/// beside the archive. (Reports never depend on the reconcile stage; they meet in the archive.)
pub(crate) async fn close_month<A: ObjectSource + ObjectSink>(archive: &A, month: Month) {
    let (from, to) = (month.first_day(), month.last_day());
    let rollup = meter_archive::rollup(archive, from, to, |_, _| {}).await.unwrap();
    meter_archive::write_rollups(archive, &rollup.rows, from, to).await.unwrap();
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
