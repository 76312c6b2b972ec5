//! What every AWS adapter asks first of an SDK error: did the call reach the service, and if so, with
//! what error code.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// The kind of an SDK failure.
pub(crate) enum Failure {
    /// The request did not get an answer (connection, timeout, unreadable response).
    Unreachable,
    /// The service answered with this error code (or none could be read).
    Service(Option<String>),
}

/// Classifies an SDK error of any AWS service.
pub(crate) fn failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Failure {
    match err {
        SdkError::ServiceError(context) => Failure::Service(context.err().code().map(str::to_owned)),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Failure::Unreachable
        }
        _ => Failure::Service(None),
    }
}
