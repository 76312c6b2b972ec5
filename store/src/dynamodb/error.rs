//! Translating the SDK's errors into [`StoreError`]s: the one place that looks at DynamoDB error codes.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use meter_model::StoreError;

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

/// A failed write that must not be applied twice, and whether DynamoDB refused it before applying
/// anything (throttling, a conflict with a transaction, a failed condition, a bad request), so that
/// sending it again cannot apply it twice. A timeout, a lost connection or a 500 may come after the
/// write was applied.
pub(super) struct WriteFailure {
    /// The error, translated.
    pub(super) err: StoreError,
    /// Refused before anything was applied.
    pub(super) unapplied: bool,
}

impl WriteFailure {
    /// The failure of `operation` on `table`.
    pub(super) fn of<E, R>(operation: &str, table: &str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let unapplied = refused_unapplied(&err);
        Self { err: table_missing(store_error(operation, err), table), unapplied }
    }

    /// Refused unapplied by a busy table (throttling, a transaction conflict): safe to send again,
    /// and likely to pass. A failed condition is refused unapplied too, but sending it again would
    /// fail the same way.
    pub(super) fn worth_resending(&self) -> bool {
        self.unapplied && matches!(self.err, StoreError::Retryable { .. })
    }
}

fn refused_unapplied<E, R>(err: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(context) => matches!(
            context.err().code(),
            Some(
                "ThrottlingException"
                    | "ProvisionedThroughputExceededException"
                    | "RequestLimitExceeded"
                    | "TransactionConflictException"
                    | "ConditionalCheckFailedException"
                    | "ValidationException"
                    | "ResourceNotFoundException"
            )
        ),
        SdkError::ConstructionFailure(_) => true,
        _ => false,
    }
}

/// The cancellation reason codes of a cancelled transaction, one per item (`None` where that item
/// was fine), or the error translated when it is anything else.
pub(super) fn cancellation_reasons(
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
pub(super) fn table_missing(err: StoreError, table: &str) -> StoreError {
    match err {
        StoreError::NotFound { what } => StoreError::Unavailable {
            operation: what,
            hint: format!("table {table} does not exist; create it with `meter store init`"),
            source: None,
        },
        other => other,
    }
}

pub(super) fn build_error(operation: &str, err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Other { operation: operation.into(), source: err.into() }
}

/// A conditional write's outcome as whether it applied: its condition failing is an answer (false),
/// not an error.
pub(super) fn applied<T>(outcome: Result<T, StoreError>) -> Result<bool, StoreError> {
    match outcome {
        Ok(_) => Ok(true),
        Err(StoreError::ConditionFailed { .. }) => Ok(false),
        Err(err) => Err(err),
    }
}
