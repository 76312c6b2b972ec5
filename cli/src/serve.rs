//! `meter serve` and `meter load`: the local request path and a load generator for it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use meter_model::Clock;
use meter_realtime::buffer::Buffering;
use meter_serve::load::{self, LoadPlan};
use meter_serve::{DELIVERY_INTERVAL, ServeConfig, Server};
use meter_store::{AnyStore, ArchiveLocation, StoreConfig};

use crate::{LoadArgs, ServeArgs};

/// Serves until Ctrl-C, then delivers what is pending; returns the run's summary.
pub(crate) async fn serve(
    store: &StoreConfig,
    archive: ArchiveLocation,
    home: &Path,
    args: ServeArgs,
    clock: impl Clock + Clone + 'static,
) -> anyhow::Result<String> {
    let config = ServeConfig {
        address: SocketAddr::new(args.bind, args.port),
        identity_header: args.identity_header.clone(),
        logs_dir: home.join("logs").join("api"),
        streams: usize::from(args.streams),
        archive,
        delivery_interval: DELIVERY_INTERVAL,
        buffering: Buffering {
            max_age: chrono::Duration::seconds(i64::from(args.buffer_seconds)),
            ..Buffering::DEPLOYED
        },
        upstream: args.upstream.clone(),
        header_read_timeout: meter_serve::HEADER_READ_TIMEOUT,
        alerts_file: home.join("events").join("usage-alerts.jsonl"),
    };
    let open =
        || async { AnyStore::open(store).await.with_context(|| format!("cannot open the store {store}")) };
    let server = Server::bind_with_clock(&config, open().await?, open().await?, clock).await?;
    let address = server.local_addr()?;
    let backend = args.upstream.as_ref().map_or_else(
        || {
            "GET /v1/items/{id} 200 billable · /v1/ping 200 not counted · /v1/missing 404 · /v1/fail 500"
                .to_owned()
        },
        |url| format!("proxying to {url} (x-meter-should-count: false marks a success not billable)"),
    );
    println!(
        "meter serve: http://{address} (key header {}); usage lines in {}; Ctrl-C (or SIGTERM) to stop\n  {backend}",
        args.identity_header,
        config.logs_dir.display()
    );
    let summary = server
        .run(async {
            // Ctrl-C, or the SIGTERM a service manager sends: both deliver what is pending first.
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut terminate) => {
                        tokio::select! {
                            _ = tokio::signal::ctrl_c() => {}
                            _ = terminate.recv() => {}
                        }
                    }
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
        })
        .await?;
    let latency = summary.cached_allow_micros.map_or_else(
        || "no cached allows".to_owned(),
        |(p50, p99)| format!("gateway latency for cached allows p50 {p50} µs, p99 {p99} µs"),
    );
    Ok(format!(
        "stopped: {} requests, {} usage events delivered and settled; {latency}\n",
        summary.requests, summary.events_delivered
    ))
}

/// Drives a server and reports what came back.
pub(crate) async fn load(args: LoadArgs) -> anyhow::Result<String> {
    let authority = args
        .url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.contains('/'))
        .with_context(|| format!("{:?} is not a server URL like http://127.0.0.1:8080", args.url))?;
    let address = tokio::net::lookup_host(authority)
        .await
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .with_context(|| format!("{authority} resolves to no address"))?;
    let key = if args.key == "-" {
        crate::pipeline::read_input(Path::new("-"))?.trim().to_owned()
    } else {
        args.key
    };
    let plan = LoadPlan {
        address,
        path: args.path,
        header: args.identity_header,
        key,
        connections: usize::from(args.connections.max(1)),
        rate: (args.rate > 0).then_some(args.rate),
        duration: Duration::from_secs(args.seconds.max(1)),
    };
    let report = load::run(&plan).await;
    let p50 = report.latency.quantile_micros(500).unwrap_or(0);
    let p99 = report.latency.quantile_micros(990).unwrap_or(0);
    if args.json {
        let by_status: serde_json::Map<String, serde_json::Value> =
            report.by_status.iter().map(|(status, n)| (status.to_string(), (*n).into())).collect();
        return Ok(format!(
            "{}\n",
            serde_json::json!({"responses": report.responses(), "byStatus": by_status, "errors": report.errors,
                "seconds": report.elapsed.as_secs_f64(), "requestsPerSecond": report.throughput(),
                "p50Micros": p50, "p99Micros": p99})
        ));
    }
    let statuses: Vec<String> = report.by_status.iter().map(|(status, n)| format!("{status}: {n}")).collect();
    Ok(format!(
        "{} responses in {:.1} s ({} req/s) from {} connections; {}; {} errors; round trip p50 {p50} µs, p99 {p99} µs\n",
        report.responses(),
        report.elapsed.as_secs_f64(),
        report.throughput(),
        plan.connections,
        statuses.join(", "),
        report.errors
    ))
}
