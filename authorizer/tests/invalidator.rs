//! The invalidator's API Gateway calls, checked against a local HTTP endpoint that records them (moto
//! does not implement the flush calls): the right operation per API kind, retries on throttling, and a
//! clear error for an API or stage that does not exist.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use meter_authorizer::invalidate::{ApiGatewayFlusher, FlushError, flush_all, parse_targets};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A canned answer: status and `x-amzn-ErrorType` (empty for success).
type Answer = (u16, &'static str);

/// Records `METHOD path` of each request and answers from a script (then 202 Accepted).
async fn recording_endpoint(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (seen, script) = (Arc::clone(&recorded), Arc::clone(&script));
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Bodies of these calls are empty: the head is the whole request.
                    let Ok(n) = socket.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                    buffer.drain(..end + 4);
                    let request_line = head.lines().next().unwrap_or_default();
                    let mut parts = request_line.split(' ');
                    seen.lock().unwrap().push(format!(
                        "{} {}",
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or("")
                    ));
                    let (status, error_type) = script.lock().unwrap().pop_front().unwrap_or((202, ""));
                    let body = if error_type.is_empty() {
                        String::new()
                    } else {
                        format!(r#"{{"message":"{error_type}"}}"#)
                    };
                    let mut response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\n",
                        body.len()
                    );
                    if !error_type.is_empty() {
                        response.push_str(&format!("x-amzn-errortype: {error_type}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&body);
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, seen)
}

fn flusher(endpoint: &str) -> ApiGatewayFlusher {
    ApiGatewayFlusher::new(&meter_testkit::sdk_config_for(endpoint))
}

#[tokio::test]
async fn flushes_rest_and_resets_http_stages() {
    let (endpoint, seen) = recording_endpoint(vec![]).await;
    let targets = parse_targets("rest:a1b2c3d4e5/prod,http:x9y8z7w6v5/$default").unwrap();
    assert_eq!(flush_all(&flusher(&endpoint), &targets).await.unwrap(), 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "DELETE /restapis/a1b2c3d4e5/stages/prod/cache/authorizers",
            "DELETE /v2/apis/x9y8z7w6v5/stages/%24default/cache/authorizers",
        ]
    );
}

#[tokio::test]
async fn throttling_is_retried() {
    let (endpoint, seen) =
        recording_endpoint(vec![(429, "TooManyRequestsException"), (429, "TooManyRequestsException")]).await;
    let targets = parse_targets("rest:a1b2c3d4e5/prod").unwrap();
    assert_eq!(flush_all(&flusher(&endpoint), &targets).await.unwrap(), 1);
    assert!(seen.lock().unwrap().len() >= 3, "{:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn a_limit_or_a_conflict_with_a_stage_update_is_retried() {
    let (endpoint, seen) =
        recording_endpoint(vec![(409, "ConflictException"), (429, "LimitExceededException")]).await;
    let targets = parse_targets("rest:a1b2c3d4e5/prod").unwrap();
    assert_eq!(flush_all(&flusher(&endpoint), &targets).await.unwrap(), 1);
    assert!(seen.lock().unwrap().len() >= 3, "{:?}", seen.lock().unwrap());
}

#[tokio::test]
async fn a_missing_stage_is_a_clear_error_and_the_other_targets_are_still_flushed() {
    let (endpoint, seen) = recording_endpoint(vec![(404, "NotFoundException")]).await;
    let targets = parse_targets("rest:nope/prod,http:x9y8z7w6v5/live").unwrap();
    let err = flush_all(&flusher(&endpoint), &targets).await.unwrap_err();
    assert!(matches!(err, FlushError::NotFound(_)), "{err:?}");
    assert_eq!(err.to_string(), "rest:nope/prod: the API or the stage does not exist");
    assert_eq!(seen.lock().unwrap().len(), 2, "the second target was flushed anyway");
}
