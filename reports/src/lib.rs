//! Monthly invoice-ready reports (DESIGN §3.6): pricing from a TOML file and the priced lines of a
//! month's usage. Money is `rust_decimal` from the file's text to the invoice, never floating point.

pub mod pricing;

pub use pricing::{Plan, PricedLine, Pricing, PricingError, Tier};
