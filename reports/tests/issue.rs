//! Issuing reports on the embedded store and local folders: golden files, write-once, adjustments.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use meter_archive::Archive;
use meter_reports::invoice_id;
use meter_reports::{ReportError, ReportOutcome};
use meter_store::LocalDir;
use meter_store::SqliteStore;

struct World {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    archive: Archive<LocalDir>,
    archive_dir: LocalDir,
    reports: LocalDir,
    reports_root: std::path::PathBuf,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_memory().unwrap();
    create_keys(&store).await;
    let archive = Archive::new(LocalDir::new(dir.path().join("archive")));
    november(&archive).await;
    let reports_root = dir.path().join("reports");
    World {
        archive_dir: LocalDir::new(dir.path().join("archive")),
        reports: LocalDir::new(&reports_root),
        reports_root,
        store,
        archive,
        _dir: dir,
    }
}

fn read(world: &World, path: &str) -> String {
    std::fs::read_to_string(world.reports_root.join(path)).unwrap()
}

#[tokio::test]
async fn an_issued_month_has_exactly_the_expected_invoices_and_is_written_once() {
    let w = world().await;
    let nov = month("2026-11");
    // Before the month is over, or before its last day is reconciled, only a draft is possible.
    let err = issue(&w.store, w.archive_dir.clone(), &w.reports, nov, at(2026, 11, 20, 0), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ReportError::NotClosed { .. }) && err.to_string().contains("not over"), "{err}");
    let err =
        issue(&w.store, w.archive_dir.clone(), &w.reports, nov, at(2026, 12, 2, 7), false).await.unwrap_err();
    assert!(err.to_string().contains("meter reconcile --from 2026-11-30"), "{err}");
    let draft =
        issue(&w.store, w.archive_dir.clone(), &w.reports, nov, at(2026, 11, 20, 0), true).await.unwrap();
    assert_eq!(draft.folder(), "draft/month=2026-11");

    close_month(&w.archive_dir, nov).await;
    let issued =
        issue(&w.store, w.archive_dir.clone(), &w.reports, nov, at(2026, 12, 2, 8), false).await.unwrap();
    assert!(matches!(issued, ReportOutcome::Written { .. }));
    let (ann, bob) = (invoice_id(nov, "ann@example.com", "payg"), invoice_id(nov, "bob@example.com", "pro"));
    assert_eq!(
        read(&w, "issued/month=2026-11/invoices.csv"),
        format!(
            "invoice_id,period,customer_email,plan,successful_calls,failed_calls,usage_count,keys,amount,currency\n\
             {ann},2026-11,ann@example.com,payg,1010,1,1011,1,0.01,USD\n\
             {bob},2026-11,bob@example.com,pro,5,0,5,1,49.00,USD\n"
        )
    );
    let lines = read(&w, "issued/month=2026-11/invoice_lines.csv");
    assert!(
        lines.contains(&format!("{ann},3,tier_1,\"calls 1001 to 1000000 at 0.50 per 1,000\",,10,0.50,0.01")),
        "{lines}"
    );
    assert!(lines.contains(&format!("{ann},5,key_usage,")), "{lines}");
    let manifest = issued.manifest();
    assert_eq!(manifest.totals.amount.to_string(), "49.01");
    assert_eq!(manifest.totals.unattributed_usage_count, 3);
    assert_eq!(manifest.files.len(), 5);
    assert_eq!(manifest.files[0].rows, 2);
    for file in &manifest.files {
        let bytes = std::fs::read(w.reports_root.join("issued/month=2026-11").join(&file.name)).unwrap();
        assert_eq!(meter_reports::files::sha256_hex(&bytes), file.sha256, "{}", file.name);
    }

    // Issuing again verifies and changes nothing, even with a different clock.
    let before = std::fs::read(w.reports_root.join("issued/month=2026-11/manifest.json")).unwrap();
    let again =
        issue(&w.store, w.archive_dir.clone(), &w.reports, nov, at(2027, 3, 1, 0), false).await.unwrap();
    assert!(matches!(again, ReportOutcome::AlreadyIssued { .. }));
    assert_eq!(std::fs::read(w.reports_root.join("issued/month=2026-11/manifest.json")).unwrap(), before);

    // A file changed behind the manifest's back is found, not rewritten.
    let csv = w.reports_root.join("issued/month=2026-11/invoices.csv");
    std::fs::write(&csv, "tampered").unwrap();
    let err =
        issue(&w.store, w.archive_dir.clone(), &w.reports, nov, at(2027, 3, 1, 0), false).await.unwrap_err();
    assert!(matches!(err, ReportError::Mismatch { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "tampered");
}

#[tokio::test]
async fn a_late_event_after_issue_is_one_adjustment_on_the_next_invoice() {
    let w = world().await;
    let (nov, dec, jan) = (month("2026-11"), month("2026-12"), month("2027-01"));
    close_month(&w.archive_dir, nov).await;
    issue(&w.store, w.archive_dir.clone(), &w.reports, nov, at(2026, 12, 2, 8), false).await.unwrap();

    // 20 billable calls of November arrive late: 1,030 billable in all, 30 × 0.0005 = 0.015 → 0.02.
    archive_events(&w.archive, "ann-late", &events("late", ANN, at(2026, 11, 29, 12), 20, 200)).await;
    close_month(&w.archive_dir, dec).await;
    let december =
        issue(&w.store, w.archive_dir.clone(), &w.reports, dec, at(2027, 1, 2, 8), false).await.unwrap();
    let adjustments = &december.manifest().adjustments;
    assert_eq!(adjustments.len(), 1, "{adjustments:?}");
    assert_eq!(adjustments[0].successful_calls_delta, 20);
    assert_eq!(adjustments[0].amount_delta.to_string(), "0.01");
    assert_eq!(adjustments[0].invoice_id, invoice_id(nov, "ann@example.com", "payg"));
    let ann_dec = invoice_id(dec, "ann@example.com", "payg");
    let invoices = read(&w, "issued/month=2026-12/invoices.csv");
    assert!(
        invoices.contains(&format!("{ann_dec},2026-12,ann@example.com,payg,0,0,0,1,0.01,USD")),
        "{invoices}"
    );
    assert!(read(&w, "issued/month=2026-12/invoice_lines.csv").contains("adjustment for 2026-11"));

    // Exactly once: January carries no adjustment for November.
    close_month(&w.archive_dir, jan).await;
    let january =
        issue(&w.store, w.archive_dir.clone(), &w.reports, jan, at(2027, 2, 2, 8), false).await.unwrap();
    assert!(january.manifest().adjustments.is_empty(), "{:?}", january.manifest().adjustments);
}
