//! Lambda: the Firehose data transformation that turns CloudWatch Logs records into archive rows.
//!
//! Configuration (environment): `METER_ARCHIVE` (`s3://bucket/prefix`, where `rejects/` is written),
//! the standard AWS settings, `METER_LOG`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use meter_model::{Clock, SystemClock};
use meter_realtime::metrics::{MetricLine, Unit};
use meter_realtime::transform::{FirehoseEvent, FirehoseResponse, transform};
use meter_store::{AnyArchive, ArchiveLocation};

const FUNCTION: &str = "archive-transformer";

#[tokio::main]
async fn main() -> Result<(), Error> {
    meter_store::lambda::init_logging();
    let location: ArchiveLocation = std::env::var("METER_ARCHIVE")
        .map_err(|_| "METER_ARCHIVE is not set (e.g. s3://bucket/usage)")?
        .parse()?;
    let archive = AnyArchive::open(&location).await;
    lambda_runtime::run(service_fn(|event: LambdaEvent<FirehoseEvent>| {
        let archive = &archive;
        async move {
            let (response, stats): (FirehoseResponse, _) = transform(&event.payload, archive)
                .await
                .map_err(|err| Error::from(format!("{:#}", anyhow::Error::from(err))))?;
            let line = MetricLine::new(FUNCTION, SystemClock.now())
                .with("RecordsOk", stats.ok, Unit::Count)
                .with("RecordsDropped", stats.dropped, Unit::Count)
                .with("RecordsFailed", stats.failed, Unit::Count)
                .with("UsageEvents", stats.lines.usage_events, Unit::Count)
                .with("RejectedLines", stats.lines.rejected, Unit::Count);
            println!("{}", line.render());
            Ok::<_, Error>(response)
        }
    }))
    .await
}
