//! The DynamoDB store: the `ApiKeys` and `UsageCounters` tables of DESIGN §3.2.
//!
//! Every SDK error is translated into a [`StoreError`] here, in [`store_error`]; nothing outside this
//! module sees an SDK type.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    KeysAndAttributes, Projection, ProjectionType, Put, ReturnValue, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TransactWriteItem, Update,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use meter_model::batch::MARKER_TTL;
use meter_model::time::{format_instant, parse_instant};
use meter_model::{
    ApiKeyRecord, ApplyReport, BatchDelta, CorrectionOutcome, CounterCorrector, Day, DayCorrection, DayDelta,
    DayUsage, Email, HashedKey, KeyId, KeyStatus, KeyStore, Month, PlanName, ReconcileRun, Revocation,
    StoreError, Tally, UsageReader, UsageWriter,
};

/// The GSI on `ApiKeys.hashedKey`, for keys whose id cannot be read from the key itself.
pub const HASHED_KEY_INDEX: &str = "hashedKey-index";
/// The TTL attribute of bookkeeping items in `UsageCounters` (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expiresAt";

/// Partition of the bookkeeping item that holds the revocation epoch. `#` cannot start a key id.
const META_PARTITION: &str = "#meta";
const EPOCH_SORT_KEY: &str = "revocationEpoch";

/// The names of the two tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// `ApiKeys`.
    pub api_keys: String,
    /// `UsageCounters`.
    pub usage_counters: String,
}

impl Default for TableNames {
    fn default() -> Self {
        Self { api_keys: "ApiKeys".into(), usage_counters: "UsageCounters".into() }
    }
}

/// Partition prefix of batch markers in `UsageCounters`; `#` cannot start a key id.
const BATCH_PARTITION_PREFIX: &str = "#batch#";
/// Partition of the reconcile run records in `UsageCounters`.
const RECONCILE_PARTITION: &str = "#reconcile";
/// How long run records are kept.
const RUN_RECORD_TTL_DAYS: i64 = 400;
/// DynamoDB's limit on the items of one transaction.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// DynamoDB's limit on the keys of one `BatchGetItem`.
const MAX_BATCH_GET_KEYS: usize = 100;
/// How many `lastUsed` updates run at once.
const LAST_USED_CONCURRENCY: usize = 16;

/// The DynamoDB store.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    tables: TableNames,
    chunk_limit: Option<usize>,
}

impl DynamoStore {
    /// A store over an already configured client.
    #[must_use]
    pub fn new(client: Client, tables: TableNames) -> Self {
        Self { client, tables, chunk_limit: None }
    }

    /// A fault drill: each `apply_batch` call applies at most `limit` chunks, then fails as a
    /// throttled call would. Retrying (as the processor does) must still give exact counts.
    #[must_use]
    pub fn with_chunk_limit(mut self, limit: usize) -> Self {
        self.chunk_limit = Some(limit);
        self
    }

    /// The tables this store uses.
    #[must_use]
    pub fn tables(&self) -> &TableNames {
        &self.tables
    }

    /// Creates the tables (with the GSI and TTL) where they do not exist, and waits until they are
    /// active. Returns the names of the tables it created. In AWS the infrastructure creates them;
    /// this is for emulators and first-time local use.
    pub async fn ensure_tables(&self) -> Result<Vec<String>, StoreError> {
        let mut created = Vec::new();
        if self
            .create_if_missing(&self.tables.api_keys, api_keys_table(&self.client, &self.tables.api_keys))
            .await?
        {
            created.push(self.tables.api_keys.clone());
        }
        let counters = counters_table(&self.client, &self.tables.usage_counters);
        if self.create_if_missing(&self.tables.usage_counters, counters).await? {
            created.push(self.tables.usage_counters.clone());
        }
        for table in &created {
            self.wait_active(table).await?;
        }
        if created.contains(&self.tables.usage_counters) {
            self.client
                .update_time_to_live()
                .table_name(&self.tables.usage_counters)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .enabled(true)
                        .attribute_name(TTL_ATTRIBUTE)
                        .build()
                        .map_err(|e| build_error("enable TTL", e))?,
                )
                .send()
                .await
                .map_err(|e| store_error("enable TTL", e))?;
        }
        Ok(created)
    }

    async fn create_if_missing(
        &self,
        table: &str,
        create: CreateTableFluentBuilder,
    ) -> Result<bool, StoreError> {
        match self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| store_error("describe table", e))
        {
            Ok(_) => return Ok(false),
            Err(StoreError::NotFound { .. }) => {}
            Err(other) => return Err(other),
        }
        match create.send().await.map_err(|e| store_error("create table", e)) {
            Ok(_) => Ok(true),
            // Someone else created it in the meantime: that is what we wanted.
            Err(StoreError::AlreadyExists { .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    async fn wait_active(&self, table: &str) -> Result<(), StoreError> {
        for _ in 0..300 {
            let described = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| store_error("describe table", e))?;
            let status = described.table().and_then(|t| t.table_status());
            if status == Some(&TableStatus::Active) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(StoreError::Unavailable {
            operation: "create table".into(),
            hint: format!("table {table} did not become ACTIVE within a minute"),
            source: None,
        })
    }

    fn key_of(id: &KeyId) -> HashMap<String, AttributeValue> {
        HashMap::from([("id".to_owned(), s(id.as_str()))])
    }

    fn epoch_key() -> HashMap<String, AttributeValue> {
        HashMap::from([("keyId".to_owned(), s(META_PARTITION)), ("day".to_owned(), s(EPOCH_SORT_KEY))])
    }
}

/// An on-demand table with string key attributes `keys` (hash, then optional range).
fn table(client: &Client, name: &str, keys: &[(&str, KeyType)]) -> CreateTableFluentBuilder {
    keys.iter().fold(
        client.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest),
        |table, (key, key_type)| {
            table.attribute_definitions(attribute(key)).key_schema(key_element(key, key_type.clone()))
        },
    )
}

fn api_keys_table(client: &Client, name: &str) -> CreateTableFluentBuilder {
    table(client, name, &[("id", KeyType::Hash)])
        .attribute_definitions(attribute("hashedKey"))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(HASHED_KEY_INDEX)
                .key_schema(key_element("hashedKey", KeyType::Hash))
                // Keys only: the lookup re-reads the item by id with a consistent read anyway, so a
                // revocation is never hidden by index lag.
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()
                .expect("index name, key schema and projection are set"),
        )
}

fn counters_table(client: &Client, name: &str) -> CreateTableFluentBuilder {
    table(client, name, &[("keyId", KeyType::Hash), ("day", KeyType::Range)])
}

fn attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("name and type are set")
}

fn key_element(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("name and type are set")
}

/// Translates an SDK error into the domain's terms. The one place that looks at DynamoDB error codes.
pub(crate) fn store_error<E, R>(operation: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, err) = match crate::sdk::service_code(operation, "DynamoDB", err) {
        Ok(answer) => answer,
        Err(unreachable) => return unreachable,
    };
    let operation = operation.to_owned();
    match code.as_deref() {
        Some(
            "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "TransactionConflictException"
            | "TransactionInProgressException",
        ) => StoreError::Retryable { operation, source: err.into() },
        Some("ConditionalCheckFailedException") => StoreError::ConditionFailed { what: operation },
        Some("ResourceNotFoundException") => StoreError::NotFound { what: format!("table for {operation}") },
        Some("ResourceInUseException") => {
            StoreError::AlreadyExists { what: format!("table for {operation}") }
        }
        Some(
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "AccessDeniedException"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken",
        ) => StoreError::Unavailable {
            operation,
            hint: "DynamoDB refused the credentials; check the AWS profile or AWS_ACCESS_KEY_ID".into(),
            source: Some(err.into()),
        },
        _ => StoreError::Other { operation, source: err.into() },
    }
}

/// The cancellation reason codes of a cancelled transaction, one per item (`None` where that item
/// was fine), or the error translated when it is anything else.
fn cancellation_reasons(
    operation: &str,
    err: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Result<Vec<Option<String>>, StoreError> {
    if let SdkError::ServiceError(context) = &err
        && let TransactWriteItemsError::TransactionCanceledException(cancelled) = context.err()
    {
        let codes: Vec<Option<String>> = cancelled
            .cancellation_reasons()
            .iter()
            .map(|r| r.code().filter(|c| *c != "None").map(str::to_owned))
            .collect();
        let transient = ["TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"];
        if codes.iter().flatten().any(|c| transient.contains(&c.as_str())) {
            return Err(StoreError::Retryable { operation: operation.to_owned(), source: err.into() });
        }
        return Ok(codes);
    }
    Err(store_error(operation, err))
}

/// A missing table is not a missing item: say how to create it.
fn table_missing(err: StoreError, table: &str) -> StoreError {
    match err {
        StoreError::NotFound { what } => StoreError::Unavailable {
            operation: what,
            hint: format!("table {table} does not exist; create it with `meter store init`"),
            source: None,
        },
        other => other,
    }
}

fn build_error(operation: &str, err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Other { operation: operation.into(), source: err.into() }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}

type Item = HashMap<String, AttributeValue>;

fn get_s<'a>(item: &'a Item, name: &str) -> Result<Option<&'a str>, StoreError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(value)) => Ok(Some(value)),
        Some(_) => Err(corrupt(format!("attribute {name} is not a string"))),
    }
}

fn req_s<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, name)?.ok_or_else(|| corrupt(format!("attribute {name} is missing")))
}

fn get_n(item: &Item, name: &str) -> Result<u64, StoreError> {
    match item.get(name) {
        None => Ok(0),
        Some(AttributeValue::N(value)) => {
            value.parse().map_err(|_| corrupt(format!("attribute {name} = {value} is not a count")))
        }
        Some(_) => Err(corrupt(format!("attribute {name} is not a number"))),
    }
}

fn get_instant(item: &Item, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    get_s(item, name)?
        .map(|t| {
            parse_instant(t).map_err(|_| corrupt(format!("attribute {name} = {t:?} is not a timestamp")))
        })
        .transpose()
}

fn tally_of(item: &Item) -> Result<Tally, StoreError> {
    Ok(Tally {
        successful_calls: get_n(item, "successfulCalls")?,
        failed_calls: get_n(item, "failedCalls")?,
        usage_count: get_n(item, "usageCount")?,
    })
}

fn record_from_item(item: &Item) -> Result<ApiKeyRecord, StoreError> {
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
        totals: tally_of(item)?,
        id,
    })
}

fn item_from_record(record: &ApiKeyRecord) -> Item {
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
    let optional = [
        ("plan", record.plan.as_ref().map(|p| p.as_str().to_owned())),
        ("name", record.name.clone()),
        ("revokedAt", record.revoked_at.map(format_instant)),
        ("lastUsed", record.last_used.map(format_instant)),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            item.insert(name.to_owned(), AttributeValue::S(value));
        }
    }
    item
}

impl KeyStore for DynamoStore {
    async fn insert_key(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.tables.api_keys)
            .set_item(Some(item_from_record(record)))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        match put.map_err(|e| store_error("insert key", e)) {
            Ok(_) => Ok(()),
            Err(StoreError::ConditionFailed { .. }) => {
                Err(StoreError::AlreadyExists { what: format!("key {}", record.id) })
            }
            Err(other) => Err(table_missing(other, &self.tables.api_keys)),
        }
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<ApiKeyRecord>, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| table_missing(store_error("get key", e), &self.tables.api_keys))?;
        got.item().map(record_from_item).transpose()
    }

    async fn find_key_by_hash(&self, hashed_key: &HashedKey) -> Result<Option<ApiKeyRecord>, StoreError> {
        let found = self
            .client
            .query()
            .table_name(&self.tables.api_keys)
            .index_name(HASHED_KEY_INDEX)
            .key_condition_expression("hashedKey = :h")
            .expression_attribute_values(":h", s(hashed_key.as_str()))
            .limit(2)
            .send()
            .await
            .map_err(|e| table_missing(store_error("find key by hash", e), &self.tables.api_keys))?;
        let ids = found.items().iter().map(|item| req_s(item, "id")).collect::<Result<Vec<_>, _>>()?;
        let id = match ids.as_slice() {
            [] => return Ok(None),
            [id] => KeyId::parse(id).map_err(|e| corrupt(e.to_string()))?,
            _ => return Err(corrupt("two keys share one hashedKey")),
        };
        // The index is eventually consistent; the item read by id is not, and is what decides.
        Ok(self.get_key(&id).await?.filter(|record| record.hashed_key == *hashed_key))
    }

    async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.tables.api_keys)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| table_missing(store_error("list keys", e), &self.tables.api_keys))?;
            for item in page.items() {
                records.push(record_from_item(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    async fn revoke_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<Revocation, StoreError> {
        // Mark first, bump second: an authorizer that sees the new epoch re-reads a key that is
        // already revoked. Returning the old item gives both the previous status and the new item
        // without another read.
        let marked = self
            .client
            .update_item()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(id)))
            .update_expression("SET #status = :revoked, revokedAt = if_not_exists(revokedAt, :at)")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":revoked", s(KeyStatus::Revoked.as_str()))
            .expression_attribute_values(":at", s(&format_instant(at)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| match store_error("revoke", e) {
                StoreError::ConditionFailed { .. } => StoreError::NotFound { what: format!("key {id}") },
                other => table_missing(other, &self.tables.api_keys),
            })?;
        let before = marked
            .attributes()
            .map(record_from_item)
            .transpose()?
            .ok_or_else(|| corrupt(format!("revoking key {id} returned no previous item")))?;
        let bumped = self
            .client
            .update_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::epoch_key()))
            .update_expression("ADD epoch :one")
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| {
                table_missing(store_error("bump revocation epoch", e), &self.tables.usage_counters)
            })?;
        let epoch = bumped.attributes().map_or(Ok(0), |item| get_n(item, "epoch"))?;
        let was_already_revoked = before.status == KeyStatus::Revoked;
        let record =
            ApiKeyRecord { status: KeyStatus::Revoked, revoked_at: before.revoked_at.or(Some(at)), ..before };
        Ok(Revocation { record, was_already_revoked, epoch })
    }

    async fn revocation_epoch(&self) -> Result<u64, StoreError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::epoch_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                table_missing(store_error("read revocation epoch", e), &self.tables.usage_counters)
            })?;
        got.item().map_or(Ok(0), |item| get_n(item, "epoch"))
    }
}

impl UsageReader for DynamoStore {
    async fn month_usage(&self, key_id: &KeyId, month: Month) -> Result<Vec<DayUsage>, StoreError> {
        let mut days = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.usage_counters)
                .key_condition_expression("keyId = :k AND begins_with(#day, :month)")
                .expression_attribute_names("#day", "day")
                .expression_attribute_values(":k", s(key_id.as_str()))
                .expression_attribute_values(":month", s(&month.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| table_missing(store_error("month usage", e), &self.tables.usage_counters))?;
            for item in page.items() {
                days.push(day_usage_of(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        days.sort_by_key(|d| d.day);
        Ok(days)
    }
}

fn day_usage_of(item: &Item) -> Result<DayUsage, StoreError> {
    Ok(DayUsage {
        key_id: KeyId::parse(req_s(item, "keyId")?).map_err(|e| corrupt(e.to_string()))?,
        day: req_s(item, "day")?
            .parse()
            .map_err(|e: meter_model::time::BucketParseError| corrupt(e.to_string()))?,
        tally: tally_of(item)?,
        last_used: get_instant(item, "lastUsed")?,
        reconciled_at: get_instant(item, "reconciledAt")?,
    })
}

/// A signed count for an `ADD`.
fn signed(value: i128) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

impl CounterCorrector for DynamoStore {
    async fn day_items(&self, from: Day, to: Day) -> Result<Vec<DayUsage>, StoreError> {
        // A nightly scan: the day is the sort key, so no key condition can select a range of days
        // across keys. Bookkeeping partitions start with '#' and are filtered out.
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.tables.usage_counters)
                .filter_expression("#day BETWEEN :from AND :to AND NOT begins_with(keyId, :hash)")
                .expression_attribute_names("#day", "day")
                .expression_attribute_values(":from", s(&from.to_string()))
                .expression_attribute_values(":to", s(&to.to_string()))
                .expression_attribute_values(":hash", s("#"))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| table_missing(store_error("read day items", e), &self.tables.usage_counters))?;
            for item in page.items() {
                out.push(day_usage_of(item)?);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        out.sort_by(|a, b| (&a.key_id, a.day).cmp(&(&b.key_id, b.day)));
        Ok(out)
    }

    async fn day_item(&self, key_id: &KeyId, day: Day) -> Result<Option<DayUsage>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::day_key(key_id, &day.to_string())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| table_missing(store_error("read day item", e), &self.tables.usage_counters))?;
        out.item().map(day_usage_of).transpose()
    }

    async fn correct_day(&self, correction: &DayCorrection) -> Result<CorrectionOutcome, StoreError> {
        let op = "correct day";
        let target = correction.target;
        let mut day = Update::builder()
            .table_name(&self.tables.usage_counters)
            .set_key(Some(Self::day_key(&correction.key_id, &correction.day.to_string())))
            .update_expression(
                "SET successfulCalls = :s, failedCalls = :f, usageCount = :u, reconciledAt = :r",
            )
            .expression_attribute_values(":s", n(target.successful_calls))
            .expression_attribute_values(":f", n(target.failed_calls))
            .expression_attribute_values(":u", n(target.usage_count))
            .expression_attribute_values(":r", s(&format_instant(correction.at)));
        day = match correction.expected {
            None => day.condition_expression("attribute_not_exists(keyId)"),
            Some(expected) => {
                // A counter the item lacks reads as 0, so "0" must also accept a missing attribute.
                let mut clauses = Vec::new();
                for (name, placeholder, value) in [
                    ("successfulCalls", ":es", expected.successful_calls),
                    ("failedCalls", ":ef", expected.failed_calls),
                    ("usageCount", ":eu", expected.usage_count),
                ] {
                    clauses.push(if value == 0 {
                        format!("(attribute_not_exists({name}) OR {name} = {placeholder})")
                    } else {
                        format!("{name} = {placeholder}")
                    });
                    day = day.expression_attribute_values(placeholder, n(value));
                }
                day.condition_expression(format!("attribute_exists(keyId) AND {}", clauses.join(" AND ")))
            }
        };
        let delta = correction.delta();
        let total = Update::builder()
            .table_name(&self.tables.api_keys)
            .set_key(Some(Self::key_of(&correction.key_id)))
            .update_expression("ADD successfulCalls :s, failedCalls :f, usageCount :u")
            .expression_attribute_values(":s", signed(delta.successful_calls))
            .expression_attribute_values(":f", signed(delta.failed_calls))
            .expression_attribute_values(":u", signed(delta.usage_count))
            .condition_expression("attribute_exists(id)")
            .build()
            .map_err(|e| build_error(op, e))?;
        let items = vec![
            TransactWriteItem::builder().update(day.build().map_err(|e| build_error(op, e))?).build(),
            TransactWriteItem::builder().update(total).build(),
        ];
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(CorrectionOutcome::Applied),
            Err(err) => {
                let reasons = cancellation_reasons(op, err)
                    .map_err(|e| table_missing(e, &self.tables.usage_counters))?;
                let failed =
                    |i: usize| reasons.get(i).and_then(Option::as_deref) == Some("ConditionalCheckFailed");
                if failed(1) {
                    Ok(CorrectionOutcome::UnknownKey)
                } else if failed(0) {
                    Ok(CorrectionOutcome::Changed)
                } else {
                    Err(StoreError::Other {
                        operation: op.into(),
                        source: format!("transaction cancelled: {reasons:?}").into(),
                    })
                }
            }
        }
    }

    async fn record_run(&self, run: &ReconcileRun) -> Result<(), StoreError> {
        let record = serde_json::to_string(run)
            .map_err(|e| StoreError::Other { operation: "record run".into(), source: e.into() })?;
        let expires = run.started_at + chrono::Duration::days(RUN_RECORD_TTL_DAYS);
        self.client
            .put_item()
            .table_name(&self.tables.usage_counters)
            .item("keyId", s(RECONCILE_PARTITION))
            .item("day", s(&format!("{}#{}", format_instant(run.started_at), run.run_id)))
            .item("record", s(&record))
            .item(TTL_ATTRIBUTE, AttributeValue::N(expires.timestamp().to_string()))
            .send()
            .await
            .map_err(|e| table_missing(store_error("record run", e), &self.tables.usage_counters))?;
        Ok(())
    }
}

/// An item whose `lastUsed` is moved forward, by its primary key.
enum LastUsedItem {
    Key(HashMap<String, AttributeValue>),
    Day(HashMap<String, AttributeValue>),
}

/// One transaction's share of a batch: for each key, the run of its days that falls in this chunk.
struct Chunk<'a> {
    parts: Vec<(&'a KeyId, &'a [DayDelta])>,
}

/// Splits a batch into transactions of at most 99 counter items plus the marker. The plan covers every
/// key in the batch, known or not, in the batch's order, so a redelivery is chunked exactly the same
/// way whatever keys exist by then; a key's total item travels with each run of its days.
fn plan_chunks(batch: &BatchDelta) -> Vec<Chunk<'_>> {
    let capacity = MAX_TRANSACTION_ITEMS - 1;
    let mut chunks = Vec::new();
    let mut current = Chunk { parts: Vec::new() };
    let mut used = 0;
    for (key, days) in batch.by_key() {
        let mut rest = days;
        while !rest.is_empty() {
            if capacity - used < 2 {
                chunks.push(std::mem::replace(&mut current, Chunk { parts: Vec::new() }));
                used = 0;
            }
            let take = rest.len().min(capacity - used - 1);
            current.parts.push((key, &rest[..take]));
            used += 1 + take;
            rest = &rest[take..];
        }
    }
    if !current.parts.is_empty() {
        chunks.push(current);
    }
    chunks
}

fn add_counts(
    update: aws_sdk_dynamodb::types::builders::UpdateBuilder,
    tally: Tally,
) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
    update
        .update_expression("ADD successfulCalls :s, failedCalls :f, usageCount :u")
        .expression_attribute_values(":s", n(tally.successful_calls))
        .expression_attribute_values(":f", n(tally.failed_calls))
        .expression_attribute_values(":u", n(tally.usage_count))
}

impl DynamoStore {
    /// Which of `ids` exist, read consistently in batches of 100.
    async fn existing_keys(&self, ids: &[&KeyId]) -> Result<std::collections::HashSet<KeyId>, StoreError> {
        let mut existing = std::collections::HashSet::new();
        for group in ids.chunks(MAX_BATCH_GET_KEYS) {
            let mut request = KeysAndAttributes::builder()
                .set_keys(Some(group.iter().map(|id| Self::key_of(id)).collect()))
                .projection_expression("id")
                .consistent_read(true)
                .build()
                .map_err(|e| build_error("look up keys", e))?;
            for attempt in 0.. {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.tables.api_keys, request)
                    .send()
                    .await
                    .map_err(|e| table_missing(store_error("look up keys", e), &self.tables.api_keys))?;
                for item in out.responses().and_then(|r| r.get(&self.tables.api_keys)).into_iter().flatten() {
                    existing.insert(KeyId::parse(req_s(item, "id")?).map_err(|e| corrupt(e.to_string()))?);
                }
                match out.unprocessed_keys.and_then(|mut u| u.remove(&self.tables.api_keys)) {
                    Some(rest) if !rest.keys().is_empty() => {
                        if attempt == 8 {
                            return Err(StoreError::Retryable {
                                operation: "look up keys".into(),
                                source: "DynamoDB left keys unprocessed after 8 retries".into(),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
                        request = rest;
                    }
                    _ => break,
                }
            }
        }
        Ok(existing)
    }

    fn marker(
        &self,
        batch: &BatchDelta,
        index: usize,
        of: usize,
        applied_at: DateTime<Utc>,
    ) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.tables.usage_counters)
            .item("keyId", s(&format!("{BATCH_PARTITION_PREFIX}{}", batch.batch_id())))
            .item("day", s(&format!("chunk#{index:04}")))
            .item("chunks", n(of as u64))
            .item("appliedAt", s(&format_instant(applied_at)))
            .item(TTL_ATTRIBUTE, AttributeValue::N((applied_at + MARKER_TTL).timestamp().to_string()))
            .condition_expression("attribute_not_exists(keyId)")
            .build()
            .map_err(|e| build_error("apply batch", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn key_total(&self, key: &KeyId, tally: Tally) -> Result<TransactWriteItem, StoreError> {
        let update = add_counts(
            Update::builder().table_name(&self.tables.api_keys).set_key(Some(Self::key_of(key))),
            tally,
        )
        .condition_expression("attribute_exists(id)")
        .build()
        .map_err(|e| build_error("apply batch", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn day_key(key: &KeyId, day: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("keyId".to_owned(), s(key.as_str())), ("day".to_owned(), s(day))])
    }

    fn day_counts(&self, delta: &DayDelta) -> Result<TransactWriteItem, StoreError> {
        let key = Self::day_key(&delta.key_id, &delta.day.to_string());
        let update = add_counts(
            Update::builder().table_name(&self.tables.usage_counters).set_key(Some(key)),
            delta.tally,
        )
        .build()
        .map_err(|e| build_error("apply batch", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Moves `lastUsed` forward (never back) on an item that exists. A maximum is idempotent, so
    /// this needs no marker: it runs after the counts, and again on any retry.
    async fn advance_last_used(&self, item: LastUsedItem, at: DateTime<Utc>) -> Result<(), StoreError> {
        let (table, key, exists) = match item {
            LastUsedItem::Key(key) => (&self.tables.api_keys, key, "id"),
            LastUsedItem::Day(key) => (&self.tables.usage_counters, key, "keyId"),
        };
        let result = self
            .client
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression("SET lastUsed = :t")
            .condition_expression(format!(
                "attribute_exists({exists}) AND (attribute_not_exists(lastUsed) OR lastUsed < :t)"
            ))
            .expression_attribute_values(":t", s(&format_instant(at)))
            .send()
            .await;
        match result.map_err(|e| store_error("advance lastUsed", e)) {
            Ok(_) | Err(StoreError::ConditionFailed { .. }) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

impl UsageWriter for DynamoStore {
    async fn apply_batch(
        &self,
        batch: &BatchDelta,
        applied_at: DateTime<Utc>,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport::default();
        let ids: Vec<&KeyId> = batch.by_key().map(|(key, _)| key).collect();
        let known = self.existing_keys(&ids).await?;
        let chunks = plan_chunks(batch);
        for (index, chunk) in chunks.iter().enumerate() {
            let mut items = vec![self.marker(batch, index, chunks.len(), applied_at)?];
            for (key, days) in chunk.parts.iter().filter(|(key, _)| known.contains(*key)) {
                items.push(self.key_total(key, days.iter().map(|d| d.tally).sum())?);
                for day in *days {
                    items.push(self.day_counts(day)?);
                }
            }
            if items.len() == 1 {
                continue; // only unknown keys: nothing to count, nothing to mark
            }
            if self.chunk_limit.is_some_and(|limit| report.chunks_applied >= limit) {
                return Err(StoreError::Retryable {
                    operation: "apply batch".into(),
                    source: format!("fault drill: stopped after {} chunk(s)", report.chunks_applied).into(),
                });
            }
            let count = items.len();
            let sent = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
            match sent {
                Ok(_) => {
                    report.chunks_applied += 1;
                    report.items_written += count;
                }
                Err(err) => {
                    let reasons = cancellation_reasons("apply batch", err)
                        .map_err(|e| table_missing(e, &self.tables.usage_counters))?;
                    if reasons.first().and_then(Option::as_deref) == Some("ConditionalCheckFailed") {
                        report.chunks_already_applied += 1;
                    } else {
                        return Err(StoreError::Corrupt {
                            detail: format!(
                                "batch {} chunk {index}: a key item vanished while applying ({reasons:?})",
                                batch.batch_id()
                            ),
                        });
                    }
                }
            }
        }
        for (key, days) in batch.by_key().filter(|(key, _)| !known.contains(*key)) {
            report.unknown_keys.insert(key.clone(), days.iter().map(|d| d.tally).sum());
        }
        let mut advances = Vec::new();
        for (key, days) in batch.by_key().filter(|(key, _)| known.contains(*key)) {
            if let Some(latest) = days.iter().map(|d| d.last_used).max() {
                advances.push((LastUsedItem::Key(Self::key_of(key)), latest));
            }
            for day in days {
                advances.push((LastUsedItem::Day(Self::day_key(key, &day.day.to_string())), day.last_used));
            }
        }
        report.items_written += advances.len();
        let mut results = futures::stream::iter(advances)
            .map(|(item, at)| self.advance_last_used(item, at))
            .buffer_unordered(LAST_USED_CONCURRENCY);
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meter_model::BatchId;

    fn batch(keys: usize, days_per_key: usize) -> BatchDelta {
        let start: meter_model::Day = "2026-11-01".parse().unwrap();
        let entries = (0..keys).flat_map(|k| {
            let key = KeyId::parse(&format!("key{k:05}")).unwrap();
            std::iter::successors(Some(start), |d| Some(d.succ())).take(days_per_key).map(move |day| {
                DayDelta {
                    key_id: key.clone(),
                    day,
                    tally: Tally { successful_calls: 1, failed_calls: 0, usage_count: 1 },
                    last_used: Utc::now(),
                }
            })
        });
        BatchDelta::new(BatchId::from_digest(&[9]), entries.collect::<Vec<_>>())
    }

    fn items_of(chunk: &Chunk<'_>) -> usize {
        chunk.parts.iter().map(|(_, days)| 1 + days.len()).sum()
    }

    #[test]
    fn chunks_fit_a_transaction_with_the_marker_and_cover_every_day_once() {
        for (keys, days) in [(1, 1), (49, 1), (50, 1), (120, 2), (3, 150), (333, 3)] {
            let batch = batch(keys, days);
            let chunks = plan_chunks(&batch);
            assert!(
                chunks.iter().all(|c| items_of(c) < MAX_TRANSACTION_ITEMS),
                "room for the marker: {keys}x{days}"
            );
            let covered: Vec<&DayDelta> =
                chunks.iter().flat_map(|c| c.parts.iter().flat_map(|(_, d)| d.iter())).collect();
            assert_eq!(covered.len(), batch.days().len());
            assert!(covered.iter().zip(batch.days()).all(|(a, b)| *a == b), "in batch order");
        }
        // 49 keys of one day each take 98 items: one chunk. The 50th key starts a second one.
        assert_eq!(plan_chunks(&batch(49, 1)).len(), 1);
        assert_eq!(plan_chunks(&batch(50, 1)).len(), 2);
    }
}
