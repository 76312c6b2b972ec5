//! Rows and their conversions: key rows, day rows and the counters as SQLite stores them.

use meter_model::quota::QuotaTerms;
use meter_model::time::{Month, format_instant};
use meter_model::{
    ApiKeyRecord, DayUsage, Email, HashedKey, KeyId, KeyStatus, PlanName, StoreError, Tally, UsageTotals,
};
use rusqlite::Row;

use super::error::{corrupt, counter, instant, to_i64};

pub(super) const KEY_COLUMNS: &str = "id, hashed_key, user_email, status, plan, name, created_at, revoked_at, last_used, \
     usage_count, successful_calls, failed_calls, imported_usage_count, imported_successful_calls, \
     imported_failed_calls, imported_last_used, grace_ends_at, previous_terms, quota_calls, quota_mode, \
     quota_alerts, quota_refused_in";

/// Columns of a key row, read raw so that conversion errors become `Corrupt`, not SQL errors.
pub(super) struct KeyRow {
    id: String,
    hashed_key: String,
    user_email: String,
    status: String,
    plan: Option<String>,
    name: Option<String>,
    created_at: String,
    revoked_at: Option<String>,
    last_used: Option<String>,
    usage_count: i64,
    successful_calls: i64,
    failed_calls: i64,
    imported_usage_count: i64,
    imported_successful_calls: i64,
    imported_failed_calls: i64,
    imported_last_used: Option<String>,
    grace_ends_at: Option<String>,
    previous_terms: Option<String>,
    quota_calls: Option<i64>,
    quota_mode: Option<String>,
    quota_alerts: Option<String>,
    quota_refused_in: Option<String>,
}

impl KeyRow {
    pub(super) fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            hashed_key: row.get(1)?,
            user_email: row.get(2)?,
            status: row.get(3)?,
            plan: row.get(4)?,
            name: row.get(5)?,
            created_at: row.get(6)?,
            revoked_at: row.get(7)?,
            last_used: row.get(8)?,
            usage_count: row.get(9)?,
            successful_calls: row.get(10)?,
            failed_calls: row.get(11)?,
            imported_usage_count: row.get(12)?,
            imported_successful_calls: row.get(13)?,
            imported_failed_calls: row.get(14)?,
            imported_last_used: row.get(15)?,
            grace_ends_at: row.get(16)?,
            previous_terms: row.get(17)?,
            quota_calls: row.get(18)?,
            quota_mode: row.get(19)?,
            quota_alerts: row.get(20)?,
            quota_refused_in: row.get(21)?,
        })
    }

    pub(super) fn into_record(self) -> Result<ApiKeyRecord, StoreError> {
        let id = KeyId::parse(&self.id).map_err(|e| corrupt(e.to_string()))?;
        let context = |e: &dyn std::fmt::Display| corrupt(format!("key {id}: {e}"));
        Ok(ApiKeyRecord {
            hashed_key: HashedKey::parse(&self.hashed_key).map_err(|e| context(&e))?,
            user_email: Email::parse(&self.user_email).map_err(|e| context(&e))?,
            status: KeyStatus::parse(&self.status).map_err(|e| context(&e))?,
            plan: self.plan.as_deref().map(PlanName::parse).transpose().map_err(|e| context(&e))?,
            name: self.name,
            created_at: instant(Some(self.created_at), "createdAt")?.unwrap_or_default(),
            revoked_at: instant(self.revoked_at, "revokedAt")?,
            last_used: instant(self.last_used, "lastUsed")?,
            totals: tally_of(self.successful_calls, self.failed_calls, self.usage_count)?,
            imported: UsageTotals {
                tally: tally_of(
                    self.imported_successful_calls,
                    self.imported_failed_calls,
                    self.imported_usage_count,
                )?,
                last_used: instant(self.imported_last_used, "importedLastUsed")?,
            },
            grace_ends_at: instant(self.grace_ends_at, "graceEndsAt")?,
            previous_terms: match self.previous_terms.as_deref() {
                None | Some("") => Vec::new(),
                Some(json) => serde_json::from_str(json).map_err(|e| context(&e))?,
            },
            quota: match (self.quota_calls, self.quota_mode) {
                (Some(calls), Some(mode)) => Some(
                    QuotaTerms::from_stored(
                        counter(calls, "quotaCalls")?,
                        &mode,
                        self.quota_alerts.as_deref().unwrap_or(""),
                    )
                    .map_err(|e| context(&e))?,
                ),
                _ => None,
            },
            quota_refused_in: self
                .quota_refused_in
                .as_deref()
                .map(str::parse::<Month>)
                .transpose()
                .map_err(|e| context(&e))?,
            id,
        })
    }
}

/// The column values of a key item, in [`KEY_COLUMNS`]'s order.
pub(super) fn key_values(record: &ApiKeyRecord) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    use rusqlite::types::Value;
    let text = |value: Option<String>| value.map_or(Value::Null, Value::Text);
    let terms = if record.previous_terms.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&record.previous_terms).map_err(|e| corrupt(e.to_string()))?)
    };
    Ok(vec![
        Value::Text(record.id.as_str().to_owned()),
        Value::Text(record.hashed_key.as_str().to_owned()),
        Value::Text(record.user_email.as_str().to_owned()),
        Value::Text(record.status.as_str().to_owned()),
        text(record.plan.as_ref().map(|p| p.as_str().to_owned())),
        text(record.name.clone()),
        Value::Text(format_instant(record.created_at)),
        text(record.revoked_at.map(format_instant)),
        text(record.last_used.map(format_instant)),
        Value::Integer(to_i64(record.totals.usage_count, "usageCount")?),
        Value::Integer(to_i64(record.totals.successful_calls, "successfulCalls")?),
        Value::Integer(to_i64(record.totals.failed_calls, "failedCalls")?),
        Value::Integer(to_i64(record.imported.tally.usage_count, "importedUsageCount")?),
        Value::Integer(to_i64(record.imported.tally.successful_calls, "importedSuccessfulCalls")?),
        Value::Integer(to_i64(record.imported.tally.failed_calls, "importedFailedCalls")?),
        text(record.imported.last_used.map(format_instant)),
        text(record.grace_ends_at.map(format_instant)),
        text(terms),
        match &record.quota {
            Some(quota) => Value::Integer(to_i64(quota.calls, "quotaCalls")?),
            None => Value::Null,
        },
        text(record.quota.as_ref().map(|q| q.mode.to_string())),
        text(record.quota.as_ref().map(QuotaTerms::alerts_text)),
        text(record.quota_refused_in.map(|m| m.to_string())),
    ])
}

type DayRow = (String, String, [i64; 3], [i64; 3], Option<String>, Option<String>);

/// The three counters as stored (SQLite integers are signed), checked.
pub(super) fn tally_of(successful: i64, failed: i64, usage: i64) -> Result<Tally, StoreError> {
    Ok(Tally {
        successful_calls: counter(successful, "successfulCalls")?,
        failed_calls: counter(failed, "failedCalls")?,
        usage_count: counter(usage, "usageCount")?,
    })
}

pub(super) fn day_usage_of(row: DayRow) -> Result<DayUsage, StoreError> {
    let (
        key_id,
        day,
        [successful, failed, usage],
        [open_successful, open_failed, open_usage],
        last_used,
        reconciled_at,
    ) = row;
    Ok(DayUsage {
        key_id: KeyId::parse(&key_id).map_err(|e| corrupt(e.to_string()))?,
        day: day.parse().map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?,
        tally: tally_of(successful, failed, usage)?,
        open: tally_of(open_successful, open_failed, open_usage)?,
        last_used: instant(last_used, "lastUsed")?,
        reconciled_at: instant(reconciled_at, "reconciledAt")?,
    })
}

pub(super) const DAY_COLUMNS: &str = "key_id, day, successful_calls, failed_calls, usage_count, \
     open_successful_calls, open_failed_calls, open_usage_count, last_used, reconciled_at";

pub(super) fn read_day_row(r: &Row<'_>) -> rusqlite::Result<DayRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        [r.get(2)?, r.get(3)?, r.get(4)?],
        [r.get(5)?, r.get(6)?, r.get(7)?],
        r.get(8)?,
        r.get(9)?,
    ))
}

pub(super) fn tally_params(tally: Tally) -> Result<[i64; 3], StoreError> {
    Ok([
        to_i64(tally.successful_calls, "successfulCalls")?,
        to_i64(tally.failed_calls, "failedCalls")?,
        to_i64(tally.usage_count, "usageCount")?,
    ])
}

/// A signed difference as SQLite integers.
pub(super) fn delta_params(delta: meter_model::TallyDelta) -> Result<[i64; 3], StoreError> {
    let bound = |value: i128, name: &str| {
        i64::try_from(value)
            .map_err(|_| corrupt(format!("{name} moves by {value}, beyond SQLite's integers")))
    };
    Ok([
        bound(delta.successful_calls, "successfulCalls")?,
        bound(delta.failed_calls, "failedCalls")?,
        bound(delta.usage_count, "usageCount")?,
    ])
}
