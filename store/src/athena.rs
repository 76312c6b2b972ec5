//! Athena behind the [`QueryEngine`] port: start a query in a workgroup, wait for it with backoff, and
//! read its result file (CSV) from S3. Reading the file rather than paging `GetQueryResults` (1,000 rows
//! a call) keeps a rollup of millions of key-days to one GET.

use std::time::Duration;

use aws_sdk_athena::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, ResultConfiguration};
use meter_model::{QueryEngine, QueryRows, StoreError};

/// Where queries run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AthenaSettings {
    /// The workgroup (the deployed stack's `meter-<env>`, which enforces its result location and scan
    /// limit).
    pub workgroup: String,
    /// The Glue database holding the `usage` table (`meter_<env>`).
    pub database: String,
    /// `s3://…/` for result files, for a workgroup that does not set one.
    pub output_location: Option<String>,
    /// How long to wait for a query before giving up on it (and cancelling it).
    pub timeout: Duration,
}

/// First pause between status checks; it doubles up to [`MAX_POLL`]. Athena queries take seconds at
/// least, so quick early checks cost little and later ones need not be frequent.
const FIRST_POLL: Duration = Duration::from_millis(200);
const MAX_POLL: Duration = Duration::from_secs(5);

/// Athena, configured.
#[derive(Debug, Clone)]
pub struct AthenaEngine {
    athena: aws_sdk_athena::Client,
    s3: aws_sdk_s3::Client,
    settings: AthenaSettings,
}

impl AthenaEngine {
    /// Athena and S3 clients from the loaded AWS configuration.
    pub async fn new(settings: AthenaSettings) -> Self {
        let sdk = crate::sdk::load_aws_config().await;
        Self { athena: aws_sdk_athena::Client::new(&sdk), s3: crate::s3::client(&sdk), settings }
    }

    async fn start(&self, sql: &str, parameters: &[String]) -> Result<String, StoreError> {
        let mut request = self
            .athena
            .start_query_execution()
            .query_string(sql)
            .work_group(&self.settings.workgroup)
            .query_execution_context(
                QueryExecutionContext::builder().database(&self.settings.database).build(),
            )
            .set_execution_parameters((!parameters.is_empty()).then(|| parameters.to_vec()));
        if let Some(output) = &self.settings.output_location {
            request =
                request.result_configuration(ResultConfiguration::builder().output_location(output).build());
        }
        let started =
            request.send().await.map_err(|e| athena_error("StartQueryExecution", &self.settings, e))?;
        started
            .query_execution_id
            .ok_or_else(|| StoreError::Corrupt { detail: "Athena started a query without an id".into() })
    }

    /// Waits for the query; answers its result file's location and the bytes it scanned.
    async fn wait(&self, id: &str) -> Result<(String, Option<u64>), StoreError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        let mut pause = FIRST_POLL;
        loop {
            let answer = self
                .athena
                .get_query_execution()
                .query_execution_id(id)
                .send()
                .await
                .map_err(|e| athena_error("GetQueryExecution", &self.settings, e))?;
            let Some(execution) = answer.query_execution else {
                return Err(StoreError::Corrupt {
                    detail: format!("Athena answered nothing for query {id}"),
                });
            };
            let status = execution.status.clone();
            match status.as_ref().and_then(|s| s.state.clone()) {
                Some(QueryExecutionState::Succeeded) => {
                    let location = execution
                        .result_configuration
                        .and_then(|c| c.output_location)
                        .ok_or_else(|| StoreError::Corrupt {
                            detail: format!("Athena query {id} succeeded without a result location"),
                        })?;
                    let scanned = execution
                        .statistics
                        .and_then(|s| s.data_scanned_in_bytes)
                        .and_then(|b| u64::try_from(b).ok());
                    return Ok((location, scanned));
                }
                Some(QueryExecutionState::Failed | QueryExecutionState::Cancelled) => {
                    let reason = status
                        .as_ref()
                        .and_then(|s| s.state_change_reason.clone())
                        .unwrap_or_else(|| "no reason given".into());
                    let source = std::io::Error::other(format!("Athena query {id}: {reason}")).into();
                    let operation = format!("the Athena query {id} in workgroup {}", self.settings.workgroup);
                    let retryable = status.and_then(|s| s.athena_error).is_some_and(|e| e.retryable);
                    return Err(if retryable {
                        StoreError::Retryable { operation, source }
                    } else {
                        StoreError::Other { operation, source }
                    });
                }
                _ => {}
            }
            if tokio::time::Instant::now() + pause > deadline {
                // Best effort: a query nobody waits for should not keep scanning (and billing).
                let _ = self.athena.stop_query_execution().query_execution_id(id).send().await;
                return Err(StoreError::Unavailable {
                    operation: format!("the Athena query {id}"),
                    hint: format!(
                        "it did not finish within {} s and was cancelled; check the workgroup's queue, or \
                         reconcile fewer days per run",
                        self.settings.timeout.as_secs()
                    ),
                    source: None,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    async fn read_result(&self, location: &str) -> Result<QueryRows, StoreError> {
        let (bucket, key) =
            location.strip_prefix("s3://").and_then(|rest| rest.split_once('/')).ok_or_else(|| {
                StoreError::Corrupt { detail: format!("Athena's result location {location} is not s3://") }
            })?;
        let body = crate::s3::get_object(&self.s3, bucket, key, None, "read the query result").await?;
        parse_result(&body, location)
    }
}

impl QueryEngine for AthenaEngine {
    async fn run(&self, sql: &str, parameters: &[String]) -> Result<QueryRows, StoreError> {
        let id = self.start(sql, parameters).await?;
        tracing::info!(query_execution_id = %id, workgroup = %self.settings.workgroup, "Athena query started");
        let (location, scanned_bytes) = self.wait(&id).await?;
        let mut rows = self.read_result(&location).await?;
        rows.scanned_bytes = scanned_bytes;
        tracing::info!(query_execution_id = %id, rows = rows.rows.len(), scanned_bytes, "Athena query read");
        Ok(rows)
    }
}

/// Athena's result file: CSV with a header row, every value quoted, NULL as an empty field.
fn parse_result(bytes: &[u8], location: &str) -> Result<QueryRows, StoreError> {
    let corrupt = |e: csv::Error| StoreError::Corrupt { detail: format!("query result {location}: {e}") };
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let columns = reader.headers().map_err(corrupt)?.iter().map(str::to_owned).collect();
    let rows = reader
        .records()
        .map(|record| record.map(|r| r.iter().map(str::to_owned).collect()))
        .collect::<Result<_, _>>()
        .map_err(corrupt)?;
    Ok(QueryRows { columns, rows, scanned_bytes: None })
}

/// Translates an Athena error into the domain's terms; the one place that looks at Athena error codes.
fn athena_error<E, R>(operation: &str, settings: &AthenaSettings, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, err) = match crate::sdk::service_code(operation, "Athena", err) {
        Ok(answer) => answer,
        Err(unreachable) => return unreachable,
    };
    let operation = operation.to_owned();
    match code.as_deref() {
        Some("TooManyRequestsException" | "ThrottlingException" | "InternalServerException") => {
            StoreError::Retryable { operation, source: err.into() }
        }
        Some("AccessDeniedException" | "UnrecognizedClientException" | "ExpiredTokenException") => {
            StoreError::Unavailable {
                operation,
                hint: format!(
                    "Athena refused access; the caller needs athena:StartQueryExecution on workgroup {}, \
                     glue:GetTable on {}.usage and the result bucket",
                    settings.workgroup, settings.database
                ),
                source: Some(err.into()),
            }
        }
        Some("InvalidRequestException" | "ResourceNotFoundException") => StoreError::Unavailable {
            operation,
            hint: format!(
                "Athena refused the request (its message is below); check that workgroup {} and database {} \
                 exist (the deployed stack's outputs AthenaWorkgroup and GlueTable)",
                settings.workgroup, settings.database
            ),
            source: Some(err.into()),
        },
        _ => StoreError::Other { operation, source: err.into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_file_is_read_with_its_header_quotes_and_nulls() {
        let csv = "\"key_id\",\"day\",\"usage_count\"\n\"abc\",\"2026-11-01\",\"3\"\n\"a,b\",,\"1\"\n";
        let rows = parse_result(csv.as_bytes(), "s3://b/r.csv").unwrap();
        assert_eq!(rows.columns, ["key_id", "day", "usage_count"]);
        assert_eq!(rows.rows, [vec!["abc", "2026-11-01", "3"], vec!["a,b", "", "1"]]);
    }

    #[test]
    fn a_damaged_result_file_is_a_clear_error() {
        let err = parse_result(b"\"a\",\"b\"\n\"1\"\n", "s3://b/r.csv").unwrap_err();
        assert!(err.to_string().contains("s3://b/r.csv"), "{err}");
    }
}
