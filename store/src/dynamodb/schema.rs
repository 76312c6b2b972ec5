//! Creating the two tables (with the GSI and the TTL) where they do not exist: for emulators and
//! first-time local use; in AWS the infrastructure creates them.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use meter_model::StoreError;

use super::error::{build_error, store_error};
use super::{DynamoStore, HASHED_KEY_INDEX, TTL_ATTRIBUTE};

impl DynamoStore {
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
}

/// An on-demand table with string key attributes `keys` (hash, then optional range).
pub(super) fn table(client: &Client, name: &str, keys: &[(&str, KeyType)]) -> CreateTableFluentBuilder {
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

pub(super) fn attribute(name: &str) -> AttributeDefinition {
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
