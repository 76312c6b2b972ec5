//! Where the authoritative rollups are computed: on this machine from the archive's files (the
//! default; ARCHITECTURE.md has its measured rate and the largest day one Lambda takes), or by the
//! rollup SQL in an Athena workgroup, for archives beyond one machine. The drift correction after it
//! is the same either way ([`crate::reconcile_with`]).

use std::time::Duration;

use meter_archive::{Rollup, RollupBudget, RollupError, rollup_on, rollup_within};
use meter_lambda::env::{self, EnvError};
use meter_model::{Day, ObjectSource, QueryEngine};
use meter_store::{AthenaEngine, AthenaSettings};

/// Memory a local rollup takes per event of the busiest day it reads, measured from S3 in a month's
/// archive as the Lambda reads it (`scripts/bench-rollup` with `BENCH_S3=1`: ~190 bytes per row on
/// top of ~100 MiB, or 240 counting everything as per row; ARCHITECTURE.md, scale-out). The one figure
/// the deployed reconcile's memory and the `local`/`athena` switch follow from (infra/lib/sizing.ts
/// reads it from here).
pub const ROLLUP_BYTES_PER_ROW: u64 = 240;
/// What a local run holds besides the rows: the runtime, the SDK, the key directory, the parked usage
/// summed per key and day.
pub const ROLLUP_BASE_MIB: u64 = 100;
/// Headroom over the measured figure the deployed memory keeps.
pub const ROLLUP_HEADROOM: u64 = 2;
/// The reconcile function's memory with Athena computing the rollup: it holds the day items and the
/// parked usage only (infra/lib/sizing.ts's `ATHENA_RECONCILE_MEMORY_MIB`).
pub const ATHENA_RECONCILE_MEMORY_MIB: u64 = 1024;
/// The most memory a Lambda function can have.
pub const LAMBDA_MAX_MEMORY_MIB: u64 = 10_240;

/// The memory a reconcile function needs for a local rollup whose busiest day holds `events` (with
/// [`ROLLUP_HEADROOM`]), in MiB, rounded up to 64; `None` beyond one Lambda: use Athena.
#[must_use]
pub fn local_rollup_memory_mib(events: u64) -> Option<u64> {
    let need = (ROLLUP_BASE_MIB + (events * ROLLUP_BYTES_PER_ROW).div_ceil(1 << 20)) * ROLLUP_HEADROOM;
    let rounded = need.div_ceil(64) * 64;
    (rounded <= LAMBDA_MAX_MEMORY_MIB).then_some(rounded)
}

/// How long an Athena rollup may take by default: within a Lambda's 15 minutes, with time left for the
/// corrections.
pub const DEFAULT_ATHENA_TIMEOUT: Duration = Duration::from_secs(600);

/// The rollup's engine.
#[derive(Debug, Clone)]
pub enum RollupEngine<Q = AthenaEngine> {
    /// This machine reads the archive's files (`meter_archive::rollup`), refusing a day that does not
    /// fit `budget` (a Lambda's memory) before decoding it.
    Local {
        /// The memory it may use; `None` for none but the machine's.
        budget: Option<RollupBudget>,
    },
    /// A distributed engine runs `notebooks/sql/rollup.sql` over the archive's table.
    Query(Q),
}

impl<Q: QueryEngine> RollupEngine<Q> {
    /// The engine's name, as `--engine` and `METER_ROLLUP_ENGINE` spell it.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Query(_) => "athena",
        }
    }

    /// The rollups of `from..=to`, sorted by day then key.
    pub async fn rollup<A: ObjectSource>(
        &self,
        archive: &A,
        from: Day,
        to: Day,
    ) -> Result<Rollup, RollupError> {
        match self {
            Self::Local { budget } => rollup_within(archive, from, to, *budget, |_, _| {}).await,
            Self::Query(engine) => rollup_on(engine, from, to).await,
        }
    }
}

/// In a Lambda function, the memory it was given (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, set by the
/// runtime) as a local rollup's budget at the measured figure, so that a day it cannot fit is refused
/// with the advice to switch rather than ending the run out of memory.
fn lambda_budget() -> Result<Option<RollupBudget>, EnvError> {
    Ok(env::parsed::<u64>("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")?.map(|memory_mib| RollupBudget {
        memory_mib,
        bytes_per_event: ROLLUP_BYTES_PER_ROW,
        base_mib: ROLLUP_BASE_MIB,
    }))
}

impl RollupEngine {
    /// The engine a function's environment selects: `METER_ROLLUP_ENGINE` = `local` (default) or
    /// `athena`, which needs `METER_ATHENA_WORKGROUP` and `METER_ATHENA_DATABASE` and takes
    /// `METER_ATHENA_OUTPUT` (a result location for a workgroup without one) and
    /// `METER_ATHENA_TIMEOUT_SECONDS` (default 600).
    pub async fn from_env() -> Result<Self, EnvError> {
        match env::optional("METER_ROLLUP_ENGINE").as_deref().map(str::trim) {
            None | Some("local") => Ok(Self::Local { budget: lambda_budget()? }),
            Some("athena") => {
                let settings = AthenaSettings {
                    workgroup: env::required(
                        "METER_ATHENA_WORKGROUP",
                        "the Athena workgroup, e.g. meter-prod",
                    )?,
                    database: env::required("METER_ATHENA_DATABASE", "the Glue database, e.g. meter_prod")?,
                    output_location: env::optional("METER_ATHENA_OUTPUT"),
                    timeout: env::parsed("METER_ATHENA_TIMEOUT_SECONDS")?
                        .map_or(DEFAULT_ATHENA_TIMEOUT, Duration::from_secs),
                };
                Ok(Self::Query(AthenaEngine::new(settings).await))
            }
            Some(other) => Err(EnvError::Invalid {
                name: "METER_ROLLUP_ENGINE",
                value: other.to_owned(),
                problem: "use local or athena".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_follows_the_busiest_day_and_one_lambda_ends_near_21_million_events() {
        assert_eq!(local_rollup_memory_mib(4_000_000), Some(2048));
        assert_eq!(local_rollup_memory_mib(0), Some(256));
        let largest =
            (0..100_000_000u64).step_by(100_000).take_while(|e| local_rollup_memory_mib(*e).is_some()).last();
        assert_eq!(largest, Some(21_900_000));
        assert_eq!(
            local_rollup_memory_mib(99_000_000),
            None,
            "the large reference traffic's day needs Athena"
        );
    }
}
