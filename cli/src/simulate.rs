//! `meter simulate`'s flags; the simulator itself is `meter_sim::traffic`.

use meter_sim::traffic::{Faults, Rate};

/// Rate flags of `meter simulate`, each overriding the preset's.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultRates {
    /// Share of deliveries the realtime processor receives twice (e.g. 0.02).
    #[arg(long)]
    redeliver_rate: Option<Rate>,
    /// Share of deliveries lost before the realtime processor (archived all the same).
    #[arg(long)]
    lost_rate: Option<Rate>,
    /// Share of deliveries archived twice.
    #[arg(long)]
    archive_duplicate_rate: Option<Rate>,
    /// Share of events delivered after their day.
    #[arg(long)]
    late_rate: Option<Rate>,
    /// Share of usage lines that are malformed.
    #[arg(long)]
    malformed_rate: Option<Rate>,
    /// Share of calls made with unknown keys.
    #[arg(long)]
    unknown_key_rate: Option<Rate>,
    /// Share of keys revoked mid-month.
    #[arg(long)]
    revoked_key_rate: Option<Rate>,
}

impl FaultRates {
    /// Sets the rates given on the command line.
    pub fn apply(&self, faults: &mut Faults) {
        let pairs = [
            (self.redeliver_rate, &mut faults.redelivered),
            (self.lost_rate, &mut faults.lost),
            (self.archive_duplicate_rate, &mut faults.archived_twice),
            (self.late_rate, &mut faults.late),
            (self.malformed_rate, &mut faults.malformed),
            (self.unknown_key_rate, &mut faults.unknown_keys),
            (self.revoked_key_rate, &mut faults.revoked_keys),
        ];
        for (given, rate) in pairs {
            if let Some(given) = given {
                *rate = given;
            }
        }
    }
}
