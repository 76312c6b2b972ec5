//! The end of a rotated key's grace period on AWS: a one-time EventBridge Scheduler schedule that
//! publishes to the revocation topic at that moment, so the cache invalidator flushes API Gateway's
//! authorizer caches as it does for a revocation (CONTRACTS.md §9). The schedule deletes itself after
//! it has run.

use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use chrono::{DateTime, Utc};
use meter_model::time::format_instant;
use meter_model::{GraceEndNotifier, KeyId, StoreError};
use sha2::{Digest, Sha256};

/// Where the schedules go and what they may do.
#[derive(Debug, Clone)]
pub struct GraceEndScheduler {
    client: aws_sdk_scheduler::Client,
    /// The revocation topic the invalidator listens to.
    topic_arn: String,
    /// The role EventBridge Scheduler assumes to publish to it (the stack's output KeyExpiryRole).
    role_arn: String,
    /// The schedule group (the stack's `meter-<env>`).
    group: String,
}

impl GraceEndScheduler {
    /// Schedules in `group` that publish to `topic_arn` as `role_arn`.
    pub async fn new(topic_arn: String, role_arn: String, group: String) -> Self {
        let sdk = crate::load_aws_config().await;
        Self { client: aws_sdk_scheduler::Client::new(&sdk), topic_arn, role_arn, group }
    }

    /// The schedule's name: at most 64 characters whatever the key id's length.
    fn name(key: &KeyId, at: DateTime<Utc>) -> String {
        let digest = hex::encode(Sha256::digest(key.as_str().as_bytes()));
        format!("meter-grace-end-{}-{}", &digest[..12], at.format("%Y%m%dT%H%M%S"))
    }
}

impl GraceEndNotifier for GraceEndScheduler {
    async fn notify_at_grace_end(&self, key: &KeyId, at: DateTime<Utc>) -> Result<String, StoreError> {
        let name = Self::name(key, at);
        let message = serde_json::json!({
            "type": "KEY_GRACE_ENDED",
            "keyId": key.as_str(),
            "graceEndedAt": format_instant(at),
        });
        let target = Target::builder()
            .arn(&self.topic_arn)
            .role_arn(&self.role_arn)
            .input(message.to_string())
            .build()
            .map_err(|e| StoreError::Other {
                operation: "schedule the grace end".into(),
                source: e.into(),
            })?;
        let window =
            FlexibleTimeWindow::builder().mode(FlexibleTimeWindowMode::Off).build().map_err(|e| {
                StoreError::Other { operation: "schedule the grace end".into(), source: e.into() }
            })?;
        self.client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            // Scheduler's one-time expressions have whole seconds; the caller rounds the grace end up.
            .schedule_expression(format!("at({})", at.format("%Y-%m-%dT%H:%M:%S")))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .target(target)
            .action_after_completion(ActionAfterCompletion::Delete)
            .description(format!("meter: flush API Gateway's authorizer caches when key {key}'s grace ends"))
            .send()
            .await
            .map_err(|err| {
                let operation = format!("schedule the grace end of key {key}");
                match crate::sdk::service_code(&operation, "EventBridge Scheduler", err) {
                    Err(unreachable) => unreachable,
                    Ok((Some(code), err)) if code == "ResourceNotFoundException" => StoreError::Unavailable {
                        operation,
                        hint: format!(
                            "schedule group {} does not exist (the stack's output KeyExpiryScheduleGroup)",
                            self.group
                        ),
                        source: Some(err.into()),
                    },
                    Ok((Some(code), err)) if code == "ConflictException" => {
                        StoreError::AlreadyExists { what: format!("schedule {name}: {err}") }
                    }
                    Ok((_, err)) => StoreError::Other { operation, source: err.into() },
                }
            })?;
        Ok(format!("schedule {}/{name}", self.group))
    }
}
