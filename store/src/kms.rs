//! The finance links' signing key: a KMS HMAC key (`HMAC_256`), which signs and checks without its
//! secret ever leaving KMS.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::MacAlgorithmSpec;
use meter_model::{MacKey, StoreError};

/// A KMS client from the loaded AWS configuration.
#[must_use]
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(sdk)
}

/// One KMS HMAC key, by id, ARN or alias.
#[derive(Debug, Clone)]
pub struct KmsMacKey {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsMacKey {
    /// The key `key_id` through `client`.
    #[must_use]
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self { client, key_id: key_id.into() }
    }

    /// The key `key_id` with the standard AWS configuration.
    pub async fn for_key(key_id: impl Into<String>) -> Self {
        Self::new(client(&crate::sdk::load_aws_config().await), key_id)
    }

    fn error<E, R>(&self, operation: &str, err: aws_sdk_kms::error::SdkError<E, R>) -> StoreError
    where
        E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let (code, err) = match crate::sdk::service_code(operation, "KMS", err) {
            Ok(answer) => answer,
            Err(unreachable) => return unreachable,
        };
        let operation = operation.to_owned();
        let unavailable =
            |hint: String| StoreError::Unavailable { operation: operation.clone(), hint, source: None };
        match code.as_deref() {
            Some("ThrottlingException" | "KMSInternalException" | "DependencyTimeoutException") => {
                StoreError::Retryable { operation, source: err.into() }
            }
            Some("NotFoundException") => unavailable(format!("KMS key {} does not exist", self.key_id)),
            Some("DisabledException" | "KMSInvalidStateException") => {
                unavailable(format!("KMS key {} is disabled or pending deletion", self.key_id))
            }
            Some("InvalidKeyUsageException") => unavailable(format!(
                "KMS key {} is not an HMAC key (key spec HMAC_256, usage GENERATE_VERIFY_MAC)",
                self.key_id
            )),
            Some("AccessDeniedException") => unavailable(format!(
                "KMS refused the key {}: the caller needs kms:GenerateMac or kms:VerifyMac on it",
                self.key_id
            )),
            _ => StoreError::Other { operation, source: err.into() },
        }
    }
}

impl MacKey for KmsMacKey {
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, StoreError> {
        let answer = self
            .client
            .generate_mac()
            .key_id(&self.key_id)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(message))
            .send()
            .await
            .map_err(|e| self.error("sign a link", e))?;
        answer.mac.map(Blob::into_inner).ok_or_else(|| StoreError::Corrupt {
            detail: format!("KMS answered GenerateMac for {} without a MAC", self.key_id),
        })
    }

    async fn verify(&self, message: &[u8], signature: &[u8]) -> Result<bool, StoreError> {
        let answer = self
            .client
            .verify_mac()
            .key_id(&self.key_id)
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new(message))
            .mac(Blob::new(signature))
            .send()
            .await;
        match answer {
            Ok(answer) => Ok(answer.mac_valid),
            // KMS answers a signature that does not match with an error, not with `MacValid: false`.
            Err(err) if err.as_service_error().is_some_and(|e| e.is_kms_invalid_mac_exception()) => Ok(false),
            Err(err) => Err(self.error("check a link's signature", err)),
        }
    }
}
