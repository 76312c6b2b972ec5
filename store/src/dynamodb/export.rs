//! Reading another system's key table whole (`meter keys import --from-dynamodb TABLE`): each item as
//! its attributes in text, so the importer validates one row shape whatever the source.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use meter_model::StoreError;

use super::error::{store_error, table_missing};

/// Every item of `table` (a consistent scan, page by page), its string, number and boolean attributes
/// as text; an attribute of another type reads as `<list>`, `<map>`, … so that a row using it as a
/// field fails validation naming it.
pub async fn items_as_text(table: &str) -> Result<Vec<BTreeMap<String, String>>, StoreError> {
    let client = aws_sdk_dynamodb::Client::new(&crate::sdk::load_aws_config().await);
    let mut rows = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| table_missing(store_error(&format!("read table {table}"), e), table))?;
        for item in page.items() {
            rows.push(item.iter().map(|(name, value)| (name.clone(), text_of(value))).collect());
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return Ok(rows);
        }
    }
}

fn text_of(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(text) | AttributeValue::N(text) => text.clone(),
        AttributeValue::Bool(flag) => flag.to_string(),
        AttributeValue::Null(_) => String::new(),
        AttributeValue::L(_) => "<list>".into(),
        AttributeValue::M(_) => "<map>".into(),
        AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_) => "<set>".into(),
        _ => "<binary>".into(),
    }
}
