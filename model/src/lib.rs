//! The domain of the meter: what a usage event is, how calls are counted, what an API key looks like,
//! how time is bucketed, what the tables hold, and the ports (traits) through which every stage reaches
//! storage. Nothing here does I/O, so every rule is testable on its own and shared by all stages.

pub mod batch;
pub mod counting;
pub mod drift;
pub mod items;
pub mod key;
pub mod ports;
pub mod time;
pub mod usage;

pub use batch::{ApplyReport, BatchDelta, BatchId, DayDelta};
pub use counting::Tally;
pub use drift::{CorrectionOutcome, DayCorrection, ReconcileRun, TallyDelta};
pub use items::{ApiKeyRecord, DayUsage, Email, FieldError, KeyStatus, NewKey, PlanName, UsageTotals};
pub use key::{ApiKey, HashedKey, KeyError, KeyId, PresentedKey};
pub use ports::{
    ArchiveWriter, CounterCorrector, KeyStore, Publisher, RejectedLine, Revocation, RevocationNotifier,
    StoreError, UsageReader, UsageWriter,
};
pub use time::{Clock, Day, ManualClock, Month, SystemClock};
pub use usage::{
    LineOutcome, RejectReason, UsageEvent, next_special, parse_escaped_line, parse_escaped_message,
    parse_line,
};
