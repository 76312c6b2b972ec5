//! `meter keys import | update | rotate`: bringing keys in from another system, changing a key's
//! customer, plan or name, and rotating a key with a grace period. Never a plain key stored or logged:
//! an import takes hashes only, and a rotation's new key is printed once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, DurationRound, SubsecRound, Utc};
use meter_model::time::{format_instant, parse_instant};
use meter_model::{
    ApiKey, ApiKeyRecord, Clock, Email, GraceEndNotifier, HashedKey, KeyChange, KeyId, KeyStatus, KeyStore,
    KeyTerms, NewKey, PlanName, QuotaLedger, RevocationNotifier, Tally, UsageTotals,
};
use meter_reports::Pricing;
use serde::Serialize;

use crate::keys::revoke_and_announce;
use crate::{UsageError, to_json};

/// Fields of the `ApiKeys` schema an import reads (CONTRACTS.md §2).
const FIELDS: [&str; 11] = [
    "id",
    "hashedKey",
    "userEmail",
    "status",
    "plan",
    "name",
    "createdAt",
    "usageCount",
    "successfulCalls",
    "failedCalls",
    "lastUsed",
];
/// Fields that would hold a key itself: a row with one is refused, never read.
const PLAIN_KEY_FIELDS: [&str; 5] = ["key", "apiKey", "api_key", "plainKey", "secret"];
/// The longest grace period a rotation may give.
const MAX_GRACE: Duration = Duration::days(30);

/// One row of an import's source, its fields as text.
#[derive(Debug)]
pub(crate) struct SourceRow {
    /// Where it is, for messages: `line 4`, `item 7`.
    pub(crate) place: String,
    pub(crate) fields: BTreeMap<String, String>,
    /// Why the row could not be read at all (a line that is not a JSON object): reported with the
    /// other bad rows.
    pub(crate) unreadable: Option<String>,
}

impl SourceRow {
    /// A row read as fields.
    pub(crate) fn new(place: String, fields: BTreeMap<String, String>) -> Self {
        Self { place, fields, unreadable: None }
    }
}

/// Reads FILE as CSV (`.csv`) or JSON lines (`.jsonl`, `.ndjson`, `.json`).
pub(crate) fn read_file(path: &Path) -> anyhow::Result<Vec<SourceRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => read_csv(&text).with_context(|| format!("{} is not valid CSV", path.display())),
        Some("jsonl" | "ndjson" | "json") => read_json_lines(&text),
        _ => Err(UsageError(format!(
            "{}: the format is chosen by the extension: .csv, or .jsonl for JSON lines",
            path.display()
        ))
        .into()),
    }
}

fn read_csv(text: &str) -> anyhow::Result<Vec<SourceRow>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
    let headers: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_owned()).collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record?;
        let line = record.position().map_or(0, csv::Position::line);
        let fields = headers
            .iter()
            .zip(record.iter())
            .filter(|(_, value)| !value.trim().is_empty())
            .map(|(name, value)| (name.clone(), value.trim().to_owned()))
            .collect();
        rows.push(SourceRow::new(format!("line {line}"), fields));
    }
    Ok(rows)
}

fn read_json_lines(text: &str) -> anyhow::Result<Vec<SourceRow>> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let place = format!("line {}", index + 1);
        if line.trim().is_empty() {
            continue;
        }
        let row = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(object)) => SourceRow::new(
                place,
                object
                    .into_iter()
                    .filter_map(|(name, value)| {
                        let text = match value {
                            serde_json::Value::Null => return None,
                            serde_json::Value::String(text) => text,
                            serde_json::Value::Number(n) => n.to_string(),
                            serde_json::Value::Bool(b) => b.to_string(),
                            serde_json::Value::Array(_) => "<list>".into(),
                            serde_json::Value::Object(_) => "<map>".into(),
                        };
                        Some((name, text))
                    })
                    .collect(),
            ),
            // A line that is not an object is a bad row like any other: reported with the rest.
            Ok(_) => {
                SourceRow { place, fields: BTreeMap::new(), unreadable: Some("not a JSON object".into()) }
            }
            Err(err) => {
                SourceRow { place, fields: BTreeMap::new(), unreadable: Some(format!("not JSON: {err}")) }
            }
        };
        rows.push(row);
    }
    Ok(rows)
}

/// A source row that passed validation.
#[derive(Debug)]
struct ImportRow {
    place: String,
    id: KeyId,
    hashed_key: HashedKey,
    email: Email,
    status: KeyStatus,
    plan: Option<PlanName>,
    name: Option<String>,
    created_at: Option<DateTime<Utc>>,
    imported: UsageTotals,
}

fn validate(row: &SourceRow, pricing: Option<&Pricing>) -> Result<ImportRow, String> {
    if let Some(problem) = &row.unreadable {
        return Err(problem.clone());
    }
    if let Some(field) = PLAIN_KEY_FIELDS.iter().find(|f| row.fields.contains_key(**f)) {
        return Err(format!(
            "has a field {field:?}, which would hold a plain key: export hashedKey (SHA-256) only; plain keys are never imported"
        ));
    }
    let get = |name: &str| row.fields.get(name).map(String::as_str);
    let required = |name: &str| get(name).ok_or_else(|| format!("{name} is missing"));
    let id = KeyId::parse(required("id")?).map_err(|e| format!("id: {e}"))?;
    let hash_text = required("hashedKey")?.to_ascii_lowercase();
    let hashed_key = HashedKey::parse(&hash_text).map_err(|_| {
        "hashedKey must be the 64 hex digits of the key's SHA-256 (plain keys are never imported)".to_owned()
    })?;
    let email = Email::parse(required("userEmail")?).map_err(|e| format!("userEmail: {e}"))?;
    let status = get("status")
        .map_or(Ok(KeyStatus::Active), |s| KeyStatus::parse(&s.to_ascii_lowercase()))
        .map_err(|e| format!("status: {e}"))?;
    let plan = get("plan").map(PlanName::parse).transpose().map_err(|e| format!("plan: {e}"))?;
    if let Some(pricing) = pricing {
        pricing.plan(plan.as_ref().map(PlanName::as_str)).map_err(|e| e.to_string())?;
    }
    let name =
        get("name").map(meter_model::items::validate_name).transpose().map_err(|e| format!("name: {e}"))?;
    let instant = |name: &str| -> Result<Option<DateTime<Utc>>, String> {
        get(name)
            .map(|text| {
                parse_instant(text)
                    .ok()
                    .or_else(|| text.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis))
                    .ok_or_else(|| {
                        format!("{name} {text:?} is neither an ISO-8601 time nor epoch milliseconds")
                    })
            })
            .transpose()
    };
    let count = |name: &str| -> Result<u64, String> {
        get(name).map_or(Ok(0), |text| text.parse().map_err(|_| format!("{name} {text:?} is not a count")))
    };
    let tally = Tally {
        successful_calls: count("successfulCalls")?,
        failed_calls: count("failedCalls")?,
        usage_count: count("usageCount")?,
    };
    if tally.successful_calls > tally.usage_count || tally.failed_calls > tally.usage_count {
        return Err(format!(
            "successfulCalls ({}) and failedCalls ({}) cannot exceed usageCount ({})",
            tally.successful_calls, tally.failed_calls, tally.usage_count
        ));
    }
    Ok(ImportRow {
        place: row.place.clone(),
        id,
        hashed_key,
        email,
        status,
        plan,
        name,
        created_at: instant("createdAt")?,
        imported: UsageTotals { tally, last_used: instant("lastUsed")? },
    })
}

/// What an import does to one key.
#[derive(Debug)]
enum Action {
    Create(Box<ApiKeyRecord>),
    Update { id: KeyId, change: Box<KeyChange>, revoke: bool, changes: Vec<String> },
    Unchanged,
}

/// What the import did (or, in a dry run, would do).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImportSummary {
    dry_run: bool,
    created: Vec<String>,
    updated: Vec<UpdatedKey>,
    unchanged: usize,
    ignored_fields: Vec<String>,
}

#[derive(Debug, Serialize)]
struct UpdatedKey {
    id: String,
    changes: Vec<String>,
}

/// How `meter keys import` runs.
pub(crate) struct ImportOptions<'a> {
    /// The pricing every plan must be in, when one is configured.
    pub(crate) pricing: Option<&'a Pricing>,
    /// List what would change; write nothing.
    pub(crate) dry_run: bool,
    /// Answer in JSON.
    pub(crate) json: bool,
}

/// Imports `rows` (already read from a file or a table named `source`): every row is validated and
/// compared with the store first; if any is bad, nothing is written and every bad row is reported.
pub(crate) async fn import<S: KeyStore>(
    store: &S,
    clock: &impl Clock,
    (source, rows): (&str, Vec<SourceRow>),
    notifier: Option<&impl RevocationNotifier>,
    options: ImportOptions<'_>,
) -> anyhow::Result<String> {
    let ImportOptions { pricing, dry_run, json } = options;
    let now = clock.now();
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    let mut ids: HashMap<KeyId, String> = HashMap::new();
    let mut hashes: HashMap<String, String> = HashMap::new();
    for row in &rows {
        match validate(row, pricing) {
            Ok(valid_row) => {
                if let Some(first) = ids.insert(valid_row.id.clone(), row.place.clone()) {
                    errors.push(format!("{}: id {} is also on {first}", row.place, valid_row.id));
                } else if let Some(first) =
                    hashes.insert(valid_row.hashed_key.as_str().to_owned(), row.place.clone())
                {
                    errors.push(format!("{}: its hashedKey is also on {first}", row.place));
                } else {
                    valid.push(valid_row);
                }
            }
            Err(reason) => {
                let id = row.fields.get("id").map(|id| format!(" (id {id})")).unwrap_or_default();
                errors.push(format!("{}{id}: {reason}", row.place));
            }
        }
    }
    // The key table read once (an operator's scan), not two or three reads per row: an import of
    // 100,000 keys compares them in memory.
    let existing = store.list_keys().await.context("cannot read the keys already in the store")?;
    let by_id: HashMap<&KeyId, &ApiKeyRecord> = existing.iter().map(|k| (&k.id, k)).collect();
    let by_hash: HashMap<&str, &KeyId> = existing.iter().map(|k| (k.hashed_key.as_str(), &k.id)).collect();
    let mut actions = Vec::with_capacity(valid.len());
    for row in &valid {
        let owner = by_hash.get(row.hashed_key.as_str()).copied();
        match plan_row(row, by_id.get(&row.id).copied(), owner, now) {
            Ok(action) => actions.push(action),
            Err(reason) => errors.push(format!("{} (id {}): {reason}", row.place, row.id)),
        }
    }
    if !errors.is_empty() {
        let mut message = format!(
            "{} of {} rows of {source} cannot be imported; nothing was imported:\n",
            errors.len(),
            rows.len()
        );
        for error in errors.iter().take(50) {
            let _ = writeln!(message, "  {error}");
        }
        if errors.len() > 50 {
            let _ = writeln!(message, "  … {} more", errors.len() - 50);
        }
        bail!(message.trim_end().to_owned());
    }
    let ignored: BTreeSet<String> = rows
        .iter()
        .flat_map(|row| row.fields.keys())
        .filter(|name| !FIELDS.contains(&name.as_str()))
        .cloned()
        .collect();
    let mut summary =
        ImportSummary { dry_run, ignored_fields: ignored.into_iter().collect(), ..ImportSummary::default() };
    let mut applied = 0usize;
    let total = actions.iter().filter(|a| !matches!(a, Action::Unchanged)).count();
    for action in actions {
        match action {
            Action::Unchanged => summary.unchanged += 1,
            Action::Create(record) => {
                if !dry_run {
                    store.insert_key(&record).await.with_context(|| partial(applied, total, &record.id))?;
                    applied += 1;
                }
                summary.created.push(record.id.to_string());
            }
            Action::Update { id, change, revoke, changes } => {
                if !dry_run {
                    if !change.is_empty() {
                        store.update_key(&id, &change).await.with_context(|| partial(applied, total, &id))?;
                    }
                    if revoke {
                        revoke_and_announce(store, &id, now, notifier)
                            .await
                            .with_context(|| partial(applied, total, &id))?;
                    }
                    applied += 1;
                }
                summary.updated.push(UpdatedKey { id: id.to_string(), changes });
            }
        }
    }
    tracing::info!(
        created = summary.created.len(),
        updated = summary.updated.len(),
        unchanged = summary.unchanged,
        dry_run,
        "keys imported"
    );
    if json {
        return to_json(&summary);
    }
    let verb = if dry_run { "would create" } else { "created" };
    let mut out = format!(
        "{source}: {verb} {}, {} {}, {} unchanged{}\n",
        summary.created.len(),
        if dry_run { "would update" } else { "updated" },
        summary.updated.len(),
        summary.unchanged,
        if dry_run { " (dry run: nothing written)" } else { "" }
    );
    for id in &summary.created {
        let _ = writeln!(out, "  create {id}");
    }
    for key in &summary.updated {
        let _ = writeln!(out, "  update {}: {}", key.id, key.changes.join("; "));
    }
    if !summary.ignored_fields.is_empty() {
        let _ = writeln!(
            out,
            "  ignored fields (not in the ApiKeys schema): {}",
            summary.ignored_fields.join(", ")
        );
    }
    Ok(out)
}

fn partial(applied: usize, total: usize, id: &KeyId) -> String {
    format!(
        "the import stopped at key {id} after {applied} of {total} changes; the import is idempotent: run it again \
         to finish"
    )
}

/// Compares a valid row with the key of its id (`existing`) and the owner of its hash: create,
/// update (which fields), or nothing; or why the row cannot be imported.
fn plan_row(
    row: &ImportRow,
    existing: Option<&ApiKeyRecord>,
    hash_owner: Option<&KeyId>,
    now: DateTime<Utc>,
) -> Result<Action, String> {
    if let Some(owner) = hash_owner.filter(|owner| **owner != row.id) {
        return Err(format!("its hashedKey already belongs to key {owner}"));
    }
    let Some(existing) = existing else {
        let mut record = ApiKeyRecord::new(NewKey {
            id: row.id.clone(),
            hashed_key: row.hashed_key.clone(),
            user_email: row.email.clone(),
            plan: row.plan.clone(),
            name: row.name.clone(),
            created_at: row.created_at.unwrap_or(now),
        });
        if row.status == KeyStatus::Revoked {
            record.status = KeyStatus::Revoked;
            record.revoked_at = Some(now);
        }
        record.imported = row.imported;
        record.totals = row.imported.tally;
        record.last_used = row.imported.last_used;
        return Ok(Action::Create(Box::new(record)));
    };
    if existing.hashed_key != row.hashed_key {
        return Err("exists here with another key (its hashedKey differs); not imported".into());
    }
    if existing.status == KeyStatus::Revoked && row.status == KeyStatus::Active {
        return Err("is revoked here; an import never reactivates a key".into());
    }
    let mut change = KeyChange::default();
    let mut changes = Vec::new();
    let email = (existing.user_email != row.email).then(|| row.email.clone());
    let plan = (existing.plan != row.plan).then(|| row.plan.clone());
    if let Some(email) = &email {
        changes.push(format!("userEmail {} → {email}", existing.user_email));
    }
    if let Some(plan) = &plan {
        changes.push(format!("plan {} → {}", plan_text(existing.plan.as_ref()), plan_text(plan.as_ref())));
    }
    change_terms(&mut change, existing, email, plan, now);
    if row.name.is_some() && existing.name != row.name {
        changes.push("name".into());
        change.name = Some(row.name.clone());
    }
    if existing.imported != row.imported {
        changes.push(format!(
            "imported usage {} → {} calls",
            existing.imported.tally.usage_count, row.imported.tally.usage_count
        ));
        change.imported = Some(row.imported);
    }
    let revoke = existing.status == KeyStatus::Active && row.status == KeyStatus::Revoked;
    if revoke {
        changes.push("revoked".into());
    }
    Ok(if changes.is_empty() {
        Action::Unchanged
    } else {
        Action::Update { id: row.id.clone(), change: Box::new(change), revoke, changes }
    })
}

/// Sets a new customer and/or plan (each given only where it differs) on `change`, keeping the key's
/// current terms in its history as held until `now`: a month is priced under the terms at its end.
fn change_terms(
    change: &mut KeyChange,
    record: &ApiKeyRecord,
    email: Option<Email>,
    plan: Option<Option<PlanName>>,
    now: DateTime<Utc>,
) {
    if email.is_none() && plan.is_none() {
        return;
    }
    let mut terms = record.previous_terms.clone();
    let until = now.trunc_subsecs(3);
    terms.push(KeyTerms { until, user_email: record.user_email.clone(), plan: record.plan.clone() });
    change.previous_terms = Some(terms);
    change.user_email = email;
    change.plan = plan;
}

fn plan_text(plan: Option<&PlanName>) -> &str {
    plan.map_or("(default)", PlanName::as_str)
}

/// `meter keys update ID [--plan P] [--email E] [--name N]`.
pub(crate) async fn update<S: KeyStore + QuotaLedger>(
    store: &S,
    clock: &impl Clock,
    id: &KeyId,
    edit: (Option<Email>, Option<PlanName>, Option<String>),
    pricing: Option<&Pricing>,
    json: bool,
) -> anyhow::Result<String> {
    let (email, plan, name) = edit;
    if email.is_none() && plan.is_none() && name.is_none() {
        return Err(UsageError("nothing to change: give --plan, --email or --name".into()).into());
    }
    if let (Some(pricing), Some(plan)) = (pricing, &plan) {
        pricing.plan(Some(plan.as_str())).map_err(|e| UsageError(e.to_string()))?;
    }
    let before = crate::keys::find(store, id).await?;
    let now = clock.now();
    let mut change = KeyChange::default();
    let mut said = Vec::new();
    let new_email = email.filter(|e| *e != before.user_email);
    let new_plan = plan.filter(|p| before.plan.as_ref() != Some(p));
    if let Some(email) = &new_email {
        said.push(format!("customer {} → {email}", before.user_email));
    }
    if let Some(plan) = &new_plan {
        said.push(format!("plan {} → {plan}", plan_text(before.plan.as_ref())));
    }
    if let Some(plan) = &new_plan {
        // The new plan's quota travels with the key from now on (ARCHITECTURE.md, "Plan quotas").
        match pricing {
            Some(pricing) => {
                let quota =
                    pricing.plan(Some(plan.as_str())).map_err(|e| UsageError(e.to_string()))?.quota.clone();
                if quota != before.quota {
                    change.quota = Some(quota);
                }
            }
            None if before.quota.is_some() => {
                return Err(UsageError(format!(
                    "key {id} carries its plan's quota: give --pricing FILE so that plan {plan}'s quota replaces it"
                ))
                .into());
            }
            None => {}
        }
    }
    change_terms(&mut change, &before, new_email, new_plan.map(Some), now);
    if let Some(name) = name.filter(|n| before.name.as_ref() != Some(n)) {
        said.push(format!("name {name:?}"));
        change.name = Some(Some(name));
    }
    let quota_changed = change.quota.is_some();
    let after = if change.is_empty() {
        before
    } else {
        store.update_key(id, &change).await.with_context(|| format!("cannot update key {id}"))?
    };
    if quota_changed {
        // The new quota applies at once: the month's refusal is set or lifted against it.
        let month = meter_model::Month::of(now);
        let customer = &after.user_email;
        let used = store.quota_used(customer, month).await.context("cannot read the month's quota usage")?;
        // A customer is held to the strictest quota among its keys (an operator's Scan, not the
        // request path's).
        let keys = store.list_keys().await.context("cannot list the customer's keys")?;
        let strictest = meter_model::quota::QuotaTerms::strictest(
            keys.iter().filter(|key| key.user_email == *customer).filter_map(|key| key.quota.as_ref()),
        );
        let refused = strictest.is_some_and(|terms| terms.refuses_at(used));
        let moved = store
            .set_quota_refusal(customer, month, refused)
            .await
            .context("cannot apply the new quota to the customer's keys")?;
        let quota =
            after.quota.as_ref().map_or_else(|| "none".to_owned(), |t| format!("{} ({})", t.calls, t.mode));
        said.push(format!("quota {quota}, {used} billable calls used this month"));
        if moved > 0 {
            said.push(format!(
                "{} for {moved} key(s) of {customer}",
                if refused { "refused from now on" } else { "refusal lifted" }
            ));
        }
    }
    tracing::info!(key_id = %id, changes = said.len(), "key updated");
    if json {
        return to_json(&after);
    }
    if said.is_empty() {
        return Ok(format!("Key {id} already has these values; nothing changed.\n"));
    }
    Ok(format!(
        "Updated key {id}: {}.\nAs of {}. A month is billed under the customer and plan a key has at the month's \
         end, so this month is billed under the new ones and earlier months keep theirs.\n",
        said.join(", "),
        format_instant(now)
    ))
}

/// Parses a grace period: `24h`, `90m`, `2d`, `1h 30m`, `0`; at most 30 days.
pub(crate) fn parse_grace(text: &str) -> Result<Duration, String> {
    let std = if text.trim() == "0" {
        std::time::Duration::ZERO
    } else {
        humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration like 24h or 90m: {e}"))?
    };
    let grace = Duration::from_std(std).map_err(|_| format!("{text:?} is too long"))?;
    if grace > MAX_GRACE {
        return Err(format!("{text:?} is longer than the 30 days a rotation may give"));
    }
    Ok(grace)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Rotated<'a> {
    id: &'a str,
    key: &'a str,
    rotated_from: &'a str,
    grace_ends_at: String,
}

/// `meter keys rotate ID [--grace 24h]`: a new key for the same customer, plan and name, printed once;
/// the old key works until the grace period ends, then is refused like a revoked key. With a grace
/// of 0 the old key is revoked at once.
pub(crate) async fn rotate<S: KeyStore>(
    store: &S,
    clock: &impl Clock,
    id: &KeyId,
    grace: Duration,
    revocations: Option<&impl RevocationNotifier>,
    grace_end: Option<&impl GraceEndNotifier>,
    json: bool,
) -> anyhow::Result<String> {
    let old = crate::keys::find(store, id).await?;
    let now = clock.now();
    // The store refuses these too; asked first so that no flush is arranged for a rotation that fails.
    if old.status == KeyStatus::Revoked || old.grace_ends_at.is_some() {
        bail!("key {id} is revoked or already rotated; create a new key with `meter keys create` instead");
    }
    // Whole seconds: an instant people can read and type, and the flush of API Gateway's cache waits
    // for the very same one.
    let ends = (now + grace).duration_round_up(Duration::seconds(1)).unwrap_or(now + grace);
    let key = ApiKey::generate().context("cannot generate a key")?;
    let mut record = ApiKeyRecord::new(NewKey {
        id: key.id().clone(),
        hashed_key: key.hashed(),
        user_email: old.user_email.clone(),
        plan: old.plan.clone(),
        name: old.name.clone(),
        created_at: now,
    });
    // The new key counts against the same quota, and a customer refused for the month stays refused.
    record.quota.clone_from(&old.quota);
    record.quota_refused_in = old.quota_refused_in;
    // The flush is arranged before anything is written: one left by a failed rotation only flushes a
    // cache once more, while a rotation without one would leave the old key in API Gateway's cache up
    // to 30 s past its end.
    let scheduled = match (grace.is_zero(), revocations.is_some(), grace_end) {
        (true, _, _) | (false, false, _) => None,
        (false, true, Some(workflow)) => Some(workflow.notify_at_grace_end(id, ends).await.context(
            "cannot arrange the flush of API Gateway's authorizer cache at the grace end; nothing was changed",
        )?),
        (false, true, None) => {
            return Err(UsageError(
                "a rotation with a grace period needs --grace-end-state-machine (METER_GRACE_END_STATE_MACHINE, the \
                 stack's output GraceEndStateMachine) with --revocation-topic, so that API Gateway's cache is \
                 flushed when the grace ends"
                    .into(),
            )
            .into());
        }
    };
    let rotated =
        store.rotate_key(id, &record, ends).await.with_context(|| format!("cannot rotate key {id}"))?;
    if grace.is_zero() {
        revoke_and_announce(store, id, now, revocations).await.with_context(|| {
            format!("key {id} was rotated (new key {}) but its revocation did not complete", record.id)
        })?;
    }
    tracing::info!(key_id = %id, new_key_id = %record.id, grace_ends_at = %format_instant(ends), "key rotated");
    if json {
        return to_json(&Rotated {
            id: record.id.as_str(),
            key: key.reveal(),
            rotated_from: id.as_str(),
            grace_ends_at: format_instant(ends),
        });
    }
    let mut out = format!(
        "Rotated key {id} for {} (plan: {}): the new key is {}.\n\n    {}\n\n\
         This is the only time the key is shown: store it now. Only its SHA-256 hash is kept.\n",
        rotated.user_email,
        plan_text(rotated.plan.as_ref()),
        record.id,
        key.reveal(),
    );
    if grace.is_zero() {
        let _ = writeln!(out, "The old key {id} is revoked now.");
    } else {
        let _ = writeln!(
            out,
            "The old key {id} works until {} and is refused from then on; both count toward the same invoice.",
            format_instant(ends)
        );
    }
    if let Some(schedule) = scheduled {
        let _ = writeln!(out, "API Gateway's authorizer cache is flushed then ({schedule}).");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use meter_model::quota::{QuotaMode, QuotaTerms};
    use meter_model::time::parse_instant;
    use meter_model::{BatchDelta, BatchId, Day, DayDelta, ManualClock, MarkerSlot, Month, UsageWriter};
    use meter_store::SqliteStore;

    use super::*;

    fn pricing(free_calls: u64) -> Pricing {
        Pricing::parse(&format!(
            "currency = \"USD\"\ndefault_plan = \"payg\"\n\
             [plans.payg]\nmonthly_fee = \"0.00\"\ntiers = [{{ price_per_1000 = \"0.50\" }}]\n\
             [plans.free]\nmonthly_fee = \"0.00\"\ntiers = [{{ price_per_1000 = \"0\" }}]\n\
             quota = {{ calls = {free_calls}, mode = \"hard\" }}\n\
             [plans.bigger]\nmonthly_fee = \"0.00\"\ntiers = [{{ price_per_1000 = \"0\" }}]\n\
             quota = {{ calls = 100, mode = \"hard\" }}\n"
        ))
        .unwrap()
    }

    /// A plan change applies the new quota to the month at once: a refusal is lifted when the new
    /// quota is above what was used, and set when it is below.
    #[tokio::test]
    async fn a_plan_change_sets_or_lifts_the_months_refusal_against_the_new_quota() {
        let store = SqliteStore::open_in_memory().unwrap();
        let now = parse_instant("2026-12-07T12:00:00Z").unwrap();
        let clock = ManualClock::new(now);
        let key = ApiKey::generate().unwrap();
        let mut record = ApiKeyRecord::new(NewKey {
            id: key.id().clone(),
            hashed_key: key.hashed(),
            user_email: Email::parse("ada@example.com").unwrap(),
            plan: Some(PlanName::parse("free").unwrap()),
            name: None,
            created_at: now,
        });
        record.quota = Some(QuotaTerms::new(5, QuotaMode::Hard, Vec::new()).unwrap());
        store.insert_key(&record).await.unwrap();
        let mut tally = Tally::default();
        for _ in 0..8 {
            tally.add(Tally::of_call(200, true));
        }
        let day = DayDelta { key_id: key.id().clone(), day: Day::of(now), tally, last_used: now };
        let buffer = BatchDelta::new(BatchId::from_digest(&[7; 32]), MarkerSlot::of(now, 0), vec![day]);
        let applied = store.apply_deliveries(&[buffer], now).await.unwrap();
        assert_eq!(applied.quota_refusals.len(), 1, "8 calls against a quota of 5");
        let december = Month::of(now);
        assert_eq!(store.get_key(key.id()).await.unwrap().unwrap().quota_refused_in, Some(december));

        let plan = |name: &str| (None, Some(PlanName::parse(name).unwrap()), None);
        let said = update(&store, &clock, key.id(), plan("bigger"), Some(&pricing(5)), false).await.unwrap();
        assert!(said.contains("quota 100 (hard), 8 billable calls used this month"), "{said}");
        assert!(said.contains("refusal lifted for 1 key(s)"), "{said}");
        assert_eq!(store.get_key(key.id()).await.unwrap().unwrap().quota_refused_in, None);
        // Back to a quota below the month's use: refused at once.
        let said = update(&store, &clock, key.id(), plan("free"), Some(&pricing(6)), false).await.unwrap();
        assert!(said.contains("refused from now on for 1 key(s)"), "{said}");
        assert_eq!(store.get_key(key.id()).await.unwrap().unwrap().quota_refused_in, Some(december));
        // To a plan without a quota: nothing refuses it.
        let said = update(&store, &clock, key.id(), plan("payg"), Some(&pricing(6)), false).await.unwrap();
        assert!(said.contains("quota none") && said.contains("refusal lifted"), "{said}");
        assert_eq!(store.get_key(key.id()).await.unwrap().unwrap().quota_refused_in, None);
    }
}
