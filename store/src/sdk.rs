//! What every AWS adapter shares: the one AWS configuration of the process, and what each asks first of
//! an SDK error: did the call reach the service, and if so, with what error code.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use meter_model::StoreError;

/// The service's error code, with the error itself for the chain; a call that got no answer
/// (connection, timeout, unreadable response) is already translated, naming `service`.
pub(crate) fn service_code<E, R>(
    operation: &str,
    service: &str,
    err: SdkError<E, R>,
) -> Result<(Option<String>, SdkError<E, R>), StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => Ok((context.err().code().map(str::to_owned), err)),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Err(StoreError::Unavailable {
                operation: operation.to_owned(),
                hint: format!("cannot reach {service}; check AWS_REGION, AWS_ENDPOINT_URL and the network"),
                source: Some(err.into()),
            })
        }
        _ => Ok((None, err)),
    }
}

/// Loads the standard AWS configuration (region, credentials, `AWS_ENDPOINT_URL`, …) with timeouts
/// short enough that an unreachable endpoint is reported in seconds.
/// Loaded once per process: the store, the archive and the revocation topic share it.
pub async fn load_aws_config() -> aws_config::SdkConfig {
    static LOADED: tokio::sync::OnceCell<aws_config::SdkConfig> = tokio::sync::OnceCell::const_new();
    LOADED
        .get_or_init(|| {
            aws_config::defaults(BehaviorVersion::latest())
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(3))
                        .operation_attempt_timeout(Duration::from_secs(30))
                        .build(),
                )
                .load()
        })
        .await
        .clone()
}
