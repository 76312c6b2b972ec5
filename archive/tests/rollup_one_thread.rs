//! The rollup on a pool of one thread: its jobs never wait for one another, so one worker runs them
//! all, and the counts are those of any other pool size. (A test binary of its own: the global pool's
//! size is fixed by the first use.)
#![allow(clippy::unwrap_used)]

use meter_archive::rollup;
use meter_model::{Day, Tally};
use meter_sim::archive::{ArchiveSpec, write_archive};
use meter_store::LocalDir;
use std::collections::BTreeMap;

#[tokio::test]
async fn a_pool_of_one_thread_counts_the_same() {
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global().unwrap();
    let first: Day = "2026-11-28".parse().unwrap();
    let spec = ArchiveSpec {
        duplicates_per_mille: 50,
        straddle_per_mille: 500,
        files_per_day: 5,
        ..ArchiveSpec::realistic(8_000, 30, first, 4, 11)
    };
    let dir = tempfile::tempdir().unwrap();
    let generated = write_archive(dir.path(), &spec).unwrap();
    let last: Day = "2026-12-01".parse().unwrap();
    let result = rollup(&LocalDir::new(dir.path()), first, last, |_, _| {}).await.unwrap();
    let counted: BTreeMap<(String, Day), Tally> =
        result.rows.iter().map(|r| ((r.key_id.clone(), r.day), r.tally)).collect();
    assert_eq!(counted, generated.truth);
    assert_eq!(rayon::current_num_threads(), 1);
}
