//! `meter simulate`'s flags; the simulator itself is `meter_sim::traffic`.

use meter_sim::traffic::{Faults, Profile, Rate, Volume};

/// The traffic to simulate: a month of `events` over `keys` keys, or a reference profile's steady
/// rate for `hours` (by default a day of `small`, three hours of `medium`, one of `large`: each about
/// a million calls or more, enough to price them).
pub fn volume(
    events: u64,
    keys: u32,
    traffic: Option<&str>,
    hours: Option<rust_decimal::Decimal>,
) -> Result<(Volume, u32), String> {
    let Some(name) = traffic else {
        if hours.is_some() {
            return Err("--hours needs --traffic small|medium|large".into());
        }
        return Ok((Volume::Month { events, streams: 2 }, keys));
    };
    let profile = Profile::named(name)?;
    let hours = hours.unwrap_or_else(|| {
        rust_decimal::Decimal::from(match profile.name {
            "small" => 24,
            "medium" => 3,
            _ => 1,
        })
    });
    let minutes =
        rust_decimal::prelude::ToPrimitive::to_u32(&(hours * rust_decimal::Decimal::from(60)).round())
            .filter(|m| (1..=28 * 24 * 60).contains(m))
            .ok_or_else(|| format!("--hours {hours} is not between a minute and 28 days"))?;
    Ok((Volume::Steady { profile, minutes }, profile.keys))
}

/// Rate flags of `meter simulate`, each overriding the preset's.
#[derive(Debug, Clone, clap::Args)]
pub struct FaultRates {
    /// Share of deliveries that arrive twice (e.g. 0.02).
    #[arg(long)]
    redeliver_rate: Option<Rate>,
    /// Share of transformer invocations that find the counter store down (`meter demo`).
    #[arg(long)]
    store_down_rate: Option<Rate>,
    /// Share of transformer invocations Firehose runs twice (`meter demo`).
    #[arg(long)]
    invocation_retry_rate: Option<Rate>,
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
            (self.store_down_rate, &mut faults.counters_unavailable),
            (self.invocation_retry_rate, &mut faults.invocation_retried),
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
