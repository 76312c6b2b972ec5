//! `meter keys …`: create (the key is shown once), list, show, revoke.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use meter_model::time::format_instant;
use meter_model::{
    ApiKey, ApiKeyRecord, Clock, CounterCorrector, KeyId, KeyStore, NewKey, Revocation, RevocationNotifier,
    StoreError,
};
use serde::Serialize;

use crate::{CreateKey, JsonFlag, UsageError, to_json};

/// Ids are 60 random bits; a clash is astronomically unlikely, but a retry costs nothing.
const CREATE_ATTEMPTS: usize = 3;

pub(crate) async fn create(
    store: &impl KeyStore,
    clock: &impl Clock,
    args: CreateKey,
) -> anyhow::Result<String> {
    // A plan the pricing lacks would stop the month's invoices later: refuse it now. The plan's quota
    // travels with the key (ARCHITECTURE.md, "Plan quotas and usage alerts").
    let mut quota = None;
    if let Some(path) = &args.pricing {
        let (pricing, _) = crate::report::load_pricing(path)?;
        match pricing.plan(args.plan.as_ref().map(|p| p.as_str())) {
            Ok(plan) => quota.clone_from(&plan.quota),
            Err(err) => return Err(UsageError(format!("{err} ({})", path.display())).into()),
        }
    }
    let mut attempts = 0;
    let (key, record) = loop {
        attempts += 1;
        let key = ApiKey::generate().context("cannot generate a key")?;
        let mut record = ApiKeyRecord::new(NewKey {
            id: key.id().clone(),
            hashed_key: key.hashed(),
            user_email: args.email.clone(),
            plan: args.plan.clone(),
            name: args.name.clone(),
            created_at: clock.now(),
        });
        record.quota.clone_from(&quota);
        match store.insert_key(&record).await {
            Ok(()) => break (key, record),
            Err(StoreError::AlreadyExists { .. }) if attempts < CREATE_ATTEMPTS => continue,
            Err(err) => return Err(err).context("cannot store the new key"),
        }
    };
    tracing::info!(key_id = %record.id, plan = ?record.plan.as_ref().map(|p| p.as_str()), "key created");
    if args.json.json {
        #[derive(Serialize)]
        struct Created<'a> {
            id: &'a str,
            key: &'a str,
        }
        return to_json(&Created { id: record.id.as_str(), key: key.reveal() });
    }
    let plan = record.plan.as_ref().map_or("default", |p| p.as_str());
    Ok(format!(
        "Created key {id} for {email} (plan: {plan}).\n\n    {secret}\n\n\
         This is the only time the key is shown: store it now. Only its SHA-256 hash is kept.\n",
        id = record.id,
        email = record.user_email,
        secret = key.reveal(),
    ))
}

pub(crate) async fn list(
    store: &impl KeyStore,
    clock: &impl Clock,
    flag: JsonFlag,
) -> anyhow::Result<String> {
    let records = store.list_keys().await.context("cannot list keys")?;
    if flag.json {
        return to_json(&records);
    }
    if records.is_empty() {
        return Ok("No keys yet. Create one with `meter keys create --email EMAIL`.\n".to_owned());
    }
    let mut out = format!(
        "{:<14} {:<8} {:<30} {:<12} {:>14} {:<24}\n",
        "ID", "STATUS", "EMAIL", "PLAN", "BILLABLE", "LAST USED"
    );
    let now = clock.now();
    for r in &records {
        let _ = writeln!(
            out,
            "{:<14} {:<8} {:<30} {:<12} {:>14} {:<24}",
            r.id,
            status_label(r, now),
            r.user_email,
            r.plan.as_ref().map_or("-", |p| p.as_str()),
            r.totals.successful_calls,
            r.last_used.map_or_else(|| "never".to_owned(), format_instant),
        );
    }
    Ok(out)
}

/// `active`, `revoked`, `rotated` (in its grace period) or `expired` (past it).
fn status_label(record: &ApiKeyRecord, now: chrono::DateTime<chrono::Utc>) -> &'static str {
    match (record.status, record.grace_ends_at) {
        (meter_model::KeyStatus::Revoked, _) => "revoked",
        (_, Some(end)) if end <= now => "expired",
        (_, Some(_)) => "rotated",
        (_, None) => "active",
    }
}

pub(crate) async fn show(
    store: &impl KeyStore,
    clock: &impl Clock,
    id: &KeyId,
    flag: JsonFlag,
) -> anyhow::Result<String> {
    let record = find(store, id).await?;
    if flag.json {
        return to_json(&record);
    }
    let optional = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let mut extra = String::new();
    if let Some(end) = record.grace_ends_at {
        let _ = writeln!(extra, "grace ends       {}", format_instant(end));
    }
    if !record.imported.is_zero() {
        let _ = writeln!(
            extra,
            "imported calls   {} (billable {}, failed {}; counted before meter, part of the totals)",
            record.imported.tally.usage_count,
            record.imported.tally.successful_calls,
            record.imported.tally.failed_calls
        );
    }
    if let Some(quota) = &record.quota {
        let alerts = if quota.alerts.is_empty() {
            String::new()
        } else {
            format!(
                ", alerts at {}%",
                quota.alerts.iter().map(u16::to_string).collect::<Vec<_>>().join("%, ")
            )
        };
        let _ = writeln!(
            extra,
            "quota            {} billable calls a month, {}{alerts}",
            quota.calls, quota.mode
        );
    }
    if record.is_quota_refused_at(clock.now()) {
        let resets = meter_model::quota::resets_at(meter_model::Month::of(clock.now()));
        let _ = writeln!(
            extra,
            "refused          the customer's quota is reached; refused until {}",
            format_instant(resets)
        );
    }
    for terms in &record.previous_terms {
        let _ = writeln!(
            extra,
            "until {}  {} on plan {}",
            format_instant(terms.until),
            terms.user_email,
            terms.plan.as_ref().map_or("(default)", |p| p.as_str())
        );
    }
    Ok(format!(
        "id               {id}\n\
         status           {status}\n\
         email            {email}\n\
         plan             {plan}\n\
         name             {name}\n\
         created          {created}\n\
         revoked          {revoked}\n\
         last used        {last_used}\n\
         billable calls   {successful}\n\
         failed calls     {failed}\n\
         all calls        {usage}\n{extra}",
        id = record.id,
        status = status_label(&record, clock.now()),
        email = record.user_email,
        plan = optional(record.plan.map(|p| p.to_string())),
        name = optional(record.name),
        created = format_instant(record.created_at),
        revoked = optional(record.revoked_at.map(format_instant)),
        last_used = optional(record.last_used.map(format_instant)),
        successful = record.totals.successful_calls,
        failed = record.totals.failed_calls,
        usage = record.totals.usage_count,
    ))
}

/// Revokes a key and publishes the notice that flushes API Gateway's authorizer cache. Every
/// revocation (`keys revoke`, an import's, a rotation without grace) goes through here, so none leaves
/// the key in that cache.
pub(crate) async fn revoke_and_announce(
    store: &impl KeyStore,
    id: &KeyId,
    at: DateTime<Utc>,
    notifier: Option<&impl RevocationNotifier>,
) -> anyhow::Result<Revocation> {
    let revocation = match store.revoke_key(id, at).await {
        Ok(revocation) => revocation,
        Err(StoreError::NotFound { .. }) => bail!(no_such_key(id)),
        Err(err) => return Err(err).with_context(|| format!("cannot revoke key {id}")),
    };
    tracing::info!(key_id = %id, epoch = revocation.epoch, "key revoked");
    if let Some(notifier) = notifier {
        notifier.notify_revoked(&revocation).await.with_context(|| {
            format!(
                "key {id} is revoked (warm authorizers refuse it within a second), but the notice that flushes \
                 API Gateway's authorizer cache was not published; run `meter keys revoke {id}` again"
            )
        })?;
    }
    Ok(revocation)
}

pub(crate) async fn revoke(
    store: &impl KeyStore,
    clock: &impl Clock,
    id: &KeyId,
    notifier: Option<&impl RevocationNotifier>,
) -> anyhow::Result<String> {
    let revocation = revoke_and_announce(store, id, clock.now(), notifier).await?;
    let when =
        revocation.record.revoked_at.map_or_else(String::new, |at| format!(" at {}", format_instant(at)));
    let mut out = if revocation.was_already_revoked {
        format!("Key {id} was already revoked{when}; the revocation epoch stays {}.\n", revocation.epoch)
    } else {
        format!(
            "Revoked key {id}{when} (revocation epoch {}). Warm authorizers refuse it within about a second; \
             usage it made before still counts.\n",
            revocation.epoch
        )
    };
    if notifier.is_some() {
        out.push_str(
            "Revocation notice published to SNS: API Gateway's authorizer caches are being flushed.\n",
        );
    }
    Ok(out)
}

pub(crate) async fn find(store: &impl KeyStore, id: &KeyId) -> anyhow::Result<ApiKeyRecord> {
    store.get_key(id).await.with_context(|| format!("cannot read key {id}"))?.with_context(|| no_such_key(id))
}

fn no_such_key(id: &KeyId) -> String {
    format!("no key with id {id} in this store; `meter keys list` shows the keys")
}

/// `meter keys refresh-parked`: the parked usage brought into the keys' totals.
pub(crate) async fn refresh_parked(store: &impl CounterCorrector, flag: JsonFlag) -> anyhow::Result<String> {
    let refresh = meter_reconcile::refresh_parked(store).await.context("cannot refresh the parked usage")?;
    if flag.json {
        return to_json(&refresh);
    }
    Ok(format!(
        "read {} parked items: {} keys have parked usage; the totals of {} keys moved\n",
        refresh.parked_items, refresh.keys_parked, refresh.keys_moved
    ))
}

/// `meter keys recount`: every key's totals recounted from its day items.
pub(crate) async fn recount(
    store: &(impl CounterCorrector + KeyStore),
    flag: JsonFlag,
) -> anyhow::Result<String> {
    let recount = meter_reconcile::recount_keys(store).await.context("cannot recount the key totals")?;
    if flag.json {
        return to_json(&recount);
    }
    Ok(format!(
        "recounted the totals of {} keys from their day items; then the parked usage moved the totals of {} keys\n",
        recount.keys_recounted, recount.parked.keys_moved
    ))
}
