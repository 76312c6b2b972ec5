//! SQLite's errors as [`StoreError`]s, and the checks that turn a bad stored value into `Corrupt`.

use chrono::{DateTime, Utc};
use meter_model::StoreError;
use meter_model::time::parse_instant;
use rusqlite::ErrorCode;

pub(super) fn sql_error(operation: &str, err: rusqlite::Error) -> StoreError {
    let code = err.sqlite_error_code();
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            StoreError::Retryable { operation: operation.into(), source: err.into() }
        }
        Some(
            ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::NotADatabase,
        ) => StoreError::Unavailable {
            operation: operation.into(),
            hint: "the SQLite file cannot be used; check the path given by --store/METER_STORE".into(),
            source: Some(err.into()),
        },
        _ => StoreError::Other { operation: operation.into(), source: err.into() },
    }
}

pub(super) fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Corrupt { detail: format!("{what} = {value} exceeds SQLite's range") })
}

pub(super) fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt { detail: detail.into() }
}

pub(super) fn instant(text: Option<String>, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    text.map(|t| parse_instant(&t).map_err(|_| corrupt(format!("{column} {t:?} is not a timestamp"))))
        .transpose()
}

pub(super) fn counter(value: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| corrupt(format!("{column} is negative")))
}
