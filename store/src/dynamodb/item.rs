//! Converting between items (attribute maps) and the model's types.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use meter_model::quota::QuotaTerms;
use meter_model::time::{Month, format_instant, parse_instant};
use meter_model::{
    ApiKeyRecord, Email, HashedKey, KeyId, KeyStatus, PlanName, StoreError, Tally, UsageTotals,
};

pub(super) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

pub(super) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(super) fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}

pub(super) type Item = HashMap<String, AttributeValue>;

pub(super) fn get_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value)),
        Some(_) => Err(corrupt(format!("attribute {name} is not a string"))),
    }
}

pub(super) fn req_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, name)?.ok_or_else(|| corrupt(format!("attribute {name} is missing")))
}

pub(super) fn get_n(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        None => Ok(0),
        Some(AttributeValue::N(value)) => {
            value.parse().map_err(|_| corrupt(format!("attribute {name} = {value} is not a count")))
        }
        Some(_) => Err(corrupt(format!("attribute {name} is not a number"))),
    }
}

/// A key's lifetime counter. The writes move it by differences (CONTRACTS.md §2): after a write
/// that moved a day item but not its key, a later correction can take it below zero until a recount.
/// It reads as 0 then rather than making the key unreadable (the authorizer reads this item).
fn lifetime_n(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        Some(AttributeValue::N(value)) if value.starts_with('-') => value
            .parse::<i128>()
            .map(|_| 0)
            .map_err(|_| corrupt(format!("attribute {name} = {value} is not a count"))),
        _ => get_n(item, name),
    }
}

pub(super) fn get_instant(item: &Item, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get_s(item, name)?
        .map(|t| {
            parse_instant(t).map_err(|_| corrupt(format!("attribute {name} = {t:?} is not a timestamp")))
        })
        .transpose()
}

pub(super) fn tally_of(item: &Item) -> Result<Tally, StoreError> {
    Ok(Tally {
        successful_calls: get_n(item, "successfulCalls")?,
        failed_calls: get_n(item, "failedCalls")?,
        usage_count: get_n(item, "usageCount")?,
    })
}

pub(super) fn record_from_item(item: &Item) -> Result<ApiKeyRecord, StoreError> {
    let id = KeyId::parse(req_s(item, "id")?).map_err(|e| corrupt(e.to_string()))?;
    let context = |e: &dyn std::fmt::Display| corrupt(format!("key {id}: {e}"));
    Ok(ApiKeyRecord {
        hashed_key: HashedKey::parse(req_s(item, "hashedKey")?).map_err(|e| context(&e))?,
        user_email: Email::parse(req_s(item, "userEmail")?).map_err(|e| context(&e))?,
        status: KeyStatus::parse(req_s(item, "status")?).map_err(|e| context(&e))?,
        plan: get_s(item, "plan")?.map(PlanName::parse).transpose().map_err(|e| context(&e))?,
        name: get_s(item, "name")?.map(str::to_owned),
        created_at: get_instant(item, "createdAt")?.ok_or_else(|| context(&"createdAt is missing"))?,
        revoked_at: get_instant(item, "revokedAt")?,
        last_used: get_instant(item, "lastUsed")?,
        totals: Tally {
            successful_calls: lifetime_n(item, "successfulCalls")?,
            failed_calls: lifetime_n(item, "failedCalls")?,
            usage_count: lifetime_n(item, "usageCount")?,
        },
        imported: UsageTotals {
            tally: Tally {
                successful_calls: get_n(item, "importedSuccessfulCalls")?,
                failed_calls: get_n(item, "importedFailedCalls")?,
                usage_count: get_n(item, "importedUsageCount")?,
            },
            last_used: get_instant(item, "importedLastUsed")?,
        },
        grace_ends_at: get_instant(item, "graceEndsAt")?,
        previous_terms: match get_s(item, "previousTerms")? {
            None => Vec::new(),
            Some(json) => serde_json::from_str(json).map_err(|e| context(&e))?,
        },
        quota: match get_s(item, "quotaMode")? {
            None => None,
            Some(mode) => Some(
                QuotaTerms::from_stored(
                    get_n(item, "quotaCalls")?,
                    mode,
                    get_s(item, "quotaAlerts")?.unwrap_or(""),
                )
                .map_err(|e| context(&e))?,
            ),
        },
        quota_refused_in: get_s(item, "quotaRefusedIn")?
            .map(str::parse::<Month>)
            .transpose()
            .map_err(|e| context(&e))?,
        id,
    })
}

pub(super) fn item_from_record(record: &ApiKeyRecord) -> Item {
    let mut item = HashMap::from([
        ("id".to_owned(), s(record.id.as_str())),
        ("hashedKey".to_owned(), s(record.hashed_key.as_str())),
        ("userEmail".to_owned(), s(record.user_email.as_str())),
        ("status".to_owned(), s(record.status.as_str())),
        ("createdAt".to_owned(), s(&format_instant(record.created_at))),
        ("usageCount".to_owned(), n(record.totals.usage_count)),
        ("successfulCalls".to_owned(), n(record.totals.successful_calls)),
        ("failedCalls".to_owned(), n(record.totals.failed_calls)),
    ]);
    let imported = record.imported.tally;
    for (name, value) in [
        ("importedUsageCount", imported.usage_count),
        ("importedSuccessfulCalls", imported.successful_calls),
        ("importedFailedCalls", imported.failed_calls),
    ] {
        if value > 0 {
            item.insert(name.to_owned(), n(value));
        }
    }
    // Earlier terms as one JSON string: read whole, written whole, never queried.
    let terms = (!record.previous_terms.is_empty())
        .then(|| serde_json::to_string(&record.previous_terms).unwrap_or_default());
    let optional = [
        ("plan", record.plan.as_ref().map(|p| p.as_str().to_owned())),
        ("name", record.name.clone()),
        ("revokedAt", record.revoked_at.map(format_instant)),
        ("lastUsed", record.last_used.map(format_instant)),
        ("importedLastUsed", record.imported.last_used.map(format_instant)),
        // Not `expiresAt`: that name is the counters table's TTL attribute, which deletes items.
        ("graceEndsAt", record.grace_ends_at.map(format_instant)),
        ("previousTerms", terms),
        ("quotaMode", record.quota.as_ref().map(|q| q.mode.to_string())),
        ("quotaAlerts", record.quota.as_ref().map(QuotaTerms::alerts_text).filter(|t| !t.is_empty())),
        ("quotaRefusedIn", record.quota_refused_in.map(|m| m.to_string())),
    ];
    if let Some(quota) = &record.quota {
        item.insert("quotaCalls".to_owned(), n(quota.calls));
    }
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.to_owned(), AttributeValue::S(value));
        }
    }
    item
}

/// A condition that the three counters `names` (attribute names or `#` placeholders) hold `tally`,
/// and its values, named `:<prefix>s`, `:<prefix>f`, `:<prefix>u`. A counter the item lacks reads as
/// 0, so "0" also accepts a missing attribute.
pub(super) fn counters_equal(
    names: [&str; 3],
    tally: Tally,
    prefix: &str,
) -> (String, HashMap<String, AttributeValue>) {
    let mut clauses = Vec::new();
    let mut values = HashMap::new();
    for ((name, kind), value) in names.into_iter().zip(['s', 'f', 'u']).zip([
        tally.successful_calls,
        tally.failed_calls,
        tally.usage_count,
    ]) {
        let placeholder = format!(":{prefix}{kind}");
        clauses.push(if value == 0 {
            format!("(attribute_not_exists({name}) OR {name} = {placeholder})")
        } else {
            format!("{name} = {placeholder}")
        });
        values.insert(placeholder, n(value));
    }
    (clauses.join(" AND "), values)
}
