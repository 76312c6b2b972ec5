//! The domain of the meter: what a usage event is, how calls are counted, what an API key looks like,
//! how time is bucketed, what the tables hold, and the ports (traits) through which every stage reaches
//! storage. Nothing here does I/O, so every rule is testable on its own and shared by all stages.

/// Values that travel as their text in JSON (days, months, e-mail addresses, plan names): written with
/// `Display`, read with `FromStr`, so a value read back is checked like one typed in.
macro_rules! serde_as_text {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod alerts;
pub mod batch;
pub mod counting;
pub mod drift;
pub mod items;
pub mod key;
pub mod ledger;
pub mod ports;
pub mod quota;
pub mod time;
pub mod usage;

pub use batch::{ApplyReport, BatchDelta, BatchId, DayDelta, MarkerSlot, ParkedUsage};
pub use counting::Tally;
pub use drift::{CorrectionOutcome, DayCorrection, ParkedRefresh, ReconcileRun, RunLease, TallyDelta};
pub use items::{
    ApiKeyRecord, DayUsage, Email, FieldError, KeyChange, KeyStatus, KeyTerms, NewKey, PlanName, UsageTotals,
};
pub use key::{ApiKey, HashedKey, KeyError, KeyId, PresentedKey};
pub use ports::{
    ArchiveWriter, CounterCorrector, GraceEndNotifier, KeyStore, MacKey, ObjectSink, ObjectSource, Publisher,
    QueryEngine, QueryRows, QuotaLedger, RejectedLine, Revocation, RevocationNotifier, StoreError,
    UsageReader, UsageWriter,
};
pub use time::{Clock, Day, ManualClock, Month, ShiftedClock, SystemClock};

/// An error and its sources, joined by `: `: how errors are logged and reported, whole, everywhere.
#[must_use]
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
pub use usage::{DroppedFields, LineOutcome, RejectReason, UsageEvent, UsageFields};
