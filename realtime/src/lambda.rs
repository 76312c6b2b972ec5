//! The two realtime Lambda functions, configured from their environment: the usage processor
//! (CloudWatch Logs subscription) and the archive transformer (Firehose data transformation).

use meter_model::{Clock, SystemClock};
use meter_store::env::{self, ConfigError};
use meter_store::lambda::Failure;
use meter_store::{AnySink, AnyStore, ArchiveLocation, RetryPolicy};
use serde_json::value::RawValue;

use crate::UsageProcessor;
use crate::transform::{FirehoseEvent, FirehoseResponse, transform};

/// The usage processor: `METER_STORE` (e.g. `dynamodb:keys=ApiKeys,counters=UsageCounters`).
pub struct UsageProcessorFunction {
    processor: UsageProcessor<AnyStore, SystemClock>,
}

impl UsageProcessorFunction {
    /// The name in its metrics.
    pub const NAME: &str = "usage-processor";

    /// Reads the configuration and opens the store.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let store = AnyStore::from_env().await?;
        Ok(Self { processor: UsageProcessor::new(store, SystemClock, RetryPolicy::default()) })
    }

    /// One delivery: counters updated exactly once, one metric line printed. An undecodable payload
    /// is logged and not retried (redelivering it cannot help; Firehose keeps the same data).
    pub async fn handle(&self, event: Box<RawValue>) -> Result<(), Failure> {
        match self.processor.process_event(event.get().as_bytes()).await {
            Ok(report) => {
                println!("{}", report.metrics(Self::NAME, SystemClock.now()).render());
                Ok(())
            }
            Err(err) if !err.is_retryable() => {
                tracing::warn!(error = %meter_model::error_chain(&err), "dropping undecodable payload");
                Ok(())
            }
            Err(err) => Err(Failure::retryable(&err)),
        }
    }
}

/// The archive transformer: `METER_ARCHIVE` (`s3://bucket/prefix`, where `rejects/` is written).
pub struct ArchiveTransformerFunction {
    rejects: meter_archive::Archive<AnySink>,
}

impl ArchiveTransformerFunction {
    /// The name in its metrics.
    pub const NAME: &str = "archive-transformer";

    /// Reads the configuration.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let location: ArchiveLocation =
            env::required("METER_ARCHIVE", "the archive, e.g. s3://bucket/usage")?.parse()?;
        Ok(Self { rejects: meter_archive::Archive::new(AnySink::open(&location).await) })
    }

    /// One Firehose invocation: every record answered, rejects kept, one metric line printed. Fails
    /// (and Firehose retries) only when rejects cannot be kept.
    pub async fn handle(&self, event: FirehoseEvent) -> Result<FirehoseResponse, Failure> {
        let (response, stats) =
            transform(&event, &self.rejects).await.map_err(|err| Failure::new(&err, err.is_transient()))?;
        println!("{}", stats.metrics(Self::NAME, SystemClock.now()).render());
        Ok(response)
    }
}
