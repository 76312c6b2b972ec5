//! S3 plumbing shared by the archive and the reports: the client and the translation of its errors.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use meter_model::StoreError;

/// An S3 client from the loaded AWS configuration. Path-style addressing when an endpoint is set
/// (emulators and S3-compatible stores serve buckets by path, not by host name).
#[must_use]
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let config =
        aws_sdk_s3::config::Builder::from(sdk).force_path_style(sdk.endpoint_url().is_some()).build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An object's body, whole or the HTTP `range` of it. `operation` names the read in errors; a missing
/// object is [`StoreError::NotFound`] with its `s3://` location.
pub(crate) async fn get_object(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    range: Option<String>,
    operation: &str,
) -> Result<bytes::Bytes, StoreError> {
    let object = client.get_object().bucket(bucket).key(key).set_range(range).send().await.map_err(|e| {
        match store_error(operation, bucket, e) {
            StoreError::NotFound { .. } => StoreError::NotFound { what: format!("s3://{bucket}/{key}") },
            other => other,
        }
    })?;
    let body = object.body.collect().await.map_err(|e| StoreError::Retryable {
        operation: format!("{operation} s3://{bucket}/{key}"),
        source: e.into(),
    })?;
    Ok(body.into_bytes())
}

/// Translates an S3 error into the domain's terms; the one place that looks at S3 error codes.
pub(crate) fn store_error<E, R>(operation: &str, bucket: &str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, err) = match crate::sdk::service_code(operation, "S3", err) {
        Ok(answer) => answer,
        Err(unreachable) => return unreachable,
    };
    let operation = operation.to_owned();
    match code.as_deref() {
        Some("SlowDown" | "InternalError" | "ServiceUnavailable" | "RequestTimeout") => {
            StoreError::Retryable { operation, source: err.into() }
        }
        Some("PreconditionFailed" | "ConditionalRequestConflict") => {
            StoreError::ConditionFailed { what: operation }
        }
        Some("NoSuchBucket") => StoreError::Unavailable {
            operation,
            hint: format!("bucket {bucket} does not exist"),
            source: Some(err.into()),
        },
        Some("NoSuchKey" | "NotFound") => StoreError::NotFound { what: format!("object for {operation}") },
        Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken") => {
            StoreError::Unavailable {
                operation,
                hint: format!(
                    "S3 refused access to bucket {bucket}; check the credentials and the bucket policy"
                ),
                source: Some(err.into()),
            }
        }
        _ => StoreError::Other { operation, source: err.into() },
    }
}
