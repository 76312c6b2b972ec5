//! Monthly invoice-ready reports (DESIGN §3.6): pricing from a TOML file and the priced lines of a
//! month's usage. Money is `rust_decimal` from the file's text to the invoice, never floating point.

pub mod invoice;
pub mod pricing;

pub use invoice::{
    Invoice, InvoiceLine, KeyDayUsage, MonthInvoices, Unattributed, invoice_id, invoices_for_month,
};
pub use pricing::{Plan, PricedLine, Pricing, PricingError, Tier};
