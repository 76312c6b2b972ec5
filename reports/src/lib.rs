//! Monthly invoice-ready reports: pricing, invoices, adjustments (DESIGN §3.6). Lands with the reports
//! issue.
