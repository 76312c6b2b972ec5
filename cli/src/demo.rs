//! `meter demo`: a month of simulated traffic through the whole pipeline on the embedded default,
//! checked against the simulator's ground truth at every stage.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use meter_archive::Archive;
use meter_model::{
    ApiKeyRecord, CounterCorrector, Day, Email, HashedKey, KeyId, KeyStore, ManualClock, Month, NewKey,
    PlanName, Tally, UsageReader as _,
};
use meter_realtime::archiver::DEFAULT_ROWS_PER_FILE;
use meter_realtime::{Archiver, Buffering, LocalRealtime, ReadRecord, RealtimeCounters, RetryPolicy};
use meter_reconcile::{ReconcileOptions, reconcile};
use meter_reports::{ArchiveUsage, Pricing, ReportRequest, produce_report};
use meter_store::LocalDir;
use meter_store::SqliteStore;
use rust_decimal::Decimal;

use crate::cost;
use crate::faults::FaultyCounters;
use crate::probe::Probe;
use meter_sim::traffic::{Faults, SimConfig, Simulator, Truth, Volume};

/// The pricing the demo invoices with: the documented example.
const PRICING: &str = include_str!("../../reports/pricing.example.toml");

/// Options of `meter demo`.
pub(crate) struct DemoArgs {
    pub(crate) volume: Volume,
    pub(crate) keys: u32,
    pub(crate) month: Month,
    pub(crate) seed: u64,
    pub(crate) faults_name: String,
    pub(crate) faults: Faults,
    /// Print one JSON object of the run's figures instead of the report.
    pub(crate) json: bool,
}

/// How a stage went.
struct Stage {
    name: &'static str,
    tally: Tally,
    seconds: f64,
    events: u64,
}

fn start_of(day: Day) -> DateTime<Utc> {
    day.date().and_time(NaiveTime::MIN).and_utc()
}

/// Progress: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
    total: u64,
    reported: u64,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} days ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar.set_message(label);
            bar
        });
        Self { bar, label, total, reported: 0 }
    }

    fn tick(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None => {
                // Plain lines, about every quarter.
                if done == self.total || done >= self.reported + self.total.div_ceil(4) {
                    eprintln!("{}: {done}/{} days", self.label, self.total);
                    self.reported = done;
                }
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// What CloudWatch Logs adds to each log event's message when it meters ingestion.
const CLOUDWATCH_EVENT_OVERHEAD_BYTES: u64 = 26;

/// `n / of`, for people to read.
fn ratio(n: u64, of: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, clippy::float_arithmetic)]
    let r = n as f64 / of.max(1) as f64;
    r
}

fn rate(events: u64, seconds: f64) -> String {
    #[allow(clippy::cast_precision_loss, clippy::float_arithmetic)] // a rate for people to read
    let per_second = events as f64 / seconds.max(1e-9);
    if per_second >= 1e6 {
        #[allow(clippy::float_arithmetic)]
        let m = per_second / 1e6;
        format!("{m:.2} M events/s")
    } else {
        #[allow(clippy::float_arithmetic)]
        let k = per_second / 1e3;
        format!("{k:.0} k events/s")
    }
}

/// Day items of the month per (key id, day), from the store.
async fn counters(store: &SqliteStore, month: Month) -> anyhow::Result<BTreeMap<(String, Day), Tally>> {
    let items = store.day_items(month.first_day(), month.last_day()).await?;
    let parked = store.parked_usage(month.first_day(), month.last_day()).await?;
    let items = meter_model::batch::with_parked(items, &parked.entries);
    Ok(items
        .into_iter()
        .filter(|i| !i.tally.is_zero())
        .map(|i| ((i.key_id.to_string(), i.day), i.tally))
        .collect())
}

fn truth_items(truth: &Truth, sim: &Simulator, month: Month) -> BTreeMap<(String, Day), Tally> {
    truth
        .per_key_day
        .iter()
        .filter(|((_, day), _)| month.contains(*day))
        .map(|((key, day), tally)| ((sim.keys()[*key].id.clone(), *day), *tally))
        .collect()
}

/// (items that differ, total absolute difference of the three counters)
fn drift(actual: &BTreeMap<(String, Day), Tally>, expected: &BTreeMap<(String, Day), Tally>) -> (u64, u128) {
    let mut items = 0;
    let mut total = 0u128;
    let keys: std::collections::BTreeSet<&(String, Day)> = actual.keys().chain(expected.keys()).collect();
    for key in keys {
        let (a, e) =
            (actual.get(key).copied().unwrap_or_default(), expected.get(key).copied().unwrap_or_default());
        if a != e {
            items += 1;
            total += meter_model::TallyDelta::between(a, e).magnitude();
        }
    }
    (items, total)
}

fn sum(items: &BTreeMap<(String, Day), Tally>) -> Tally {
    items.values().copied().sum()
}

async fn create_keys(store: &SqliteStore, sim: &Simulator, month: Month) -> anyhow::Result<u64> {
    let created = start_of(month.first_day()) - chrono::Duration::days(1);
    let mut revoked = 0;
    for key in sim.keys() {
        let id = KeyId::parse(&key.id)?;
        store
            .insert_key(&ApiKeyRecord::new(NewKey {
                id: id.clone(),
                hashed_key: HashedKey::of(&key.id),
                user_email: Email::parse(&key.email)?,
                plan: key.plan.map(PlanName::parse).transpose()?,
                name: None,
                created_at: created,
            }))
            .await?;
        if let Some(at) = key.revoked_at {
            store.revoke_key(&id, at).await?;
            revoked += 1;
        }
    }
    Ok(revoked)
}

/// Runs the demo in `home/demo` (made fresh). Returns the summary and whether the invoices match the
/// ground truth exactly.
pub(crate) async fn demo(home: &Path, args: DemoArgs) -> anyhow::Result<(String, bool)> {
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let dir: PathBuf = home.join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let month = args.month;
    // The demo's clock: the pipeline runs "during" the month; reconcile and invoicing after it.
    let after_month = start_of(month.succ().first_day()) + chrono::Duration::hours(7);
    let clock = ManualClock::new(after_month);
    let store = SqliteStore::open_scratch(&dir.join("meter.db"))?;
    let pricing_path = dir.join("pricing.toml");
    std::fs::write(&pricing_path, PRICING)?;
    let pricing = Pricing::parse(PRICING)?;
    let archive_root = dir.join("archive");
    let reports_root = dir.join("reports");

    let config = match args.volume {
        Volume::Month { events, .. } => SimConfig::month(events, args.keys, month, args.seed, args.faults),
        Volume::Steady { profile, minutes } => {
            SimConfig::steady(profile, minutes, month, args.seed, args.faults)
        }
    };
    let mut sim = Simulator::new(config);
    let revoked = create_keys(&store, &sim, month).await?;

    // One subscription: Firehose buffers the deliveries, and each transformer invocation archives its
    // records and applies their usage to the counters.
    let faulty = FaultyCounters::new(&store, args.faults, args.seed);
    // The deployed policy retries a busy store for seconds; the demo's down store is down for the
    // whole invocation.
    let retry = RetryPolicy::new(1, Duration::from_millis(1), Duration::from_millis(1));
    let mut realtime = LocalRealtime::new(RealtimeCounters::new(&faulty, &clock, retry), Buffering::DEPLOYED);
    let archive = Archive::new(LocalDir::scratch(&archive_root));
    let mut archiver = Archiver::new(archive.clone(), DEFAULT_ROWS_PER_FILE);
    let (mut realtime_time, mut archive_time, mut generate_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut deliveries, mut redelivered, mut log_events, mut log_bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut objects = cost::DeliveredObjects::default();
    let (first_day, mut last_day) = (month.first_day(), month.first_day());
    let days = match args.volume {
        Volume::Month { .. } => month.days().count() as u64,
        Volume::Steady { minutes, .. } => u64::from(minutes).div_ceil(1440),
    };
    let mut progress = Progress::new("pipeline", days);
    let pipeline_probe = Probe::start();
    let mut done = 0;
    // The stack's schedule brings parked usage into the key totals every few minutes: run here on the
    // traffic's own clock, so that its reads and writes are priced.
    let refresh_every = chrono::Duration::minutes(i64::from(meter_reconcile::PARKED_REFRESH_MINUTES));
    let mut next_refresh = start_of(month.first_day()) + refresh_every;
    let (mut refresh_reads, mut refresh_writes, mut refresh_count, mut refresh_keys_moved) =
        (0u64, 0u64, 0u64, 0u64);
    let mut refresh_time = Duration::ZERO;
    // The traffic is generated on a thread of its own, the machine's other core, a few simulated
    // minutes ahead of the transformer path that consumes it; the simulator comes back for the truth.
    let (slices, mut generated) = tokio::sync::mpsc::channel(1);
    let generator = std::thread::spawn(move || {
        loop {
            let started = Instant::now();
            let Some((day, batch)) = sim.next_slice() else { break };
            if slices.blocking_send((day, batch, started.elapsed())).is_err() {
                break;
            }
        }
        sim
    });
    while let Some((day, batch, took)) = generated.recv().await {
        generate_time += took;
        if day != last_day {
            let started = Instant::now();
            archiver.flush_before(day).await?;
            archive_time += started.elapsed();
            last_day = day;
            done += 1;
            progress.tick(done);
        }
        for delivery in &batch {
            if delivery.arrives_at >= next_refresh {
                let started = Instant::now();
                let refresh = store.refresh_parked_totals().await.context("refreshing parked usage")?;
                refresh_time += started.elapsed();
                refresh_reads += refresh.read_units();
                refresh_writes += refresh.write_units();
                refresh_count += 1;
                refresh_keys_moved += refresh.keys_moved;
                while next_refresh <= delivery.arrives_at {
                    next_refresh += refresh_every;
                }
            }
            deliveries += 1;
            redelivered += u64::from(delivery.is_redelivery);
            log_events += delivery.log_events;
            log_bytes += delivery.log_bytes + CLOUDWATCH_EVENT_OVERHEAD_BYTES * delivery.log_events;
            objects.record(delivery.arrives_at, delivery.record_bytes());
            // Read once for the counters and the archive, as the deployed transformer reads it.
            let started = Instant::now();
            let mut record = ReadRecord::read(&delivery.record);
            realtime.add_read(&mut record, Some(delivery.arrives_at), "demo").await;
            realtime_time += started.elapsed();
            let started = Instant::now();
            archiver.add_read(record, "demo").await?;
            archive_time += started.elapsed();
        }
    }
    progress.finish();
    let sim = generator.join().map_err(|_| anyhow::anyhow!("the traffic generator panicked"))?;
    let started = Instant::now();
    let rt = realtime.finish().await;
    realtime_time += started.elapsed();
    let started = Instant::now();
    let archived = archiver.finish().await?;
    archive_time += started.elapsed();
    let pipeline_wall = pipeline_probe.elapsed();
    let pipeline_figures = pipeline_probe.finish(pipeline_wall);
    let truth = sim.truth().clone();
    let expected = truth_items(&truth, &sim, month);
    let truth_total = sum(&expected);
    // Every call whose line the pipeline carried: the month's, unknown keys', malformed lines, and the
    // previous month's that arrived late.
    let requests =
        truth_total.usage_count + truth.orphans.usage_count + truth.malformed + truth.previous_month_events;

    let realtime_items = counters(&store, month).await?;
    let (drifted_items, drift_size) = drift(&realtime_items, &expected);

    // The nightly reconcile over the days the traffic covered.
    let to = match args.volume {
        Volume::Month { .. } => month.last_day(),
        Volume::Steady { .. } => last_day,
    };
    let options = ReconcileOptions { from: first_day, to, dry_run: false, alert_threshold: None };
    let archive_dir = LocalDir::scratch(&archive_root);
    let busiest_day_events = busiest_day_events(args.volume, &truth, requests);
    let deployed_memory = meter_reconcile::engine::local_rollup_memory_mib(busiest_day_events);
    // A day beyond the local engine: the deployed job takes its rollup from Athena. Here the local
    // engine stands in for Athena, in a step of its own, so that the reconcile's figures are what the
    // deployed job holds and spends (its wall time includes waiting for the query).
    let (athena_rollup, athena_rollup_figures) = if deployed_memory.is_none() {
        let started = Instant::now();
        let probe = Probe::start();
        let rollup = meter_archive::rollup(&archive_dir, first_day, to, |_, _| {})
            .await
            .context("rolling up the archive")?;
        (Some(rollup), Some(probe.finish(started.elapsed())))
    } else {
        (None, None)
    };
    let started = Instant::now();
    let reconcile_probe = Probe::start();
    let alerts = None::<meter_store::SnsNotifier>;
    let report = match athena_rollup {
        Some(rollup) => {
            meter_reconcile::reconcile_with(
                &store,
                &archive_dir,
                std::future::ready(Ok(rollup)),
                &alerts,
                &clock,
                &options,
            )
            .await
        }
        None => reconcile(&store, &archive_dir, &alerts, &clock, &options, |_, _| {}).await,
    }
    .context("reconcile failed")?;
    let reconcile_time = started.elapsed();
    let reconcile_figures = reconcile_probe.finish(reconcile_time);
    let reconciled_items = counters(&store, month).await?;
    // The keys' lifetime totals, kept by the writes, against their day items and parked usage.
    let mut keys_off = Vec::new();
    for key in store.list_keys().await? {
        let days = store.lifetime_usage(&key.id).await?;
        let counted = meter_model::UsageTotals::of_days(&days).tally;
        if key.totals != counted {
            keys_off.push(format!("key {}: totals {:?}, day items {counted:?}", key.id, key.totals));
        }
    }
    let (left_items, left_size) = drift(&reconciled_items, &expected);

    // The month's invoices.
    let started = Instant::now();
    let report_probe = Probe::start();
    let reports = LocalDir::scratch(&reports_root);
    // A reference traffic covers hours, not the month: its invoices are a draft of the month so far.
    let draft = matches!(args.volume, Volume::Steady { .. });
    let request = ReportRequest { month, draft, adjust_months: 3 };
    let outcome = produce_report(
        &ArchiveUsage::new(archive_dir.clone()),
        &store,
        &reports,
        &pricing,
        PRICING,
        &clock,
        &request,
    )
    .await
    .context("issuing the invoices failed")?;
    let report_time = started.elapsed();
    let report_figures = report_probe.finish(report_time);
    let manifest = outcome.manifest();

    // What AWS would bill for this traffic, from the operations the pipeline counted.
    let retried = faulty.retried_invocations();
    let apply = &rt.counters.apply;
    // The nightly jobs run once a day whatever the traffic: a reference traffic of a few hours bears
    // its share of one day's run (a month bears its days' runs in full).
    let batch_share = |units: u64| match args.volume {
        Volume::Month { .. } => units,
        Volume::Steady { minutes, .. } => units * u64::from(minutes.min(1440)) / 1440,
    };
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let night = NightUnits::of(&report.run, apply, sim.keys().len() as u64);
    let usage = cost::Usage {
        log_bytes: log_bytes + (rt.invocations + retried) * cost::OWN_LOG_BYTES_PER_INVOCATION,
        lambda_invocations: rt.invocations + retried + refresh_count + batch_share(days + 1).max(1),
        lambda_ms: millis(realtime_time + archive_time + refresh_time)
            + batch_share(millis(reconcile_time + report_time)),
        lambda_io_invocations: rt.invocations + retried,
        // The run's own units are a share of a day's run; clearing the parked items the traffic wrote
        // is the traffic's own cost. The parked refreshes ran on the traffic's clock.
        write_units: apply.write_units()
            + batch_share(night.run_write_units)
            + night.parked_write_units
            + refresh_writes,
        read_units: apply.read_units()
            + batch_share(night.run_read_units)
            + night.parked_read_units
            + refresh_reads,
        firehose_billed_bytes: rt.billed_record_bytes,
        firehose_objects: objects.count(),
        s3_puts: objects.count() + report.written.len() as u64 + manifest.files.len() as u64 + 1,
    };
    // Invoices against the ground truth, customer by customer.
    let mut pooled: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for key in sim.keys() {
        pooled.entry((key.email.clone(), key.plan.unwrap_or(&pricing.default_plan).to_owned())).or_default();
    }
    for ((key, day), tally) in &truth.per_key_day {
        if month.contains(*day) {
            let k = &sim.keys()[*key];
            pooled
                .entry((k.email.clone(), k.plan.unwrap_or(&pricing.default_plan).to_owned()))
                .or_default()
                .add(*tally);
        }
    }
    let mut expected_amount = Decimal::ZERO;
    let mut mismatches = Vec::new();
    let invoiced: BTreeMap<(String, String), (u64, Decimal)> = manifest
        .invoices
        .iter()
        .map(|i| ((i.customer_email.clone(), i.plan.clone()), (i.successful_calls, i.amount_for_period)))
        .collect();
    for ((email, plan), tally) in &pooled {
        let plan_rules = pricing.plan(Some(plan))?;
        let amount: Decimal =
            pricing.price(plan_rules, tally.successful_calls).iter().map(|l| l.amount).sum();
        expected_amount += amount;
        match invoiced.get(&(email.clone(), plan.clone())) {
            Some((calls, invoiced_amount))
                if *calls == tally.successful_calls && *invoiced_amount == amount => {}
            other => mismatches.push(format!(
                "{email} ({plan}): truth {} billable, {amount}; invoiced {other:?}",
                tally.successful_calls
            )),
        }
    }
    if invoiced.len() != pooled.len() {
        mismatches.push(format!(
            "{} invoices, {} customers and plans in the truth",
            invoiced.len(),
            pooled.len()
        ));
    }
    let totals = &manifest.totals;
    let invoiced_tally = Tally {
        successful_calls: totals.successful_calls,
        failed_calls: totals.failed_calls,
        usage_count: totals.usage_count,
    };
    if invoiced_tally != truth_total {
        mismatches.push(format!("invoiced totals {invoiced_tally:?}, truth {truth_total:?}"));
    }
    if totals.amount != expected_amount {
        mismatches.push(format!(
            "invoiced {} {}, truth prices to {expected_amount}",
            totals.amount, manifest.currency
        ));
    }
    let keys_off_count = keys_off.len();
    mismatches.extend(keys_off);
    let exact = mismatches.is_empty() && left_items == 0;

    let pipeline_seconds = (realtime_time + archive_time).as_secs_f64();
    let stages = [
        Stage {
            name: "ground truth",
            tally: truth_total,
            seconds: generate_time.as_secs_f64(),
            events: log_events,
        },
        Stage {
            name: "realtime counters",
            tally: sum(&realtime_items),
            seconds: realtime_time.as_secs_f64(),
            events: log_events,
        },
        Stage {
            name: "after reconcile",
            tally: sum(&reconciled_items),
            seconds: reconcile_time.as_secs_f64(),
            events: report.rollup.stats.rows,
        },
        Stage {
            name: "invoiced",
            tally: invoiced_tally,
            seconds: report_time.as_secs_f64(),
            events: report.rollup.stats.rows,
        },
    ];

    let traffic = match args.volume {
        Volume::Month { streams, .. } => {
            format!(
                "{month}, {requests} requests over {} keys, {streams} log streams, daily cycle",
                args.keys
            )
        }
        Volume::Steady { profile, minutes } => format!(
            "{} traffic ({}) for {} h from {}, {requests} requests",
            profile.name,
            profile.describe(),
            (Decimal::from(minutes) / Decimal::from(60)).round_dp(2).normalize(),
            first_day
        ),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "meter demo: {traffic} ({} customers, {revoked} keys revoked mid-month), seed {}, faults {}",
        pooled.len(),
        args.seed,
        args.faults_name
    );
    let _ = writeln!(
        out,
        "  {deliveries} deliveries of {log_events} log events ({:.1} events each, each log stream delivered every 2 s), \
         {} transformer invocations (Firehose buffer {} KiB / {} s)",
        ratio(log_events, deliveries),
        rt.invocations,
        Buffering::DEPLOYED.max_bytes >> 10,
        Buffering::DEPLOYED.max_age.num_seconds()
    );
    let _ = writeln!(
        out,
        "  faults: {redelivered} deliveries arrived twice, {} invocations retried by Firehose, {} invocations with the \
         counter store down, {} malformed lines, {} calls of unknown keys, {} late calls of the previous month",
        retried,
        faulty.down_invocations(),
        truth.malformed,
        truth.orphans.usage_count,
        truth.previous_month_events
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  stage                  billable     failed        calls       time  throughput");
    for stage in &stages {
        let _ = writeln!(
            out,
            "  {:<18} {:>12} {:>10} {:>12} {:>8.2}s  {}",
            stage.name,
            stage.tally.successful_calls,
            stage.tally.failed_calls,
            stage.tally.usage_count,
            stage.seconds,
            if stage.name == "ground truth" {
                format!("{} generated", rate(stage.events, stage.seconds))
            } else {
                rate(stage.events, stage.seconds)
            }
        );
    }
    let _ = writeln!(
        out,
        "  (archive writer: {:.2}s, {})",
        archive_time.as_secs_f64(),
        rate(log_events, archive_time.as_secs_f64())
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  drift before reconcile: {drifted_items} day items off by {drift_size} in all; {} calls not applied while the \
         store was down (metric CounterEventsNotApplied); {} duplicate deliveries not counted again",
        apply.not_applied.usage_count, apply.deliveries_already_applied
    );
    let _ = writeln!(
        out,
        "  reconcile: {} items corrected of {} checked ({} calls missing from realtime, {} extra), {} orphan calls \
         reported; drift left: {left_items} items ({left_size})",
        report.run.items_corrected,
        report.run.items_checked,
        report.run.missing_in_realtime,
        report.run.extra_in_realtime,
        report.run.orphan_events,
    );
    if let Some(rollup) = &athena_rollup_figures {
        let _ = writeln!(
            out,
            "  the busiest day ({busiest_day_events} events) is beyond the local engine: the deployed job \
             takes its rollup from Athena; here the local engine stood in, apart ({:.1}s), and the reconcile \
             above ({:.1}s) is what the job itself does",
            rollup.wall_seconds,
            reconcile_time.as_secs_f64()
        );
    }
    let _ = writeln!(
        out,
        "  key totals: kept by the writes, parked usage brought in by {refresh_count} refreshes ({} key writes) \
         and the run's ({}); {} keys differ from their day items",
        refresh_keys_moved, report.run.key_totals_refreshed, keys_off_count
    );
    let _ = writeln!(
        out,
        "  invoices: {} for {}, total {} {} ({} billable calls); {} unattributed calls not billed",
        totals.invoices,
        month,
        totals.amount,
        manifest.currency,
        totals.successful_calls,
        totals.unattributed_usage_count
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "  on AWS this traffic would cost (prices of {}):", cost::PRICE_LIST_DATE);
    let lines = cost::estimate(&usage);
    let total_cost: Decimal = lines.iter().map(|l| l.usd).sum();
    for line in &lines {
        let _ = writeln!(
            out,
            "    {:<40} {:>24}  ${:<10} ({})",
            line.what,
            line.quantity,
            line.usd.round_dp(4),
            cost::price_label(line.what)
        );
    }
    let million_calls = Decimal::from(requests.max(1)) / Decimal::from(1_000_000);
    let _ = writeln!(
        out,
        "    {:<40} {:>24}  ${} (${} per million API calls)",
        "total",
        "",
        total_cost.round_dp(4),
        (total_cost / million_calls).round_dp(4)
    );
    let _ = writeln!(out);
    out.push_str(&cost::design_comparison(&rt, requests));
    let _ = writeln!(out);
    let _ = writeln!(out, "  files: {}", dir.display());
    let _ = writeln!(out, "    store    {}", dir.join("meter.db").display());
    let _ = writeln!(out, "    archive  {} ({} Parquet files)", archive_root.display(), archived.files.len());
    let _ = writeln!(out, "    drift    {}", archive_root.join("drift").display());
    let _ = writeln!(out, "    invoices {}", reports_root.join(outcome.folder()).display());
    let _ = writeln!(
        out,
        "  pipeline time {pipeline_seconds:.2}s for {log_events} log events ({})",
        rate(log_events, pipeline_seconds)
    );
    let _ = writeln!(out);
    if exact {
        let _ = writeln!(
            out,
            "OK: the invoices match the ground truth exactly (every customer, every call, every cent)."
        );
    } else {
        let _ = writeln!(out, "MISMATCH: the invoices do not match the ground truth:");
        for m in mismatches.iter().take(20) {
            let _ = writeln!(out, "  {m}");
        }
        if left_items > 0 {
            let _ = writeln!(out, "  {left_items} day items still differ after reconcile");
        }
    }
    if args.json {
        let summary = serde_json::json!({
            "traffic": traffic,
            "calls": requests,
            "exact": exact,
            "costPerMillion": (total_cost / million_calls).round_dp(4).to_string(),
            // Micro-dollars: a short run costs cents, and four places would leave its per-million
            // figure unrecomputable from it.
            "cost": total_cost.round_dp(6).to_string(),
            "pipeline": {
                "figures": pipeline_figures,
                "transformerSeconds": pipeline_seconds,
                "generateSeconds": generate_time.as_secs_f64(),
                "invocations": rt.invocations + retried,
                "writeUnits": apply.write_units() + apply.parked_write_units + refresh_writes,
                "readUnits": apply.read_units() + refresh_reads,
                "parkedRefreshes": refresh_count,
                "parkedRefreshSeconds": refresh_time.as_secs_f64(),
            },
            "reconcile": {
                "wallSeconds": reconcile_figures.wall_seconds,
                "userSeconds": reconcile_figures.user_seconds,
                "peakMiB": reconcile_figures.peak_mib,
                "readUnits": night.run_read_units + night.parked_read_units,
                "writeUnits": night.run_write_units + night.parked_write_units,
                "itemsChecked": report.run.items_checked,
                "parkedCleared": report.run.parked_cleared,
            },
            // Where the deployed job takes its rollup from Athena: the rollup's own step, apart.
            "athenaRollup": athena_rollup_figures,
            "report": report_figures,
            "dynamodb": { "writeUnits": usage.write_units, "readUnits": usage.read_units },
            "s3Puts": usage.s3_puts,
            "busiestDayEvents": busiest_day_events,
            "reconcileEngine": if deployed_memory.is_some() { "local" } else { "athena" },
            "deployedReconcileMemoryMiB": deployed_memory.unwrap_or(meter_reconcile::engine::ATHENA_RECONCILE_MEMORY_MIB),
        });
        return Ok((format!("{summary}\n"), exact));
    }
    Ok((out, exact))
}

/// The day the deployed reconcile is sized for: a steady traffic's day, or the month's busiest.
fn busiest_day_events(volume: Volume, truth: &Truth, requests: u64) -> u64 {
    match volume {
        Volume::Steady { minutes, .. } => requests * 1440 / u64::from(minutes.max(1)),
        Volume::Month { .. } => {
            let mut per_day: BTreeMap<Day, u64> = BTreeMap::new();
            for ((_, day), tally) in &truth.per_key_day {
                *per_day.entry(*day).or_default() += tally.usage_count;
            }
            per_day.into_values().max().unwrap_or(0)
        }
    }
}

/// A night's reconcile in DynamoDB units. The run's own: a correction or a fold is a transaction of
/// the day item and its key (4 units), a fold also moves the key's `lastUsed` (1), the parked refresh
/// at its end writes the keys it moves; it reads each key's days (about 2 units) and the keys' Scan.
/// The parked items it clears: read (a unit per 4 KB) and deleted (as many units as their writes).
struct NightUnits {
    run_read_units: u64,
    run_write_units: u64,
    parked_read_units: u64,
    parked_write_units: u64,
}

impl NightUnits {
    fn of(run: &meter_model::ReconcileRun, apply: &meter_model::ApplyReport, keys: u64) -> Self {
        use meter_model::batch::capacity;
        Self {
            // Each correction, fold or close is a 2-item transaction (2 units per item), a fold then
            // moves the key's lastUsed; the run Scans the keys twice (the directory, the open days)
            // and Queries each key's days.
            run_write_units: (run.items_corrected + run.items_folded + run.items_closed) * 4
                + run.items_folded
                + run.key_totals_refreshed,
            run_read_units: run.keys_checked * 2 + 2 * capacity::read_units(keys * capacity::KEY_ITEM_BYTES),
            parked_read_units: apply.parked_write_units.div_ceil(4).max(apply.parked_writes as u64),
            parked_write_units: apply.parked_write_units,
        }
    }
}
