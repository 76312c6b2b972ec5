//! Monthly invoice-ready reports (CONTRACTS.md §6): pricing from a TOML file, a month's invoices from the
//! archive's authoritative usage, their files, issuing them once (with adjustments for earlier
//! months), and delivering them to finance. Money is `rust_decimal` from the pricing file's text to
//! the invoice, never floating point.

pub mod deliver;
pub mod files;
pub mod invoice;
pub mod issue;
pub mod job;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod links;
pub mod pricing;

pub use deliver::{DeliveryError, DeliveryMessage, deliver};
pub use invoice::{
    Invoice, InvoiceLine, KeyDayUsage, MonthInvoices, Unattributed, invoice_id, invoices_for_month,
};
pub use issue::{
    ArchiveUsage, ReportError, ReportOutcome, ReportRequest, UsageSource, issued_report, produce_report,
};
pub use links::{
    DownloadLinks, LinkAnswer, LinkRequest, MAX_LINK_EXPIRY, MAX_SIGNED_LINK_EXPIRY, PresignedLinks,
    SignedLinks, open_link,
};
pub use pricing::{Plan, PricedLine, Pricing, PricingError, Tier};
