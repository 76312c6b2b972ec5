//! The end of a rotated key's grace period on AWS: an execution of the stack's grace-end state machine
//! (a Step Functions `Wait` until the instant, then a publish to the revocation topic), so the cache
//! invalidator flushes API Gateway's authorizer caches at that second, as it does for a revocation
//! (CONTRACTS.md §9). A Wait resumes within about a second of its timestamp; EventBridge Scheduler,
//! the other candidate, fires within the minute, longer than API Gateway's 30-second cache.

use chrono::{DateTime, Utc};
use meter_model::time::format_instant;
use meter_model::{GraceEndNotifier, KeyId, StoreError};
use sha2::{Digest, Sha256};

/// The stack's grace-end state machine (its output `GraceEndStateMachine`).
#[derive(Debug, Clone)]
pub struct GraceEndWorkflow {
    client: aws_sdk_sfn::Client,
    state_machine_arn: String,
}

impl GraceEndWorkflow {
    /// Executions of `state_machine_arn`.
    pub async fn new(state_machine_arn: String) -> Self {
        let sdk = crate::sdk::load_aws_config().await;
        Self { client: aws_sdk_sfn::Client::new(&sdk), state_machine_arn }
    }

    /// The execution's name: at most 80 characters whatever the key id's length, and the same for the
    /// same key and instant, so a retried rotation starts one execution, not two.
    fn name(key: &KeyId, at: DateTime<Utc>) -> String {
        let digest = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        format!("grace-end-{}-{}", &digest[..16], at.format("%Y%m%dT%H%M%S%3fZ"))
    }
}

impl GraceEndNotifier for GraceEndWorkflow {
    async fn notify_at_grace_end(&self, key: &KeyId, at: DateTime<Utc>) -> Result<String, StoreError> {
        let name = Self::name(key, at);
        // The state machine waits until `graceEndsAt` and publishes this very document.
        let input = serde_json::json!({
            "type": "KEY_GRACE_ENDED",
            "keyId": key.as_str(),
            "graceEndsAt": format_instant(at),
        });
        let started = self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(&name)
            .input(input.to_string())
            .send()
            .await
            .map_err(|err| {
                let operation = format!("start the grace end of key {key}");
                match crate::sdk::service_code(&operation, "Step Functions", err) {
                    Err(unreachable) => unreachable,
                    Ok((Some(code), err)) if code == "StateMachineDoesNotExist" => StoreError::Unavailable {
                        operation,
                        hint: format!(
                            "state machine {} does not exist (the stack's output GraceEndStateMachine)",
                            self.state_machine_arn
                        ),
                        source: Some(err.into()),
                    },
                    Ok((Some(code), err)) if code == "AccessDeniedException" => StoreError::Unavailable {
                        operation,
                        hint: format!("the caller needs states:StartExecution on {}", self.state_machine_arn),
                        source: Some(err.into()),
                    },
                    Ok((_, err)) => StoreError::Other { operation, source: err.into() },
                }
            })?;
        Ok(format!("execution {}", started.execution_arn))
    }
}
