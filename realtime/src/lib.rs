//! The realtime usage processor and the archive transformer (DESIGN §3.3–§3.5, §4). Lands with the
//! realtime issue; the usage-line parser and counting rules it uses live in `meter-model` already.
