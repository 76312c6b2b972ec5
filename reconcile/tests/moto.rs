//! Reconcile against the emulator: the archive in S3, the counters in DynamoDB. Fails (does not
//! skip) without the emulator.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use meter_model::{ObjectSink, ObjectSource};
use meter_sim::archive::{Generated, write_archive};
use meter_store::S3Prefix;

/// Generates the scenario's archive and uploads it under a fresh bucket and prefix.
async fn archive_in_s3() -> (S3Prefix, Generated) {
    let dir = tempfile::tempdir().unwrap();
    let generated = write_archive(dir.path(), &spec()).unwrap();
    let bucket = meter_testkit::fresh_bucket().await;
    let archive = S3Prefix::new(meter_testkit::s3_client(), bucket, "prod/usage");
    upload(&archive, dir.path(), dir.path()).await;
    (archive, generated)
}

async fn upload(archive: &S3Prefix, root: &Path, dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            Box::pin(upload(archive, root, &path)).await;
        } else {
            let relative = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
            archive
                .put(&relative, std::fs::read(&path).unwrap(), "application/vnd.apache.parquet")
                .await
                .unwrap();
        }
    }
}

#[tokio::test]
async fn drift_in_dynamodb_is_corrected_from_an_s3_archive_and_a_second_run_changes_nothing() {
    let (archive, generated) = archive_in_s3().await;
    assert!(archive.list("year=2026/month=11/day=29").await.unwrap().len() >= 3);
    let store = meter_testkit::fresh_dynamo_store().await;
    create_keys(&store, &spec()).await;
    Box::pin(drift_is_corrected_exactly(&store, &archive, &generated)).await;
}

/// A local rollup's memory check reads the S3 files' footers with ranged GETs: a folder beyond the
/// budget is refused, and within it the rollup is the one without a budget.
#[tokio::test]
async fn the_memory_check_reads_s3_footers_alone() {
    let (archive, _) = archive_in_s3().await;
    let file = archive.list("year=2026/month=11/day=29").await.unwrap().remove(0);
    let whole = archive.get(&file).await.unwrap();
    assert_eq!(archive.get_tail(&file, 8).await.unwrap(), whole.slice(whole.len() - 8..));
    assert_eq!(
        archive.get_tail(&file, 1 << 30).await.unwrap(),
        whole,
        "a file shorter than asked: all of it"
    );
    let (from, to) = ("2026-11-29".parse().unwrap(), "2026-11-29".parse().unwrap());
    let tight = meter_archive::RollupBudget { memory_mib: 100, bytes_per_event: 1 << 20, base_mib: 10 };
    let err = meter_archive::rollup_within(&archive, from, to, Some(tight), |_, _| {}).await.unwrap_err();
    assert!(matches!(err, meter_archive::RollupError::TooLarge { .. }), "{err:?}");
    let roomy = meter_archive::RollupBudget { memory_mib: 1024, bytes_per_event: 240, base_mib: 100 };
    let within = meter_archive::rollup_within(&archive, from, to, Some(roomy), |_, _| {}).await.unwrap();
    let without = meter_archive::rollup(&archive, from, to, |_, _| {}).await.unwrap();
    assert_eq!(within.rows, without.rows);
}

#[tokio::test]
async fn one_reconcile_run_at_a_time_on_dynamodb() {
    let (archive, _) = archive_in_s3().await;
    let store = meter_testkit::fresh_dynamo_store().await;
    create_keys(&store, &spec()).await;
    one_reconcile_run_at_a_time(&store, &archive).await;
}

#[tokio::test]
async fn folded_parked_calls_keep_their_last_used_on_dynamodb() {
    let store = meter_testkit::fresh_dynamo_store().await;
    let archive = S3Prefix::new(meter_testkit::s3_client(), meter_testkit::fresh_bucket().await, "usage");
    folded_parked_calls_keep_their_last_used(&store, &archive).await;
}

#[tokio::test]
async fn a_run_that_dies_before_clearing_counts_each_parked_call_once_on_dynamodb() {
    let store = meter_testkit::fresh_dynamo_store().await;
    let archive = S3Prefix::new(meter_testkit::s3_client(), meter_testkit::fresh_bucket().await, "usage");
    a_run_that_dies_before_clearing_counts_each_parked_call_once(&store, &archive).await;
}

#[tokio::test]
async fn dynamodb_corrections_are_conditional_on_what_was_read() {
    let (archive, generated) = archive_in_s3().await;
    let store = meter_testkit::fresh_dynamo_store().await;
    create_keys(&store, &spec()).await;
    racing_realtime_writes_leave_totals_consistent(&store, &archive, &generated).await;
}
