//! Reports against the emulator: the archive and the reports in S3, the keys and counters in
//! DynamoDB, the finance topic in SNS. Fails (does not skip) without the emulator.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use meter_model::{ObjectSink, ObjectSource};
use meter_reports::lambda::{FunctionUrlRequest, answer_function_url};
use meter_reports::{PresignedLinks, ReportError, ReportOutcome, SignedLinks, deliver};
use meter_store::S3Prefix;
use meter_store::SnsNotifier;

/// A GET over plain HTTP (the emulator's links), returning the body.
fn download(url: &str) -> Vec<u8> {
    let rest = url.strip_prefix("http://").expect("the emulator serves plain HTTP");
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&response[..split]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let body = &response[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = body;
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16).unwrap();
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
            rest = &rest[line_end + 2 + size + 2..];
        }
    }
    body.to_vec()
}

/// A fresh bucket with November 2026 archived under `archive/` and closed, and its keys in DynamoDB.
async fn closed_november() -> (String, S3Prefix, meter_store::DynamoStore) {
    let bucket = meter_testkit::fresh_bucket().await;
    let s3 = meter_testkit::s3_client();
    let archive_dir = S3Prefix::new(s3.clone(), &bucket, "archive");
    november(&meter_archive::Archive::new(S3Prefix::new(s3.clone(), &bucket, "archive"))).await;
    let store = meter_testkit::fresh_dynamo_store().await;
    create_keys(&store).await;
    close_month(&archive_dir, month("2026-11")).await;
    (bucket, archive_dir, store)
}

#[tokio::test]
async fn issued_invoices_land_in_s3_once_and_finance_gets_links_that_download_them() {
    let (bucket, archive_dir, store) = closed_november().await;
    let s3 = meter_testkit::s3_client();

    // A reports location where a file of the month already exists: it is never overwritten.
    let poisoned = S3Prefix::new(s3.clone(), &bucket, "poisoned");
    poisoned.put("issued/month=2026-11/invoices.csv", b"someone else's".to_vec(), "text/csv").await.unwrap();
    let err = issue(&store, archive_dir.clone(), &poisoned, month("2026-11"), at(2026, 12, 2, 8), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ReportError::Mismatch { .. }), "{err}");
    assert_eq!(&poisoned.get("issued/month=2026-11/invoices.csv").await.unwrap()[..], b"someone else's");
    assert!(poisoned.get("issued/month=2026-11/manifest.json").await.is_err(), "not issued");

    let reports = S3Prefix::new(s3.clone(), &bucket, "reports");
    let issued = issue(&store, archive_dir.clone(), &reports, month("2026-11"), at(2026, 12, 2, 8), false)
        .await
        .unwrap();
    let listed = reports.list("issued/month=2026-11").await.unwrap();
    assert_eq!(listed.len(), 6, "{listed:?}");
    let again = issue(&store, archive_dir.clone(), &reports, month("2026-11"), at(2026, 12, 3, 8), false)
        .await
        .unwrap();
    assert!(matches!(again, ReportOutcome::AlreadyIssued { .. }));
    // S3's conditional put refuses a second write of an issued file.
    let second = reports.put_new("issued/month=2026-11/invoices.csv", b"x".to_vec(), "text/csv").await;
    assert!(matches!(second, Err(meter_model::StoreError::AlreadyExists { .. })), "{second:?}");

    let (topic, queue) = meter_testkit::topic_with_queue().await;
    let sns = meter_store::sns_client(&meter_testkit::sdk_config_for(&meter_testkit::endpoint()));
    let finance = SnsNotifier::new(sns, topic);
    let now = at(2026, 12, 2, 10);
    let presigned = PresignedLinks(&reports);
    let too_long = deliver(&presigned, &issued, &finance, Duration::from_secs(8 * 24 * 3600), now).await;
    assert!(too_long.unwrap_err().to_string().contains("and 168 hours"));
    deliver(&presigned, &issued, &finance, Duration::from_secs(3600), now).await.unwrap();
    let received = meter_testkit::receive_all(&queue).await;
    assert_eq!(received.len(), 1);
    let envelope: serde_json::Value = serde_json::from_str(&received[0]).unwrap();
    let message: serde_json::Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    assert_eq!(message["type"], "INVOICES_ISSUED");
    assert_eq!(message["period"], "2026-11");
    assert_eq!(message["totals"]["amount"], "49.01");
    let files = message["files"].as_array().unwrap();
    assert_eq!(files.len(), 6);
    for file in files {
        let url = file["url"].as_str().unwrap();
        assert!(url.contains("X-Amz-Signature=") && url.contains("X-Amz-Expires=3600"), "{url}");
        let body = download(url);
        match file["sha256"].as_str() {
            Some(sha) => assert_eq!(meter_reports::files::sha256_hex(&body), sha, "{}", file["name"]),
            None => assert_eq!(file["name"], "manifest.json"),
        }
    }
}

/// The function URL's request for `link` (under `base`), as Lambda hands it over.
fn function_url_request(base: &str, link: &str) -> FunctionUrlRequest {
    let (path, query) = link.strip_prefix(base).unwrap().split_once('?').unwrap();
    let params =
        query.split('&').map(|pair| pair.split_once('=').unwrap()).map(|(k, v)| (k.into(), v.into()));
    serde_json::from_value(serde_json::json!({
        "rawPath": path,
        "queryStringParameters": params.collect::<std::collections::BTreeMap<String, String>>(),
        "requestContext": {"http": {"method": "GET"}},
    }))
    .unwrap()
}

/// Clients as a Lambda has them after its role's credentials were renewed: other keys altogether.
fn renewed_config() -> aws_config::SdkConfig {
    meter_testkit::sdk_config_for(&meter_testkit::endpoint())
        .into_builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new("RENEWEDKEY", "renewed", None, None, "renewed"),
        ))
        .build()
}

#[tokio::test]
async fn signed_finance_links_work_for_their_72_hours_after_the_signing_credentials_are_gone() {
    let (bucket, archive_dir, store) = closed_november().await;
    let s3 = meter_testkit::s3_client();
    let reports = S3Prefix::new(s3.clone(), &bucket, "reports");
    let issued =
        issue(&store, archive_dir, &reports, month("2026-11"), at(2026, 12, 2, 8), false).await.unwrap();

    // The monthly job signs with the KMS HMAC key; finance gets the links on the topic.
    let key_id = meter_testkit::fresh_mac_key().await;
    let config = meter_testkit::sdk_config_for(&meter_testkit::endpoint());
    let base = "https://abc.lambda-url.us-east-1.on.aws";
    let links =
        SignedLinks::new(base, meter_store::KmsMacKey::new(meter_store::kms::client(&config), &key_id));
    let (topic, queue) = meter_testkit::topic_with_queue().await;
    let finance = SnsNotifier::new(meter_store::sns_client(&config), topic);
    let issued_at = at(2026, 12, 2, 10);
    let too_long = deliver(&links, &issued, &finance, Duration::from_secs(32 * 24 * 3600), issued_at).await;
    assert!(too_long.unwrap_err().to_string().contains("and 744 hours"));
    let sent = deliver(&links, &issued, &finance, Duration::from_secs(72 * 3600), issued_at).await.unwrap();
    assert!(sent.links_outlive_credentials);
    assert_eq!(sent.links_expire_at, "2026-12-05T10:00:00.000Z");
    let received = meter_testkit::receive_all(&queue).await;
    let envelope: serde_json::Value = serde_json::from_str(&received[0]).unwrap();
    let message: serde_json::Value = serde_json::from_str(envelope["Message"].as_str().unwrap()).unwrap();
    let files = message["files"].as_array().unwrap();
    assert_eq!(files.len(), 6);

    // 71 hours later, the report-links function runs with renewed credentials: the signing ones are
    // long expired. Each link still opens its file, through a link signed now with the new keys.
    let renewed = renewed_config();
    let function_reports = S3Prefix::new(meter_store::s3::client(&renewed), &bucket, "reports");
    let function_key = meter_store::KmsMacKey::new(meter_store::kms::client(&renewed), &key_id);
    let later = issued_at + chrono::Duration::hours(71);
    for file in files {
        let link = file["url"].as_str().unwrap();
        assert!(!link.contains("X-Amz-"), "a signed link carries no credential: {link}");
        let request = function_url_request(base, link);
        let answer = answer_function_url(&function_key, &function_reports, &request, later).await;
        assert_eq!(answer.status_code, 302, "{answer:?}");
        let location = &answer.headers["location"];
        assert!(location.contains("X-Amz-Credential=RENEWEDKEY"), "{location}");
        let body = download(location);
        match file["sha256"].as_str() {
            Some(sha) => assert_eq!(meter_reports::files::sha256_hex(&body), sha, "{}", file["name"]),
            None => assert_eq!(file["name"], "manifest.json"),
        }
    }

    // Refused: at its expiry, without its signature, with the signature of another file.
    let link = files[0]["url"].as_str().unwrap();
    let request = function_url_request(base, link);
    let expired = answer_function_url(
        &function_key,
        &function_reports,
        &request,
        issued_at + chrono::Duration::hours(72),
    )
    .await;
    assert_eq!(expired.status_code, 410, "{expired:?}");
    assert!(expired.body.contains("--resend-links"), "{}", expired.body);
    let mut unsigned = request.clone();
    unsigned.query_string_parameters.as_mut().unwrap().remove("signature");
    assert_eq!(
        answer_function_url(&function_key, &function_reports, &unsigned, later).await.status_code,
        403
    );
    let mut swapped = function_url_request(base, files[1]["url"].as_str().unwrap());
    swapped.query_string_parameters = request.query_string_parameters.clone();
    let refused = answer_function_url(&function_key, &function_reports, &swapped, later).await;
    assert_eq!(refused.status_code, 403, "{refused:?}");
    assert!(!refused.headers.contains_key("location"));
}
