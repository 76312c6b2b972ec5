//! The command line's definitions (CONTRACTS.md §7): every command, flag and environment variable
//! as clap reads them, and what the flags select (the store, the archive, the home, the rollup
//! engine). What each command does is in the crate's other modules; `run` dispatches to them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use meter_model::{Day, Email, KeyId, Month, PlanName};
use meter_reconcile::RollupEngine;
use meter_store::{ArchiveLocation, AthenaEngine, AthenaSettings, DEFAULT_HOME, StoreConfig};

use crate::{lifecycle, simulate};

/// API usage metering and billing: keys, counters, archive, reconciliation and invoices.
#[derive(Debug, Parser)]
#[command(name = "meter", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Directory for the embedded store, archive and reports [default: .meter].
    #[arg(long, env = "METER_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Which store holds keys and counters: sqlite:PATH (default: meter.db under the home),
    /// dynamodb: (tables ApiKeys, UsageCounters) or dynamodb:keys=TABLE,counters=TABLE.
    #[arg(long, env = "METER_STORE", global = true, value_name = "STORE")]
    pub store: Option<StoreConfig>,

    /// Where the usage archive lives: a directory (default: archive under the home) or s3://BUCKET/PREFIX.
    #[arg(long, env = "METER_ARCHIVE", global = true, value_name = "DIR|S3")]
    pub archive: Option<ArchiveLocation>,

    /// Where reports go: a directory (default: reports under the home) or s3://BUCKET/PREFIX.
    #[arg(long, env = "METER_REPORTS", global = true, value_name = "DIR|S3")]
    pub reports: Option<ArchiveLocation>,

    /// SNS topic ARN that `keys revoke` announces revocations on (its subscriber flushes API Gateway's
    /// authorizer caches).
    #[arg(long, env = "METER_REVOCATION_TOPIC", global = true, value_name = "ARN")]
    pub revocation_topic: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, show and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show a key's counted usage.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Set up the configured store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Run the authorizer's decision locally: allow (exit 0) or deny (exit 1) with the reason.
    Authorize {
        /// The API key; `-` reads it from standard input (keeps it out of the process list).
        key: String,
    },
    /// Apply CloudWatch Logs subscription events (Lambda event JSON) to the counters as the deployed
    /// transformer does: cut into Firehose invocations (3 MB or 45 s), each delivery counted once.
    /// Prints what that costs (invocations, DynamoDB units); --json for scripts.
    Realtime {
        /// The deliveries.
        #[command(flatten)]
        inputs: Inputs,
        /// Print `{"deliveries", "usageEvents", "invocations", "writeUnits", "readUnits", "itemsWritten", …}`.
        #[arg(long)]
        json: bool,
    },
    /// Write the usage events of CloudWatch Logs subscription events into the Parquet archive.
    Archive(Inputs),
    /// Feed what Firehose gave up on (its `processing-failed/` error output: a folder or an
    /// s3://bucket/prefix) back through the transformer's path: archived and counted, each delivery
    /// once however often it is replayed. Records that still cannot be decoded are listed and left.
    ReplayFailed {
        /// Where the error objects are, e.g. s3://meter-prod-archive/firehose-errors/processing-failed.
        #[arg(value_name = "FROM")]
        from: ArchiveLocation,
        /// Print `{"objects", "records", "deliveriesCounted", "usageEvents", "archiveFiles", …}`.
        #[arg(long)]
        json: bool,
    },
    /// Authoritative rollups from the archive: per key and UTC day, each request counted once. Needs no
    /// store. Prints CSV, or writes --out; the throughput and peak memory go to standard error.
    Rollup {
        /// First UTC day (YYYY-MM-DD).
        #[arg(long)]
        from: Day,
        /// Last UTC day (YYYY-MM-DD).
        #[arg(long)]
        to: Day,
        /// Write the rollup to FILE.parquet or FILE.csv instead of printing CSV.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Where the rollup is computed.
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Rollups, then drift correction of the counters (conditional, race-free); prints the drift.
    Reconcile {
        /// First UTC day (YYYY-MM-DD).
        #[arg(long)]
        from: Day,
        /// Last UTC day (YYYY-MM-DD).
        #[arg(long)]
        to: Day,
        /// Compute and print the drift; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Publish an alert when the total absolute drift exceeds N.
        #[arg(long, env = "METER_DRIFT_ALERT_THRESHOLD", value_name = "N")]
        alert_threshold: Option<u128>,
        /// SNS topic ARN for drift alerts.
        #[arg(long, env = "METER_ALERT_TOPIC", value_name = "ARN")]
        alert_topic: Option<String>,
        /// Where the rollup is computed.
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// A month of simulated traffic through the whole pipeline on the embedded default, with faults,
    /// checked against the ground truth; exits 1 if the invoices do not match it exactly.
    Demo {
        /// Requests in the month.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// API keys (about two per customer).
        #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
        keys: u32,
        /// The month.
        #[arg(long, default_value = "2026-11")]
        month: Month,
        /// Seed: the same seed gives the same traffic and the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fault preset.
        #[arg(long, default_value = "default", value_parser = FAULT_PRESETS)]
        faults: String,
        /// Instead of the month: a reference traffic's steady rate (small: 1.2 req/s, 2 log streams,
        /// 500 keys; medium: 115 req/s, 20 streams, 5,000 keys; large: 1,150 req/s, 100 streams,
        /// 50,000 keys), to price it.
        #[arg(long, value_parser = ["small", "medium", "large"], conflicts_with_all = ["events", "keys"])]
        traffic: Option<String>,
        /// Hours of --traffic to simulate [default: small 24, medium 3, large 1].
        #[arg(long, requires = "traffic")]
        hours: Option<rust_decimal::Decimal>,
        /// Print one JSON object of the run's figures (calls, costPerMillion, each stage's wall and CPU
        /// time and peak memory, DynamoDB units, the deployed reconcile's memory) instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Serve the request path locally: API Gateway (the key from --identity-header, its 30 s
    /// authorizer-result cache, its 401/403) in front of the example backend, which prints one usage
    /// line per request into a local log group under METER_HOME/logs; each stream is delivered every
    /// 2 s to the counters and the archive as deployed. A revoked key is refused within about 2.6 s.
    /// Ctrl-C or SIGTERM delivers what is pending and stops.
    Serve(ServeArgs),
    /// Drive a server with one key's requests, at a fixed rate or as fast as it answers, for a fixed
    /// time; prints the answers by status, the throughput and the round-trip latency.
    Load(LoadArgs),
    /// Generate traffic as the log group's subscription delivers it (each log stream every 2 s), with
    /// faults, and its ground truth: DIR/deliveries/DAY.json (read by `meter realtime` and `meter
    /// archive`; redelivered deliveries twice), DIR/keys.csv and DIR/truth.csv.
    Simulate {
        /// Directory to write to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Requests in the month.
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
        events: u64,
        /// API keys.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        keys: u32,
        /// The month.
        #[arg(long, default_value = "2026-11")]
        month: Month,
        /// Seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Fault preset the rates below start from.
        #[arg(long, default_value = "default", value_parser = FAULT_PRESETS)]
        faults: String,
        /// Rates that override the preset's.
        #[command(flatten)]
        rates: simulate::FaultRates,
        /// Instead of the month: a reference traffic (small, medium, large), as for `meter demo`.
        #[arg(long, value_parser = ["small", "medium", "large"], conflicts_with_all = ["events", "keys"])]
        traffic: Option<String>,
        /// Hours of --traffic [default: small 24, medium 3, large 1].
        #[arg(long, requires = "traffic")]
        hours: Option<rust_decimal::Decimal>,
    },
    /// A month's invoices from the archive: a draft (any month) or, once the month is over and its
    /// last day reconciled, the issued invoices (written once; issuing again verifies them).
    Report {
        /// The month (YYYY-MM).
        #[arg(long)]
        month: Month,
        /// The pricing file (see reports/pricing.example.toml).
        #[arg(long, env = "METER_PRICING", value_name = "FILE", required_unless_present = "resend_links")]
        pricing: Option<PathBuf>,
        /// Sign the download links of the month's issued files afresh and send them (to
        /// --finance-topic, else print them): presigned links die with the credentials that signed
        /// them.
        #[arg(long, conflicts_with = "draft")]
        resend_links: bool,
        /// SNS topic ARN finance subscribes to (with --resend-links).
        #[arg(long, env = "METER_FINANCE_TOPIC", value_name = "ARN", requires = "resend_links")]
        finance_topic: Option<String>,
        /// How long resent links work, in hours (1 to 744 for signed links, 1 to 168 for presigned ones).
        #[arg(
            long,
            env = "METER_LINK_EXPIRY_HOURS",
            default_value_t = 72,
            value_parser = clap::value_parser!(u64).range(1..=744)
        )]
        link_expiry_hours: u64,
        /// The deployment's `report-links` function URL (`LinksUrl` in the stack's outputs): resent
        /// links point there, signed with --links-key, and outlive your credentials. Without it links
        /// are presigned with your credentials.
        #[arg(long, env = "METER_LINKS_URL", value_name = "URL", requires_all = ["resend_links", "links_key"])]
        links_url: Option<String>,
        /// The KMS HMAC key that signs links (`LinksKeyArn` in the stack's outputs).
        #[arg(long, env = "METER_LINKS_KEY", value_name = "KEY", requires = "links_url")]
        links_key: Option<String>,
        /// Write a draft under draft/month=YYYY-MM/ instead of issuing.
        #[arg(long)]
        draft: bool,
        /// Where reports go: a directory or s3://BUCKET/PREFIX (default: reports under the home, or
        /// --reports / METER_REPORTS).
        #[arg(long, value_name = "DIR|S3")]
        out: Option<ArchiveLocation>,
        /// How many earlier issued months are checked for late usage (adjustments).
        #[arg(long, default_value_t = 3, value_name = "N")]
        adjust_months: u32,
    },
    /// Generate a synthetic archive for benchmarks: a month of events over KEYS keys, 1% of rows
    /// repeated, some events in the neighbouring day's folder.
    GenArchive {
        /// Directory to write the archive to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Distinct requests.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Keys.
        #[arg(long, default_value_t = 10_000)]
        keys: u32,
        /// The month.
        #[arg(long, default_value = "2026-10")]
        month: Month,
        /// Files per day folder.
        #[arg(long, default_value_t = 8)]
        files_per_day: u32,
        /// Seed: the same seed writes the same files.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

/// The simulator's fault presets.
const FAULT_PRESETS: [&str; 3] = ["none", "default", "heavy"];

/// Where `meter rollup` and `meter reconcile` compute the rollup.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// `local`: this machine reads the archive's files; `athena`: notebooks/sql/rollup.sql runs in an
    /// Athena workgroup over the archive's Glue table (for archives beyond one machine).
    #[arg(long, env = "METER_ROLLUP_ENGINE", default_value = "local", value_parser = ["local", "athena"])]
    engine: String,
    /// The Athena workgroup (the stack's output AthenaWorkgroup, e.g. meter-prod).
    #[arg(long, env = "METER_ATHENA_WORKGROUP", value_name = "NAME", required_if_eq("engine", "athena"))]
    athena_workgroup: Option<String>,
    /// The Glue database holding the `usage` table (e.g. meter_prod).
    #[arg(long, env = "METER_ATHENA_DATABASE", value_name = "NAME", required_if_eq("engine", "athena"))]
    athena_database: Option<String>,
    /// Where Athena writes results (s3://…/), for a workgroup that does not set it.
    #[arg(long, env = "METER_ATHENA_OUTPUT", value_name = "S3")]
    athena_output: Option<String>,
    /// How long to wait for the Athena query before cancelling it.
    #[arg(
        long,
        env = "METER_ATHENA_TIMEOUT_SECONDS",
        default_value_t = meter_reconcile::engine::DEFAULT_ATHENA_TIMEOUT.as_secs(),
        value_name = "SECONDS"
    )]
    athena_timeout_seconds: u64,
}

impl EngineArgs {
    /// The engine these flags select, its clients built.
    pub async fn open(self) -> RollupEngine {
        match (self.engine.as_str(), self.athena_workgroup, self.athena_database) {
            ("athena", Some(workgroup), Some(database)) => RollupEngine::Query(
                AthenaEngine::new(AthenaSettings {
                    workgroup,
                    database,
                    output_location: self.athena_output,
                    timeout: std::time::Duration::from_secs(self.athena_timeout_seconds),
                })
                .await,
            ),
            // clap requires the workgroup and the database with `athena`.
            _ => RollupEngine::Local { budget: None },
        }
    }
}

/// Input files of Lambda events.
#[derive(Debug, Args)]
pub struct Inputs {
    /// Files holding one or more CloudWatch Logs subscription events (`{"awslogs":{"data":…}}`), as
    /// one JSON document or several after another; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `meter keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once; only its SHA-256 hash is stored.
    Create(CreateKey),
    /// List every key (never the keys themselves).
    List(JsonFlag),
    /// Show one key's item.
    Show {
        /// The key's id (the 12 characters after `mk_`).
        id: KeyId,
        /// Output format.
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke a key: the authorizer refuses it from now on; usage already made still counts.
    Revoke {
        /// The key's id.
        id: KeyId,
    },
    /// Import keys from another system (hashed keys only): FILE (.csv or .jsonl) or a DynamoDB table
    /// with the ApiKeys schema. Idempotent; every row is checked before anything is written.
    Import(ImportArgs),
    /// Change a key's plan, customer e-mail or name. A month is billed under the terms at its end.
    Update(UpdateKey),
    /// Issue a new key for the same customer and plan (printed once); the old key works until the
    /// grace period ends, then is refused like a revoked key.
    Rotate(RotateKey),
    /// Bring the usage parked since the last refresh into the keys' lifetime totals (every parked
    /// item read once). The stack runs it every 10 minutes; `meter serve` every minute.
    RefreshParked(JsonFlag),
    /// Recount every key's lifetime totals from its days: a repair after the tables were changed by
    /// other means (a restore of one table, an edit by hand). Reads each key's whole history.
    Recount(JsonFlag),
}

/// `meter keys import` arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The file: .csv with a header row, or .jsonl (one JSON object per line). Fields as in the ApiKeys
    /// schema: id, hashedKey, userEmail (required); status, plan, name, createdAt, usageCount,
    /// successfulCalls, failedCalls, lastUsed.
    #[arg(required_unless_present = "from_dynamodb", conflicts_with = "from_dynamodb", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Read the keys from this DynamoDB table instead (the standard AWS settings select the account).
    #[arg(long, value_name = "TABLE")]
    pub from_dynamodb: Option<String>,
    /// List what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The pricing file every imported plan must be in.
    #[arg(long, env = "METER_PRICING", value_name = "FILE")]
    pub pricing: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `meter keys update` arguments.
#[derive(Debug, Args)]
pub struct UpdateKey {
    /// The key's id.
    pub id: KeyId,
    /// The new plan (checked against --pricing when given).
    #[arg(long)]
    pub plan: Option<PlanName>,
    /// The new customer e-mail address.
    #[arg(long)]
    pub email: Option<Email>,
    /// The new name.
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// The pricing file the plan must be in.
    #[arg(long, env = "METER_PRICING", value_name = "FILE")]
    pub pricing: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `meter keys rotate` arguments.
#[derive(Debug, Args)]
pub struct RotateKey {
    /// The key's id.
    pub id: KeyId,
    /// How long the old key keeps working: 24h, 90m, 2d, 0 (revoked at once); at most 30 days.
    #[arg(long, default_value = "24h", value_parser = lifecycle::parse_grace)]
    pub grace: chrono::Duration,
    /// The state machine that flushes API Gateway's cache at the grace end (the stack's output
    /// GraceEndStateMachine); needed with --revocation-topic.
    #[arg(long, env = "METER_GRACE_END_STATE_MACHINE", value_name = "ARN")]
    pub grace_end_state_machine: Option<String>,
    /// Output format.
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `meter serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The port.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The address to listen on (a development gateway: loopback unless told).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// The header that carries the key (API Gateway's identity source).
    #[arg(long, default_value = "x-api-key")]
    pub identity_header: String,
    /// Log streams (the backend's workers).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub streams: u16,
    /// Firehose's buffer interval before usage reaches the counters [default: 45, as deployed];
    /// shorter for tests.
    #[arg(long, default_value_t = 45, value_parser = clap::value_parser!(u16).range(1..=900))]
    pub buffer_seconds: u16,
    /// Proxy allowed requests to your own API (http://HOST:PORT[/PREFIX]) instead of the example
    /// backend; the gateway prints the usage line from its status, and a success whose response
    /// carries `x-meter-should-count: false` is not billed.
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
}

/// `meter load` arguments.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The server.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The API key; `-` reads it from standard input.
    #[arg(long)]
    pub key: String,
    /// The request path.
    #[arg(long, default_value = "/v1/items/1")]
    pub path: String,
    /// The header that carries the key.
    #[arg(long, default_value = "x-api-key")]
    pub identity_header: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub connections: u16,
    /// Requests per second in all; 0: as fast as answers come.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// How long.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub seconds: u64,
    /// Print `{"responses", "byStatus", "errors", "seconds", "requestsPerSecond", "p50Micros", "p99Micros"}`.
    #[arg(long)]
    pub json: bool,
}

/// `meter keys create` arguments.
#[derive(Debug, Args)]
pub struct CreateKey {
    /// The customer's e-mail address (who is billed).
    #[arg(long)]
    pub email: Email,
    /// Pricing plan (the pricing file's default when absent).
    #[arg(long)]
    pub plan: Option<PlanName>,
    /// A name to recognise the key by.
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    /// The pricing file the plan must be in (checked before the key is created).
    #[arg(long, env = "METER_PRICING", value_name = "FILE")]
    pub pricing: Option<PathBuf>,
    /// Output format.
    #[command(flatten)]
    pub json: JsonFlag,
}

fn parse_name(text: &str) -> Result<String, meter_model::FieldError> {
    meter_model::items::validate_name(text)
}

/// `--json`
#[derive(Debug, Args, Clone, Copy)]
pub struct JsonFlag {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// `meter usage …`
#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// A key's counters: lifetime totals, or one UTC month's.
    Show {
        /// The key's id.
        id: KeyId,
        /// A UTC month, YYYY-MM.
        #[arg(long)]
        month: Option<Month>,
        /// Output format.
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// `meter store …`
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the store's tables where they do not exist (DynamoDB; SQLite creates its file on use).
    Init,
}

impl Cli {
    /// The command line, parsed and checked; bad usage exits 2 with clap's message, as clap's own
    /// errors do.
    #[must_use]
    pub fn parse_checked() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Self::command();
        let matches = command.clone().get_matches();
        let cli = Self::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        // The demo always runs on the embedded default in $METER_HOME/demo: say so rather than
        // accept a place it would not use. (Set in the environment, for other commands, they are
        // simply not the demo's business.)
        if let Some(("demo", demo)) = matches.subcommand() {
            for flag in ["store", "archive", "reports"] {
                let given = |m: &clap::ArgMatches| {
                    m.value_source(flag) == Some(clap::parser::ValueSource::CommandLine)
                };
                if given(&matches) || given(demo) {
                    command
                        .error(
                            clap::error::ErrorKind::ArgumentConflict,
                            format!(
                                "meter demo runs on the embedded default in $METER_HOME/demo and takes no \
                                 --{flag}"
                            ),
                        )
                        .exit();
                }
            }
        }
        cli
    }

    /// The store the flags and environment select.
    #[must_use]
    pub fn store_config(&self) -> StoreConfig {
        self.store.clone().unwrap_or_else(|| StoreConfig::default_in(&self.home()))
    }

    /// The archive the flags and environment select.
    #[must_use]
    pub fn archive_location(&self) -> ArchiveLocation {
        self.archive.clone().unwrap_or_else(|| ArchiveLocation::Local(self.home().join("archive")))
    }

    /// The home the flags and environment select (`./.meter` by default).
    #[must_use]
    pub fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_HOME))
    }
}
