//! `meter`: the operator's command line. Parses arguments, then hands over to the library.

use std::process::ExitCode;

/// The demo, the simulator and the local rollups allocate millions of small strings and rows;
/// glibc's allocator spent a fifth of the demo's time on them (perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors (exit 2) and --help/--version (exit 0) are handled by clap here.
    let cli = meter::Cli::parse_checked();
    meter::init_logging(&cli);
    let outcome = match meter::clock_from_env() {
        // On the heap: one future for every command is large, and the main thread's stack is not.
        Ok(clock) => Box::pin(meter::run(cli, &clock)).await,
        Err(err) => Err(err.into()),
    };
    match outcome {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<meter::UsageError>().is_some() => {
            eprintln!("error: {err:#}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
