//! Synthetic traffic and archives with a known answer: the month simulator behind `meter demo` and
//! `meter simulate`, the synthetic archive generator of the rollup tests and benchmark, and the
//! realtime benchmark's payloads. Tests, benches and the CLI use it; no production crate depends on
//! it.

pub mod archive;
pub mod bench;
pub mod cloudwatch;
pub mod traffic;
