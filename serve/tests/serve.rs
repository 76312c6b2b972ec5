//! `meter serve` end to end on loopback: API Gateway's answers, the usage lines delivered and counted
//! exactly once across a restart, and a revocation reaching the gateway's cache.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use meter_model::{ApiKey, ApiKeyRecord, Email, KeyStore, NewKey, UsageReader};
use meter_realtime::buffer::Buffering;
use meter_serve::load::{self, LoadPlan};
use meter_serve::{ServeConfig, ServeSummary, Server};
use meter_store::ArchiveLocation;
use meter_store::sqlite::SqliteStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

fn config(home: &Path) -> ServeConfig {
    ServeConfig {
        address: "127.0.0.1:0".parse().unwrap(),
        identity_header: "x-api-key".into(),
        logs_dir: home.join("logs"),
        streams: 2,
        archive: ArchiveLocation::Local(home.join("archive")),
        delivery_interval: Duration::from_millis(100),
        buffering: Buffering { max_bytes: 3 << 20, max_age: chrono::Duration::milliseconds(300) },
    }
}

async fn create_key(store: &SqliteStore) -> ApiKey {
    let key = ApiKey::generate().unwrap();
    store
        .insert_key(&ApiKeyRecord::new(NewKey {
            id: key.id().clone(),
            hashed_key: key.hashed(),
            user_email: Email::parse("ada@example.com").unwrap(),
            plan: None,
            name: None,
            created_at: Utc::now(),
        }))
        .await
        .unwrap();
    key
}

/// One HTTP/1.1 request; the status code and the body.
async fn get(address: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let header = key.map(|k| format!("x-api-key: {k}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n{header}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

struct Running {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<ServeSummary>,
}

async fn start(home: &Path) -> Running {
    let db = home.join("meter.db");
    let server =
        Server::bind(&config(home), SqliteStore::open(&db).unwrap(), SqliteStore::open(&db).unwrap())
            .await
            .unwrap();
    let address = server.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel();
    let done = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    Running { address, stop, done }
}

async fn totals(store: &SqliteStore, key: &ApiKey) -> (u64, u64, u64) {
    let days = store.lifetime_usage(key.id()).await.unwrap();
    days.iter().fold((0, 0, 0), |(s, f, u), d| {
        (s + d.tally.successful_calls, f + d.tally.failed_calls, u + d.tally.usage_count)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_api_gateway_and_counts_each_billable_call_once_across_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&home.path().join("meter.db")).unwrap();
    let key = create_key(&store).await;

    let run = start(home.path()).await;
    assert_eq!(get(run.address, "/v1/items/1", None).await, (401, r#"{"message":"Unauthorized"}"#.into()));
    let unknown = ApiKey::generate().unwrap();
    assert_eq!(get(run.address, "/v1/items/1", Some(unknown.reveal())).await.0, 403);
    for path in ["/v1/items/1", "/v1/items/2", "/v1/missing", "/v1/fail", "/v1/ping"] {
        let (status, _) = get(run.address, path, Some(key.reveal())).await;
        assert_eq!(status, meter_example_api::Route::of("GET", path).status(), "{path}");
    }
    run.stop.send(()).unwrap();
    let first = run.done.await.unwrap();
    assert_eq!((first.requests, first.events_delivered), (5, 5));
    assert!(first.cached_allow_micros.is_some(), "four of the five were allowed from the cache");
    assert_eq!(totals(&store, &key).await, (2, 2, 5), "counted at shutdown: nothing pending is lost");

    // A second run resumes where the first settled: nothing is delivered twice.
    let run = start(home.path()).await;
    assert_eq!(get(run.address, "/v1/items/3", Some(key.reveal())).await.0, 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(totals(&store, &key).await, (3, 2, 6), "visible while serving, after the buffer's interval");
    run.stop.send(()).unwrap();
    let second = run.done.await.unwrap();
    assert_eq!((second.requests, second.events_delivered), (1, 1));
    assert_eq!(totals(&store, &key).await, (3, 2, 6));
    let archived: usize =
        walk(&home.path().join("archive")).iter().filter(|p| p.ends_with(".parquet")).count();
    assert!(archived >= 2, "the archive holds both runs' files ({archived})");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_within_the_revocation_bound_despite_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&home.path().join("meter.db")).unwrap();
    let key = create_key(&store).await;
    let run = start(home.path()).await;
    assert_eq!(get(run.address, "/v1/ping", Some(key.reveal())).await.0, 200, "allowed, and now cached");
    store.revoke_key(key.id(), Utc::now()).await.unwrap();
    let revoked = std::time::Instant::now();
    loop {
        let (status, body) = get(run.address, "/v1/ping", Some(key.reveal())).await;
        if status == 403 {
            assert_eq!(body, r#"{"message":"User is not authorized to access this resource"}"#);
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(3), "still {status} after {:?}", revoked.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.stop.send(()).unwrap();
    run.done.await.unwrap();
}

/// Load, bounded and local: many connections at a fixed rate for a fixed time; every billable call is
/// counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_every_billable_call_is_counted_exactly_once() {
    let home = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&home.path().join("meter.db")).unwrap();
    let key = create_key(&store).await;
    let run = start(home.path()).await;
    let plan = LoadPlan {
        address: run.address,
        path: "/v1/items/7".into(),
        header: "x-api-key".into(),
        key: key.reveal().to_owned(),
        connections: 32,
        rate: Some(2_000),
        duration: Duration::from_secs(2),
    };
    let report = load::run(&plan).await;
    assert_eq!(report.errors, 0);
    let answered = report.by_status.get(&200).copied().unwrap_or(0);
    assert_eq!(report.responses(), answered, "only 200s: {:?}", report.by_status);
    assert!(answered >= 3_000, "a fixed rate of 2,000 req/s for 2 s sent {answered}");
    run.stop.send(()).unwrap();
    let summary = run.done.await.unwrap();
    assert_eq!(summary.requests, answered);
    assert_eq!(summary.events_delivered, answered);
    assert_eq!(totals(&store, &key).await, (answered, 0, answered));
}
