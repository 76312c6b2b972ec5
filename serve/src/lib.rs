//! `meter serve`: the request path on a laptop. A local API Gateway (the key from the identity source,
//! its authorizer-result cache in front of the very authorizer the Lambda runs, its 401/403/500
//! answers), the example backend (`meter-example-api`) printing one usage line per request into a
//! local log group, and the delivery loop that hands each stream's new events to the realtime path and
//! the archive as CloudWatch Logs and Firehose would. A revocation made anywhere (`meter keys revoke`)
//! flushes the gateway's cache within a second, as the revocation topic's invalidator does on AWS.

pub mod delivery;
pub mod gateway;
pub mod latency;
pub mod load;
pub mod log_group;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use meter_authorizer::invalidate::{FlushTarget, flush_now_and_after_epoch_window};
use meter_authorizer::{Authorizer, AuthorizerConfig, quota_body, retry_after_seconds};
use meter_example_api::{Route, UsageLine};
use meter_lambda::RetryPolicy;
use meter_model::{Clock, CounterCorrector, KeyStore, SystemClock, UsageWriter};
use meter_realtime::buffer::Buffering;
use meter_realtime::counters::RealtimeCounters;
use meter_realtime::local::LocalRealtime;
use meter_store::ArchiveLocation;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::delivery::{Deliveries, DeliveryError};
use crate::gateway::{Admission, Gateway};
use crate::latency::Histogram;
use crate::log_group::LogGroup;
use crate::upstream::Upstream;

/// How often CloudWatch Logs delivers a stream's new events.
pub const DELIVERY_INTERVAL: Duration = Duration::from_secs(2);
/// How often the usage lines handlers printed are written to the log group's files: what a killed
/// process can lose, as it loses its unflushed standard output.
pub const LOG_WRITE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a client may take to send a request's headers before the connection is closed (a slow
/// client holds a connection, never the server).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a request's line and headers may take: API Gateway takes 10 KB of headers; a larger
/// request head is answered 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// How often the gateway looks at the revocation epoch: locally, a cheap read stands in for the
/// revocation topic's notice, which reaches the deployed invalidator within moments.
pub const EPOCH_INTERVAL: Duration = Duration::from_millis(250);

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The address to listen on (127.0.0.1 by default: this is a development gateway).
    pub address: SocketAddr,
    /// The header that carries the key (API Gateway's identity source).
    pub identity_header: String,
    /// The local log group's folder.
    pub logs_dir: PathBuf,
    /// Log streams (one per worker of the backend).
    pub streams: usize,
    /// The archive.
    pub archive: ArchiveLocation,
    /// How often streams are delivered.
    pub delivery_interval: Duration,
    /// Firehose's processor buffer.
    pub buffering: Buffering,
    /// Proxy to this API instead of answering with the example backend (`http://HOST:PORT[/PREFIX]`).
    pub upstream: Option<String>,
    /// How long a client may take to send its request's headers ([`HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// Where usage alerts are written, one EventBridge-shaped event a line (`METER_HOME/events/
    /// usage-alerts.jsonl`).
    pub alerts_file: PathBuf,
}

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not allowed.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The upstream URL cannot be used.
    #[error(transparent)]
    Upstream(#[from] upstream::UpstreamError),
    /// The identity header is not a header name.
    #[error("{0:?} is not an HTTP header name")]
    IdentityHeader(String),
    /// The log group cannot be opened.
    #[error("the local log group {dir}: {source}")]
    Logs {
        /// Its folder.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("the server: {0}")]
    Server(std::io::Error),
    /// The last delivery at shutdown failed: what was not delivered is delivered at the next start.
    #[error("the final delivery: {0}")]
    Delivery(#[from] DeliveryError),
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeSummary {
    /// Requests that reached the backend (each printed a usage line).
    pub requests: u64,
    /// Usage events delivered to the realtime path and the archive.
    pub events_delivered: u64,
    /// The gateway's added latency for requests allowed from its cache: median and 99th percentile,
    /// in microseconds (from the request's arrival at the handler to the backend).
    pub cached_allow_micros: Option<(u64, u64)>,
}

struct AppState<S, C> {
    gateway: Gateway<S, C>,
    clock: C,
    group: Arc<LogGroup>,
    identity: HeaderName,
    request_prefix: String,
    requests: AtomicU64,
    cached_allows: Histogram,
    upstream: Option<Upstream>,
}

impl<S, C> AppState<S, C> {
    /// A request id unique across runs: the run's random prefix and a counter.
    fn next_request_id(&self) -> String {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:012x}", self.request_prefix)
    }
}

/// A bound server, ready to run. Its clock (the system's unless told otherwise) stamps the usage
/// lines, ages the buffers and decides keys' grace periods.
pub struct Server<K, W, C = SystemClock> {
    listener: TcpListener,
    state: Arc<AppState<K, C>>,
    deliveries: Deliveries<W, C>,
    delivery_interval: Duration,
    header_read_timeout: Duration,
}

impl<K, W> Server<K, W>
where
    K: KeyStore + Send + Sync + 'static,
    W: UsageWriter + CounterCorrector + Send + Sync + 'static,
{
    /// Binds `config.address`, authorizing from `keys` and counting into `counters`; resumes each log
    /// stream where the last run settled it.
    pub async fn bind(config: &ServeConfig, keys: K, counters: W) -> Result<Self, ServeError> {
        Server::bind_with_clock(config, keys, counters, SystemClock).await
    }
}

impl<K, W, C> Server<K, W, C>
where
    K: KeyStore + Send + Sync + 'static,
    W: UsageWriter + CounterCorrector + Send + Sync + 'static,
    C: Clock + Clone + 'static,
{
    /// [`Server::bind`] on `clock` instead of the system's.
    pub async fn bind_with_clock(
        config: &ServeConfig,
        keys: K,
        counters: W,
        clock: C,
    ) -> Result<Self, ServeError> {
        let identity = HeaderName::try_from(config.identity_header.to_ascii_lowercase())
            .map_err(|_| ServeError::IdentityHeader(config.identity_header.clone()))?;
        let listener = TcpListener::bind(config.address)
            .await
            .map_err(|source| ServeError::Listen { address: config.address, source })?;
        let logs_error = |source| ServeError::Logs { dir: config.logs_dir.clone(), source };
        let group = Arc::new(
            LogGroup::open(&config.logs_dir, "/meter/local/api", config.streams).map_err(logs_error)?,
        );
        let realtime = LocalRealtime::new(
            RealtimeCounters::new(counters, clock.clone(), RetryPolicy::default()),
            config.buffering,
        );
        let deliveries =
            Deliveries::resume(group.clone(), realtime, config.archive.clone(), config.buffering)
                .await
                .map_err(logs_error)?
                .with_alerts_file(config.alerts_file.clone());
        let mut prefix = [0u8; 6];
        getrandom::fill(&mut prefix).map_err(|e| ServeError::Server(std::io::Error::other(e.to_string())))?;
        let state = Arc::new(AppState {
            gateway: Gateway::new(
                Authorizer::new(keys, clock.clone(), AuthorizerConfig::default()),
                clock.clone(),
            ),
            clock,
            group,
            identity,
            request_prefix: hex::encode(prefix),
            requests: AtomicU64::new(0),
            cached_allows: Histogram::default(),
            upstream: config.upstream.as_deref().map(Upstream::new).transpose()?,
        });
        // The epoch as of now, before any request: a revocation from here on is seen as a move.
        state.gateway.revoked_since_last_look().await;
        Ok(Self {
            listener,
            state,
            deliveries,
            delivery_interval: config.delivery_interval,
            header_read_timeout: config.header_read_timeout,
        })
    }

    /// The address it listens on (the port chosen when the configuration asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight, delivers and settles
    /// every usage line written, and returns what the run did.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<ServeSummary, ServeError> {
        let Self { listener, state, mut deliveries, delivery_interval, header_read_timeout } = self;
        let (stop, stopped) = watch::channel(false);
        let app = Router::new().fallback(handle::<K, C>).with_state(state.clone());
        let epoch_state = state.clone();
        let mut epoch_stopped = stopped.clone();
        let epoch = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EPOCH_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        if epoch_state.gateway.revoked_since_last_look().await {
                            // As the deployed invalidator does on the revocation notice.
                            let state = epoch_state.clone();
                            tokio::spawn(async move {
                                let _ = flush_now_and_after_epoch_window(&state.gateway, &[local_stage()]).await;
                            });
                        }
                    }
                    _ = epoch_stopped.changed() => break,
                }
            }
        });
        let writer_group = state.group.clone();
        let mut writer_stopped = stopped.clone();
        let writer = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(LOG_WRITE_INTERVAL);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        // A failed write keeps the lines in memory for the next one.
                        if let Err(err) = writer_group.write_pending() {
                            tracing::warn!(error = %err, "cannot write the log group; retrying");
                        }
                    }
                    _ = writer_stopped.changed() => break,
                }
            }
        });
        let mut delivery_stopped = stopped;
        let delivery_clock = state.clock.clone();
        let delivery = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(delivery_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        // A failed delivery moves no offset: it is tried again at the next tick.
                        if let Err(err) = deliveries.tick(delivery_clock.now()).await {
                            tracing::warn!(error = %meter_model::error_chain(&err), "delivery failed; retrying");
                        }
                        if let Err(err) = deliveries.refresh_parked(delivery_clock.now(), false).await {
                            tracing::warn!(error = %meter_model::error_chain(&err), "cannot refresh the parked usage in the key totals; retrying");
                        }
                    }
                    _ = delivery_stopped.changed() => break,
                }
            }
            let mut drained = deliveries.drain(delivery_clock.now()).await;
            if drained.is_ok() {
                drained = deliveries.refresh_parked(delivery_clock.now(), true).await;
            }
            drained.map(|()| deliveries.events)
        });
        let served = accept(listener, app, header_read_timeout, shutdown).await;
        let _ = stop.send(true);
        let _ = epoch.await;
        let _ = writer.await;
        let events_delivered =
            delivery.await.map_err(|e| ServeError::Server(std::io::Error::other(e.to_string())))??;
        served.map_err(ServeError::Server)?;
        let latency = &state.cached_allows;
        let cached_allow_micros = latency.quantile_micros(500).zip(latency.quantile_micros(990));
        Ok(ServeSummary {
            requests: state.requests.load(Ordering::Relaxed),
            events_delivered,
            cached_allow_micros,
        })
    }
}

/// Accepts connections until `shutdown`, then lets the requests in flight finish. Each connection is
/// HTTP/1.1 with a header-read timeout and a bound on the request head, which `axum::serve` does not
/// set.
async fn accept(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use tower::ServiceExt;

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept: keep serving the others.
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
            app.clone().oneshot(request.map(Body::new))
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that hangs up or stalls ends its own connection only.
            let _ = connection.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The one stage `meter serve` plays, as the invalidator names stages.
fn local_stage() -> FlushTarget {
    FlushTarget::Rest { api_id: "local".into(), stage: "serve".into() }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Every request: API Gateway's admission, then the backend and its usage line.
async fn handle<K: KeyStore + Send + Sync + 'static, C: Clock + Clone + 'static>(
    State(state): State<Arc<AppState<K, C>>>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let identity = request.headers().get(&state.identity).and_then(|value| value.to_str().ok());
    let (admission, cached) = state.gateway.admit(identity).await;
    match admission {
        Admission::Unauthorized => {
            json_response(StatusCode::UNAUTHORIZED, &json!({"message": "Unauthorized"}))
        }
        Admission::Forbidden => json_response(
            StatusCode::FORBIDDEN,
            &json!({"message": "User is not authorized to access this resource"}),
        ),
        Admission::AuthorizerFailed => {
            json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({"message": null}))
        }
        Admission::OverQuota(refusal) => {
            let mut response = json_response(StatusCode::TOO_MANY_REQUESTS, &quota_body(&refusal));
            let wait = retry_after_seconds(&refusal, state.clock.now());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
            response
        }
        Admission::Allowed(grant) => {
            if cached {
                state.cached_allows.record(started.elapsed());
            }
            let method = request.method().as_str().to_owned();
            let path = request.uri().path().to_owned();
            let request_id = state.next_request_id();
            let (response, status, should_count, resource) = match &state.upstream {
                Some(upstream) => {
                    let forwarded = upstream.forward(request).await;
                    (forwarded.response, forwarded.status, forwarded.should_count, path.as_str())
                }
                None => {
                    let route = Route::of(&method, &path);
                    let status =
                        StatusCode::from_u16(route.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let response = json_response(status, &route.body(&path));
                    (response, route.status(), route.should_count(), route.resource())
                }
            };
            let now = state.clock.now();
            let line = UsageLine {
                request_id: &request_id,
                key_id: grant.key_id.as_str(),
                at: now,
                status,
                should_count,
                method: &method,
                resource,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            state.group.append(now.timestamp_millis(), &line.render());
            let mut response = response;
            if let Ok(id) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-amzn-requestid", id);
            }
            response
        }
    }
}
