//! The realtime Lambda function, configured from its environment: the archive transformer (Firehose
//! data transformation), which also keeps the realtime counters.

use meter_lambda::RetryPolicy;
use meter_lambda::env::{self, ConfigError};
use meter_lambda::runtime::Failure;
use meter_model::{Clock, SystemClock};
use meter_store::{AnySink, AnyStore, ArchiveLocation, SnsNotifier};

use crate::RealtimeCounters;
use crate::transform::{FirehoseEvent, FirehoseResponse, transform_before};

/// What the transformer keeps of its invocation's time for answering once the counters are given up:
/// serializing at most 6 MB and handing it to the runtime take milliseconds.
pub const ANSWER_RESERVE: std::time::Duration = std::time::Duration::from_secs(5);

/// The archive transformer, which also keeps the realtime counters: `METER_ARCHIVE`
/// (`s3://bucket/prefix`, where `rejects/` is written) and `METER_STORE` (e.g.
/// `dynamodb:keys=ApiKeys,counters=UsageCounters`), and optionally `METER_USAGE_ALERT_TOPIC` (the SNS
/// topic usage alerts are published on).
pub struct ArchiveTransformerFunction {
    rejects: meter_archive::Archive<AnySink>,
    counters: RealtimeCounters<AnyStore, SystemClock>,
    /// Where usage alerts go (`METER_USAGE_ALERT_TOPIC`); without it each is logged only.
    usage_alerts: Option<SnsNotifier>,
}

impl ArchiveTransformerFunction {
    /// The name in its metrics.
    pub const NAME: &str = "archive-transformer";

    /// Reads the configuration.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let location: ArchiveLocation =
            env::required("METER_ARCHIVE", "the archive, e.g. s3://bucket/usage")?.parse()?;
        let store = AnyStore::from_env().await?;
        let usage_alerts = match env::optional("METER_USAGE_ALERT_TOPIC") {
            Some(topic) => Some(SnsNotifier::for_topic(topic).await),
            None => None,
        };
        Ok(Self {
            rejects: meter_archive::Archive::new(AnySink::open(&location).await),
            counters: RealtimeCounters::new(store, SystemClock, RetryPolicy::default()),
            usage_alerts,
        })
    }

    /// One Firehose invocation: every record answered, rejects kept, the counters updated (given up
    /// [`ANSWER_RESERVE`] before `deadline`, Lambda's), one metric line printed. Fails (and Firehose
    /// retries) only when rejects cannot be kept.
    pub async fn handle(
        &self,
        event: FirehoseEvent,
        deadline: tokio::time::Instant,
    ) -> Result<FirehoseResponse, Failure> {
        let counters_deadline = deadline.checked_sub(ANSWER_RESERVE).unwrap_or(deadline);
        let (response, stats) = transform_before(&event, &self.rejects, &self.counters, counters_deadline)
            .await
            .map_err(|err| Failure::new(&err, err.is_transient()))?;
        println!("{}", stats.metrics(Self::NAME, SystemClock.now()).render());
        crate::alerts::announce(&stats.counters.apply.alerts, &self.usage_alerts).await;
        Ok(response)
    }
}
