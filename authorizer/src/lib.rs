//! The API Gateway authorizer (DESIGN §3.1, §5): key verification with a 30-second cache and
//! revocation through the epoch, the three event kinds API Gateway sends, and the invalidator that
//! flushes API Gateway's own authorizer cache on revocation.

pub mod decide;
pub mod event;
pub mod invalidate;

pub use decide::{AuthorizeError, Authorizer, AuthorizerConfig, Decision, DenyReason, Grant, MissingReason};
pub use event::{AuthEvent, response};
