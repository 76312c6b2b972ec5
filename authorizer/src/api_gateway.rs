//! The API Gateway adapter of [`CacheFlusher`]: `FlushStageAuthorizersCache` (REST) and
//! `ResetAuthorizersCache` (HTTP), with the SDK's errors translated into [`FlushError`]s. Only the
//! invalidator Lambda needs it, so the two API Gateway SDKs are compiled only with the `lambda`
//! feature.

use std::fmt;

use aws_sdk_apigateway::error::{ProvideErrorMetadata, SdkError};

use crate::invalidate::{CacheFlusher, FlushError, FlushTarget};

/// The API Gateway implementation.
#[derive(Debug, Clone)]
pub struct ApiGatewayFlusher {
    rest: aws_sdk_apigateway::Client,
    http: aws_sdk_apigatewayv2::Client,
}

impl ApiGatewayFlusher {
    /// A flusher from the loaded AWS configuration.
    #[must_use]
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self { rest: aws_sdk_apigateway::Client::new(sdk), http: aws_sdk_apigatewayv2::Client::new(sdk) }
    }
}

fn flush_error<E, R>(target: &FlushTarget, err: SdkError<E, R>) -> FlushError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let target = target.clone();
    let code = match &err {
        SdkError::ServiceError(context) => context.err().code().map(str::to_owned),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Some("Timeout".to_owned()),
        _ => None,
    };
    match code.as_deref() {
        Some("NotFoundException") => FlushError::NotFound(target),
        // A limit or a conflict (the stage being updated meanwhile) passes: worth trying again.
        Some(
            "TooManyRequestsException"
            | "LimitExceededException"
            | "ConflictException"
            | "ServiceUnavailableException"
            | "Timeout"
            | "InternalServerError",
        ) => FlushError::Transient { target, source: err.into() },
        _ => FlushError::Failed { target, source: err.into() },
    }
}

impl CacheFlusher for ApiGatewayFlusher {
    async fn flush(&self, target: &FlushTarget) -> Result<(), FlushError> {
        match target {
            FlushTarget::Rest { api_id, stage } => self
                .rest
                .flush_stage_authorizers_cache()
                .rest_api_id(api_id)
                .stage_name(stage)
                .send()
                .await
                .map(drop)
                .map_err(|e| flush_error(target, e)),
            FlushTarget::Http { api_id, stage } => self
                .http
                .reset_authorizers_cache()
                .api_id(api_id)
                .stage_name(stage)
                .send()
                .await
                .map(drop)
                .map_err(|e| flush_error(target, e)),
        }
    }
}
