//! The `meter` command line (CONTRACTS.md §7): its definitions (`args`) and the handlers behind each
//! command.
//! Handlers are generic over the ports, so the same code drives SQLite, DynamoDB or a test double.

mod args;
mod cost;
mod demo;
mod faults;
mod keys;
mod lifecycle;
mod pipeline;
mod probe;
mod reconcile;
mod replay;
mod report;
mod serve;
pub mod simulate;
mod usage;

use std::io::Write;

use anyhow::Context;
use meter_authorizer::{Authorizer, AuthorizerConfig, Decision};
use meter_model::Clock;
pub use meter_model::ShiftedClock;
use meter_store::{AnySink, AnyStore, ArchiveLocation, GraceEndWorkflow, SnsNotifier, StoreConfig};
use std::process::ExitCode;

pub use args::*;

/// A command given values that cannot work together (`--from` after `--to`, a file type meter does
/// not write): bad usage, exit code 2, like the errors clap finds itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The environment variable that sets the instant a run starts at (RFC 3339), for tests and for
/// replaying a past day; unset, the command line runs on the system clock.
pub const NOW_VARIABLE: &str = "METER_NOW";

/// The command line's clock: the system's, or, when `METER_NOW` holds an instant, one that starts
/// there and runs at the real rate. The only place the command line's "now" comes from.
///
/// # Errors
/// `METER_NOW` set to something that is not an RFC 3339 instant (bad usage).
pub fn clock_from_env() -> Result<ShiftedClock, UsageError> {
    clock_from(std::env::var_os(NOW_VARIABLE).as_deref())
}

fn clock_from(value: Option<&std::ffi::OsStr>) -> Result<ShiftedClock, UsageError> {
    let Some(value) = value else { return Ok(ShiftedClock::system()) };
    let bad = || {
        UsageError(format!(
            "{NOW_VARIABLE}={value:?} is not an RFC 3339 instant (e.g. 2027-01-31T23:59:59Z); \
             unset it to run on the system clock"
        ))
    };
    let instant = value.to_str().ok_or_else(bad)?;
    let at = chrono::DateTime::parse_from_rfc3339(instant).map_err(|_| bad())?;
    Ok(ShiftedClock::starting_at(at.to_utc()))
}

/// Logs go to standard error, filtered by `METER_LOG` (default: warnings and errors).
///
/// The demo logs errors only: the faults it injects on purpose would otherwise warn on every delivery,
/// and its summary reports them.
pub fn init_logging(cli: &Cli) {
    let default = if matches!(cli.command, Command::Demo { .. }) { "error" } else { "warn" };
    let filter =
        meter_lambda::QUIET_LOG_TARGETS.into_iter().filter_map(|directive| directive.parse().ok()).fold(
            tracing_subscriber::EnvFilter::try_from_env("METER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
            tracing_subscriber::EnvFilter::add_directive,
        );
    // Colours only for a person at a terminal, never in files or CI logs.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

/// Runs one command, writing its output to standard output. Returns the exit code for outcomes that
/// are not errors but still say no (`authorize` denying).
pub async fn run(cli: Cli, clock: &(impl Clock + Clone + 'static)) -> anyhow::Result<ExitCode> {
    let config = cli.store_config();
    let archive_location = cli.archive_location();
    let home = cli.home();
    // Opened by the commands that use it: `archive` needs no store at all.
    let open_store =
        || async { AnyStore::open(&config).await.with_context(|| format!("cannot open the store {config}")) };
    let text = match cli.command {
        Command::Keys(KeysCommand::Create(args)) => keys::create(&open_store().await?, clock, args).await?,
        Command::Keys(KeysCommand::List(flag)) => keys::list(&open_store().await?, clock, flag).await?,
        Command::Keys(KeysCommand::Show { id, json }) => {
            keys::show(&open_store().await?, clock, &id, json).await?
        }
        Command::Keys(KeysCommand::Revoke { id }) => {
            let notifier = match &cli.revocation_topic {
                Some(topic) => Some(SnsNotifier::for_topic(topic).await),
                None => None,
            };
            keys::revoke(&open_store().await?, clock, &id, notifier.as_ref()).await?
        }
        Command::Keys(KeysCommand::Import(args)) => {
            let pricing = args.pricing.as_deref().map(report::load_pricing).transpose()?.map(|(p, _)| p);
            let (source, rows) = match (&args.file, &args.from_dynamodb) {
                (Some(file), _) => (file.display().to_string(), lifecycle::read_file(file)?),
                (None, Some(table)) => {
                    let items = Box::pin(meter_store::dynamodb::export::items_as_text(table))
                        .await
                        .with_context(|| format!("cannot read the keys of DynamoDB table {table}"))?;
                    let rows = items
                        .into_iter()
                        .enumerate()
                        .map(|(i, fields)| lifecycle::SourceRow::new(format!("item {}", i + 1), fields))
                        .collect();
                    (format!("DynamoDB table {table}"), rows)
                }
                (None, None) => return Err(UsageError("give FILE or --from-dynamodb TABLE".into()).into()),
            };
            let notifier = match &cli.revocation_topic {
                Some(topic) => Some(SnsNotifier::for_topic(topic).await),
                None => None,
            };
            let store = open_store().await?;
            let options = lifecycle::ImportOptions {
                pricing: pricing.as_ref(),
                dry_run: args.dry_run,
                json: args.json.json,
            };
            Box::pin(lifecycle::import(&store, clock, (&source, rows), notifier.as_ref(), options)).await?
        }
        Command::Keys(KeysCommand::RefreshParked(flag)) => {
            keys::refresh_parked(&open_store().await?, flag).await?
        }
        Command::Keys(KeysCommand::Recount(flag)) => keys::recount(&open_store().await?, flag).await?,
        Command::Keys(KeysCommand::Update(args)) => {
            let pricing = args.pricing.as_deref().map(report::load_pricing).transpose()?.map(|(p, _)| p);
            let edit = (args.email, args.plan, args.name);
            let store = open_store().await?;
            Box::pin(lifecycle::update(&store, clock, &args.id, edit, pricing.as_ref(), args.json.json))
                .await?
        }
        Command::Keys(KeysCommand::Rotate(args)) => {
            let notifier = match &cli.revocation_topic {
                Some(topic) => Some(SnsNotifier::for_topic(topic).await),
                None => None,
            };
            let workflow = match (&cli.revocation_topic, args.grace_end_state_machine) {
                (Some(_), Some(arn)) => Some(GraceEndWorkflow::new(arn).await),
                _ => None,
            };
            let store = open_store().await?;
            let (revocations, grace_end) = (notifier.as_ref(), workflow.as_ref());
            Box::pin(lifecycle::rotate(
                &store,
                clock,
                &args.id,
                args.grace,
                revocations,
                grace_end,
                args.json.json,
            ))
            .await?
        }
        Command::Authorize { key } => {
            let (text, allowed) = authorize(open_store().await?, clock, &key).await?;
            print(&text)?;
            return Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Usage(UsageCommand::Show { id, month, json }) => {
            usage::show(&open_store().await?, clock, &id, month, json).await?
        }
        Command::Store(StoreCommand::Init) => store_init(&open_store().await?, &config).await?,
        Command::Realtime { inputs, json } => {
            pipeline::realtime(open_store().await?, clock, &config.to_string(), &inputs.files, json).await?
        }
        Command::Archive(inputs) => {
            let archive = meter_archive::Archive::new(AnySink::open(&archive_location).await);
            pipeline::archive(archive, &archive_location.to_string(), &inputs.files).await?
        }
        Command::ReplayFailed { from, json } => {
            let source = AnySink::open(&from).await;
            let archive = meter_archive::Archive::new(AnySink::open(&archive_location).await);
            let store = open_store().await?;
            replay::replay_failed(&source, &from.to_string(), archive, store, clock, json).await?
        }
        Command::Rollup { from, to, out, engine } => {
            let archive = AnySink::open(&archive_location).await;
            reconcile::rollup_command(&engine.open().await, &archive, from, to, out.as_deref()).await?
        }
        Command::Reconcile { from, to, dry_run, alert_threshold, alert_topic, engine } => {
            let archive = AnySink::open(&archive_location).await;
            let alerts = match &alert_topic {
                Some(topic) => Some(SnsNotifier::for_topic(topic).await),
                None => None,
            };
            let args =
                reconcile::ReconcileArgs { from, to, dry_run, alert_threshold, engine: engine.open().await };
            reconcile::reconcile_command(&open_store().await?, &archive, &alerts, clock, args).await?
        }
        Command::Report {
            month,
            pricing,
            draft,
            out,
            adjust_months,
            resend_links,
            finance_topic,
            link_expiry_hours,
            links_url,
            links_key,
        } => {
            let location = out
                .or_else(|| cli.reports.clone())
                .unwrap_or_else(|| ArchiveLocation::Local(home.join("reports")));
            let reports = AnySink::open(&location).await;
            if resend_links {
                let finance = match &finance_topic {
                    Some(topic) => Some(SnsNotifier::for_topic(topic).await),
                    None => None,
                };
                let expiry = std::time::Duration::from_secs(link_expiry_hours * 3600);
                let now = clock.now();
                match (links_url, links_key) {
                    (Some(url), Some(key)) => {
                        let links =
                            meter_reports::SignedLinks::new(url, meter_store::KmsMacKey::for_key(key).await);
                        report::resend_links(&reports, &links, month, finance.as_ref(), expiry, now).await?
                    }
                    _ => {
                        let links = meter_reports::PresignedLinks(&reports);
                        report::resend_links(&reports, &links, month, finance.as_ref(), expiry, now).await?
                    }
                }
            } else {
                let archive = AnySink::open(&archive_location).await;
                let pricing = pricing.context("--pricing is required")?;
                let args = report::ReportArgs { month, pricing: &pricing, draft, adjust_months };
                report::report(&open_store().await?, archive, &reports, clock, args).await?
            }
        }
        Command::Demo { events, keys, month, seed, faults, traffic, hours, json } => {
            let preset = meter_sim::traffic::Faults::preset(&faults).map_err(anyhow::Error::msg)?;
            let (volume, keys) =
                simulate::volume(events, keys, traffic.as_deref(), hours).map_err(UsageError)?;
            let args =
                demo::DemoArgs { volume, keys, month, seed, faults_name: faults, faults: preset, json };
            let (text, exact) = demo::demo(&home, args).await?;
            print(&text)?;
            return Ok(if exact { ExitCode::SUCCESS } else { ExitCode::FAILURE });
        }
        Command::Simulate { out, events, keys, month, seed, faults, rates: overrides, traffic, hours } => {
            let mut rates = meter_sim::traffic::Faults::preset(&faults).map_err(anyhow::Error::msg)?;
            overrides.apply(&mut rates);
            let (volume, keys) =
                simulate::volume(events, keys, traffic.as_deref(), hours).map_err(UsageError)?;
            let mut config = meter_sim::traffic::SimConfig::month(events, keys, month, seed, rates);
            config.volume = volume;
            meter_sim::traffic::write_files(&out, config)?
        }
        Command::Serve(args) => serve::serve(&config, archive_location, &home, args, clock.clone()).await?,
        Command::Load(args) => serve::load(args).await?,
        Command::GenArchive { out, events, keys, month, files_per_day, seed } => {
            reconcile::gen_archive(reconcile::GenArgs { out, events, keys, month, files_per_day, seed })?
        }
    };
    print(&text).map(|()| ExitCode::SUCCESS)
}

async fn authorize<S: meter_model::KeyStore>(
    store: S,
    clock: &impl Clock,
    key: &str,
) -> anyhow::Result<(String, bool)> {
    let key = if key == "-" {
        pipeline::read_input(std::path::Path::new("-"))?.trim().to_owned()
    } else {
        key.to_owned()
    };
    let authorizer = Authorizer::new(store, clock, AuthorizerConfig::default());
    let decision =
        authorizer.decide(Some(&key)).await.context("the authorizer would fail closed (HTTP 500)")?;
    Ok(match decision {
        Decision::Allow(grant) => (
            format!(
                "allow: key {} of {} (plan {})\n",
                grant.key_id,
                grant.user_email,
                grant.plan.as_ref().map_or("default", |p| p.as_str())
            ),
            true,
        ),
        Decision::Deny(_) => (format!("deny (403): {}\n", decision.reason()), false),
        Decision::Unauthorized(_) => (format!("deny (401): {}\n", decision.reason()), false),
        Decision::OverQuota(ref refusal) => (
            format!(
                "deny (429): {} for {} until {}\n",
                decision.reason(),
                refusal.user_email,
                meter_model::time::format_instant(refusal.resets_at)
            ),
            false,
        ),
    })
}

fn print(text: &str) -> anyhow::Result<()> {
    std::io::stdout().lock().write_all(text.as_bytes()).context("cannot write to standard output")
}

async fn store_init(store: &AnyStore, config: &StoreConfig) -> anyhow::Result<String> {
    let created = store.init().await.with_context(|| format!("cannot set up {config}"))?;
    Ok(if created.is_empty() {
        format!("{config} is ready (nothing to create)\n")
    } else {
        format!("{config} is ready; created: {}\n", created.join(", "))
    })
}

/// Renders a value as pretty JSON followed by a newline.
fn to_json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("cannot render JSON")?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_now_sets_the_instant_a_run_starts_at() {
        let unset = clock_from(None).unwrap().now() - chrono::Utc::now();
        assert!(unset.abs() < chrono::Duration::seconds(1), "{unset}");
        let leap = clock_from(Some("2028-02-29T23:59:59+01:00".as_ref())).unwrap().now();
        assert_eq!(leap.format("%F %T").to_string(), "2028-02-29 22:59:59");
        for bad in ["2028-02-30T00:00:00Z", "2026-12-07", "", "now"] {
            let err = clock_from(Some(bad.as_ref())).unwrap_err().to_string();
            assert!(err.contains("METER_NOW") && err.contains("RFC 3339"), "{bad}: {err}");
        }
    }
}
