//! Announcing revocations on an SNS topic (CONTRACTS.md ).

use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use meter_model::time::format_instant;
use meter_model::{Publisher, Revocation, RevocationNotifier, StoreError};

/// An SNS client from the loaded AWS configuration.
#[must_use]
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(sdk)
}

/// Publishes revocation notices to one topic.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    /// A notifier for `topic_arn`.
    #[must_use]
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        Self { client, topic_arn: topic_arn.into() }
    }

    /// A notifier for `topic_arn` with the standard AWS configuration.
    pub async fn for_topic(topic_arn: impl Into<String>) -> Self {
        Self::new(client(&crate::sdk::load_aws_config().await), topic_arn)
    }

    /// The notice's body: which key, the epoch, when. Never anything secret.
    #[must_use]
    pub fn message(revocation: &Revocation) -> String {
        serde_json::json!({
            "type": "KEY_REVOKED",
            "keyId": revocation.record.id.as_str(),
            "epoch": revocation.epoch,
            "revokedAt": revocation.record.revoked_at.map(format_instant),
        })
        .to_string()
    }
}

impl RevocationNotifier for SnsNotifier {
    async fn notify_revoked(&self, revocation: &Revocation) -> Result<(), StoreError> {
        self.publish("publish revocation", "meter: key revoked", Self::message(revocation)).await
    }
}

impl Publisher for SnsNotifier {
    async fn publish_message(&self, subject: &str, message: &str) -> Result<(), StoreError> {
        self.publish("publish message", subject, message.to_owned()).await
    }
}

impl SnsNotifier {
    async fn publish(&self, operation: &str, subject: &str, message: String) -> Result<(), StoreError> {
        // SNS subjects are at most 100 characters.
        let subject: String = subject.chars().take(100).collect();
        let published =
            self.client.publish().topic_arn(&self.topic_arn).subject(subject).message(message).send().await;
        published.map(drop).map_err(|err| {
            let operation = operation.to_owned();
            match &err {
                SdkError::ServiceError(context) if context.err().code() == Some("NotFound") => {
                    StoreError::Unavailable {
                        operation,
                        hint: format!("SNS topic {} does not exist", self.topic_arn),
                        source: Some(err.into()),
                    }
                }
                SdkError::ServiceError(_) => StoreError::Other { operation, source: err.into() },
                // The SDK's own chain here is credential-lookup and connector internals: say what
                // to check instead.
                SdkError::ConstructionFailure(_) => StoreError::Unavailable {
                    operation,
                    hint: "cannot reach SNS: no AWS credentials were found (set AWS_PROFILE or \
                           AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
                        .into(),
                    source: None,
                },
                _ => StoreError::Unavailable {
                    operation,
                    hint: "cannot reach SNS; check AWS_REGION, AWS_ENDPOINT_URL, the credentials and the \
                           network"
                        .into(),
                    source: None,
                },
            }
        })
    }
}
