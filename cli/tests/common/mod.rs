//! What every test of the `meter` binary starts from.

use std::process::Command;

/// The `meter` binary as if started at `now` (RFC 3339, as `METER_NOW`), with no store, archive,
/// rollup engine or log level of the caller's environment: each test says what it runs on.
pub(crate) fn meter_at(now: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meter"));
    command.env("METER_NOW", now);
    for inherited in ["METER_STORE", "METER_ARCHIVE", "METER_ROLLUP_ENGINE", "METER_LOG"] {
        command.env_remove(inherited);
    }
    command
}
