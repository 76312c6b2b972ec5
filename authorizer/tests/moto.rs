//! The authorizer against DynamoDB in moto: lookup by the id in the key (consistent GetItem) and by the
//! `hashedKey-index` GSI for keys of another format. Fails (does not skip) without the emulator.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap has failed

use meter_authorizer::{Authorizer, AuthorizerConfig, Decision, DenyReason};
use meter_model::time::parse_instant;
use meter_model::{ApiKey, ApiKeyRecord, Email, HashedKey, KeyId, KeyStore, NewKey, SystemClock};

fn record(id: KeyId, hashed_key: HashedKey) -> ApiKeyRecord {
    ApiKeyRecord::new(NewKey {
        id,
        hashed_key,
        user_email: Email::parse("ada@example.com").unwrap(),
        plan: None,
        name: None,
        created_at: parse_instant("2026-11-01T00:00:00Z").unwrap(),
    })
}

#[tokio::test]
async fn looks_up_by_id_and_by_the_hash_index() {
    let store = meter_testkit::fresh_dynamo_store().await;
    let ours = ApiKey::generate().unwrap();
    store.insert_key(&record(ours.id().clone(), ours.hashed())).await.unwrap();
    let imported = "legacy_live_0123456789abcdefXYZ";
    store.insert_key(&record(KeyId::parse("legacy-7").unwrap(), HashedKey::of(imported))).await.unwrap();
    let authorizer = Authorizer::new(store, SystemClock, AuthorizerConfig::default());

    let Decision::Allow(grant) = authorizer.decide(Some(ours.reveal())).await.unwrap() else { panic!() };
    assert_eq!(&grant.key_id, ours.id());
    let Decision::Allow(grant) = authorizer.decide(Some(imported)).await.unwrap() else { panic!() };
    assert_eq!(grant.key_id.as_str(), "legacy-7");
    assert_eq!(
        authorizer.decide(Some("legacy_live_0000000000000000000")).await.unwrap(),
        Decision::Deny(DenyReason::UnknownKey)
    );
}
