//! `keelctl chaos`: zone failures on one machine (issue 9, DESIGN §5, §9).
//!
//! `run` makes three zones in network namespaces (`net.rs`), each with a
//! controller, a WAL node, a broker and its clients, starts the workload
//! (`workload.py`: idempotent producers and a consumer group in every
//! zone, each writing a JSON-lines history), injects faults (the nemesis,
//! below), heals, waits, drains every partition, and checks the histories
//! (`check.rs`). It reports faults, operations, anomalies (all must be 0),
//! the time from each fault to every partition taking writes again, and the
//! bytes that crossed zones per byte produced and consumed, as text and
//! JSON. Without root it says so and runs the process faults only, on
//! loopback.
//!
//! The run itself happens in a second process inside the router namespace
//! (`chaos inside`), so that it reaches the zones' addresses and nothing
//! outside the namespaces does; the first process makes and removes the
//! namespaces, also when the second fails or Ctrl-C stops the run.

pub mod check;
pub mod net;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::launcher::{http_request, BrokerSpec, ClusterOptions, ControllerSpec, LocalCluster, Managed, WalSpec};
use net::{Net, ZONES};

const WORKLOAD: &str = include_str!("chaos/workload.py");
const TOPIC: &str = "chaos";
const PARTITIONS: i32 = 24;
/// Records per second each zone's producer sends.
const RATE: u32 = 60;

#[derive(Debug, clap::Subcommand)]
pub enum ChaosCommand {
    /// Runs a scenario (or a seeded random schedule with --soak) and checks it.
    Run(RunArgs),
    /// Checks the histories of a run kept in DIR.
    Check {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The run inside the router namespace (started by `run`).
    #[command(hide = true)]
    Inside {
        #[arg(long)]
        net: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// zone-loss, zone-loss-wiped, zone-partition, one-way-partition, controller-leader-kill,
    /// controller-leader-freeze, controller-follower-freeze, wal-freeze,
    /// wal-slow-disk, wal-power-cut, zone-loss-and-broker-kill, broker-zombie,
    /// broker-inbound-loss, wal-disk-full, object-store-full,
    /// object-store-errors, object-store-slow, or none (no fault: a baseline).
    #[arg(long, default_value = "zone-loss")]
    pub scenario: String,
    /// Runs random faults for this long instead of a scenario (e.g. 10m).
    #[arg(long, value_parser = humantime_serde::re::humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// Picks the random schedule (and which zone a scenario hits).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Producers only: the cross-zone bytes are then the write path's alone.
    #[arg(long)]
    pub no_consumers: bool,
    /// Keeps the histories, logs and report here (default: a new temporary
    /// directory, kept only when the run finds an anomaly).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Where the brokers keep objects: `dir`, a tmpfs shared by the
    /// brokers (object-store-full fills it), or `s3`, moto's S3 server
    /// behind a fault proxy (object-store-errors and object-store-slow).
    /// Default: `s3` for a soak and the S3 scenarios, else `dir`.
    #[arg(long, value_enum)]
    pub objects: Option<Objects>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Objects {
    Dir,
    S3,
}

impl Objects {
    fn name(self) -> &'static str {
        match self {
            Objects::Dir => "dir",
            Objects::S3 => "s3",
        }
    }
}

/// One fault the nemesis injects, and heals after `hold`.
#[derive(Clone, Debug)]
enum Fault {
    /// Kill the zone's processes and drop its traffic; restart them at heal.
    ZoneLoss(String),
    /// `ZoneLoss`, and the zone comes back with its disks wiped: its
    /// controller must rejoin as a learner (then promoted) and its WAL node
    /// register as a new incarnation (DESIGN §5).
    ZoneLossWiped(String),
    /// Drop the zone's traffic, processes alive.
    ZonePartition(String),
    /// Drop what one zone sends another.
    OneWay(String, String),
    /// a and b cut apart; c sees both.
    Bridge,
    /// The zone cut off and back, five times in a row.
    Flap(String),
    /// Kill -9 the controller leader; restarted at heal.
    ControllerLeaderKill,
    /// SIGSTOP the zone's broker (a zombie writer); SIGCONT at heal.
    BrokerZombie(String),
    /// Kill -9 one process of a zone; restarted at heal.
    KillProcess(String, Kind),
    /// The zone's WAL node's disk (a tmpfs) filled up; emptied at heal.
    WalDiskFull(String),
    /// The object store (a tmpfs shared by the brokers, as a bucket is)
    /// full: every upload fails until heal.
    ObjectStoreFull,
    /// The S3 server answers every request 500 InternalError until heal.
    ObjectStoreErrors,
    /// The S3 server answers every request `s3::SLOW_ANSWER` late until heal.
    ObjectStoreSlow,
    /// SIGSTOP the controller leader (`true`) or a follower: silent, its
    /// sockets open, as a frozen host or a zone dropping packets looks.
    ControllerFreeze { leader: bool },
    /// SIGSTOP the zone's WAL node; SIGCONT at heal.
    WalFreeze(String),
    /// A zone lost, and one process of another zone killed at once.
    ZoneLossAndKill(String, String, Kind),
    /// Everything sent to the zone's broker dropped, what it sends still
    /// delivered: it hears nobody (no replies to its heartbeats, no
    /// clients) while the controller hears it.
    BrokerInboundLoss(String),
    /// Every fdatasync of the zone's WAL node takes `SLOW_SYNC_MS` longer
    /// (a slow disk); back to normal at heal.
    WalSlowDisk(String),
    /// The zone's WAL node loses power inside a batch: a random half of the
    /// batch's pages reach the disk, and it dies before the fdatasync
    /// (`keel_wal::faults`); restarted at heal, its journal must open.
    WalPowerCut(String),
}

/// How much longer each fdatasync takes on a slow disk.
const SLOW_SYNC_MS: u64 = 400;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Controller,
    Wal,
    Broker,
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::ZoneLoss(_) => "zone-loss",
            Fault::ZoneLossWiped(_) => "zone-loss-wiped",
            Fault::ZonePartition(_) => "zone-partition",
            Fault::OneWay(..) => "one-way-partition",
            Fault::Bridge => "bridge",
            Fault::Flap(_) => "flapping-partition",
            Fault::ControllerLeaderKill => "controller-leader-kill",
            Fault::BrokerZombie(_) => "broker-zombie",
            Fault::KillProcess(..) => "process-kill",
            Fault::WalDiskFull(_) => "wal-disk-full",
            Fault::ObjectStoreFull => "object-store-full",
            Fault::ObjectStoreErrors => "object-store-errors",
            Fault::ObjectStoreSlow => "object-store-slow",
            Fault::ControllerFreeze { leader: true } => "controller-leader-freeze",
            Fault::ControllerFreeze { leader: false } => "controller-follower-freeze",
            Fault::WalFreeze(_) => "wal-freeze",
            Fault::ZoneLossAndKill(_, _, Kind::Broker) => "zone-loss-and-broker-kill",
            Fault::ZoneLossAndKill(_, _, Kind::Wal) => "zone-loss-and-wal-kill",
            Fault::ZoneLossAndKill(_, _, Kind::Controller) => "zone-loss-and-controller-kill",
            Fault::BrokerInboundLoss(_) => "broker-inbound-loss",
            Fault::WalSlowDisk(_) => "wal-slow-disk",
            Fault::WalPowerCut(_) => "wal-power-cut",
        }
    }

    /// The longest this fault may stop writes on any partition (the stall,
    /// `check.rs`); a longer stall fails the run. Every bound is under
    /// `HOLD`, so a fault that stops writes until it heals fails, but those
    /// past what the design keeps available: a full object store (once the
    /// WAL backlog reaches its cap, writes are pushed back until uploads
    /// succeed again, DESIGN §3.4), and a lost zone with a WAL node or a
    /// controller of another zone (one zone of three left: no WAL or Raft
    /// quorum until heal; nothing acknowledged may be lost, and writes must
    /// resume after heal).
    fn stall_bound(kind: &str) -> Duration {
        match kind {
            "controller-leader-freeze" | "controller-follower-freeze" => Duration::from_secs(4),
            // The broker's session (2 s) and a second (issue 21), and the
            // client's own metadata refresh.
            "broker-inbound-loss" => Duration::from_secs(4),
            "wal-freeze" | "wal-disk-full" | "wal-slow-disk" => Duration::from_secs(3),
            // Writes go to the WAL, whatever the object store does.
            "object-store-errors" | "object-store-slow" => Duration::from_secs(3),
            "object-store-full" | "zone-loss-and-wal-kill" | "zone-loss-and-controller-kill" => HOLD + AFTER,
            _ => HOLD - Duration::from_secs(1),
        }
    }

    /// Needs the namespaces (and root, for the tmpfs mounts).
    fn needs_network(&self) -> bool {
        matches!(
            self,
            Fault::ZonePartition(_)
                | Fault::OneWay(..)
                | Fault::Bridge
                | Fault::Flap(_)
                | Fault::WalDiskFull(_)
                | Fault::ObjectStoreFull
                | Fault::BrokerInboundLoss(_)
        )
    }

    /// The objects backend the fault needs, if it needs one.
    fn objects(&self) -> Option<Objects> {
        match self {
            Fault::ObjectStoreFull => Some(Objects::Dir),
            Fault::ObjectStoreErrors | Fault::ObjectStoreSlow => Some(Objects::S3),
            _ => None,
        }
    }

    /// A random fault; the object store's are those `objects` can have.
    fn random(rng: &mut impl Rng, objects: Objects) -> Fault {
        let z = ZONES[rng.gen_range(0..3)].to_owned();
        let other = ZONES[(ZONES.iter().position(|x| *x == z).unwrap_or(0) + rng.gen_range(1..3)) % 3].to_owned();
        match rng.gen_range(0..18) {
            14 => Fault::BrokerInboundLoss(z),
            15 => Fault::WalSlowDisk(z),
            16 => Fault::WalPowerCut(z),
            0 => Fault::ZoneLoss(z),
            8 => Fault::ZoneLossWiped(z),
            9 => Fault::WalDiskFull(z),
            10 => match objects {
                Objects::Dir => Fault::ObjectStoreFull,
                Objects::S3 if rng.gen_bool(0.5) => Fault::ObjectStoreErrors,
                Objects::S3 => Fault::ObjectStoreSlow,
            },
            11 => Fault::ControllerFreeze { leader: rng.gen_bool(0.5) },
            12 => Fault::WalFreeze(z),
            13 => Fault::ZoneLossAndKill(z, other, [Kind::Controller, Kind::Wal, Kind::Broker][rng.gen_range(0..3)]),
            1 => Fault::ZonePartition(z),
            2 => Fault::OneWay(z, other),
            3 => Fault::Bridge,
            4 => Fault::Flap(z),
            5 => Fault::ControllerLeaderKill,
            6 => Fault::BrokerZombie(z),
            _ => Fault::KillProcess(z, [Kind::Controller, Kind::Wal, Kind::Broker][rng.gen_range(0..3)]),
        }
    }
}

/// The fixed scenarios: one fault, `HOLD` long, into a run of `SECONDS`.
fn scenario(name: &str, rng: &mut impl Rng) -> anyhow::Result<Fault> {
    let zone = ZONES[rng.gen_range(0..3)].to_owned();
    Ok(match name {
        "zone-loss" => Fault::ZoneLoss(zone),
        "zone-loss-wiped" => Fault::ZoneLossWiped(zone),
        "wal-disk-full" => Fault::WalDiskFull(zone),
        "object-store-full" => Fault::ObjectStoreFull,
        "object-store-errors" => Fault::ObjectStoreErrors,
        "object-store-slow" => Fault::ObjectStoreSlow,
        "zone-partition" => Fault::ZonePartition(zone),
        "one-way-partition" => {
            let other = ZONES[(zone_index(&zone) + rng.gen_range(1..3)) % 3].to_owned();
            Fault::OneWay(zone, other)
        }
        "controller-leader-kill" => Fault::ControllerLeaderKill,
        "broker-zombie" => Fault::BrokerZombie(zone),
        "controller-leader-freeze" => Fault::ControllerFreeze { leader: true },
        "controller-follower-freeze" => Fault::ControllerFreeze { leader: false },
        "wal-freeze" => Fault::WalFreeze(zone),
        "broker-inbound-loss" => Fault::BrokerInboundLoss(zone),
        "wal-slow-disk" => Fault::WalSlowDisk(zone),
        "wal-power-cut" => Fault::WalPowerCut(zone),
        "zone-loss-and-broker-kill" => {
            let other = ZONES[(zone_index(&zone) + rng.gen_range(1..3)) % 3].to_owned();
            Fault::ZoneLossAndKill(zone, other, Kind::Broker)
        }
        other => anyhow::bail!(
            "unknown scenario {other:?}: use zone-loss, zone-loss-wiped, zone-partition, one-way-partition, controller-leader-kill, controller-leader-freeze, controller-follower-freeze, wal-freeze, wal-slow-disk, wal-power-cut, zone-loss-and-broker-kill, broker-zombie, broker-inbound-loss, wal-disk-full, object-store-full, object-store-errors or object-store-slow, or --soak"
        ),
    })
}

/// The WAL nodes' segments and the object store's smallest size in a namespaced run.
const WAL_SEGMENT_BYTES: u64 = 36 << 20;
const OBJECTS_BYTES: u64 = 512 << 20;

/// The object store's size for a run of `seconds`: four times what the
/// producers write (1 KiB values), so that compaction's rewrites, the
/// internal topics and snapshots fit, and only the object-store-full fault
/// fills it (a 30-minute soak filled 512 MiB after 25 minutes, which made
/// every later failover wait for space).
fn objects_bytes(seconds: Duration) -> u64 {
    let written = u64::from(RATE) * ZONES.len() as u64 * 1024 * seconds.as_secs();
    OBJECTS_BYTES.max(4 * written)
}

const WARMUP: Duration = Duration::from_secs(5);
const HOLD: Duration = Duration::from_secs(8);
const AFTER: Duration = Duration::from_secs(8);

pub async fn run(command: ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::Check { dir, json } => {
            let checked = check::check_dir(&dir)?;
            let report = Report::from(&checked, "check", 0, None, true);
            report.print(json)?;
            report.verdict()
        }
        ChaosCommand::Run(args) => outside(args).await,
        ChaosCommand::Inside { net, run } => {
            let net: NetSpec = serde_json::from_str(&net)?;
            let net = Net { router: net.router, zones: net.zones, brokers: net.brokers };
            inside(run, Some(net)).await
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct NetSpec {
    router: String,
    zones: std::collections::BTreeMap<String, String>,
    brokers: std::collections::BTreeMap<String, String>,
}

/// Makes the namespaces, runs `chaos inside` in the router namespace, and
/// removes the namespaces whatever happens (SIGINT and SIGTERM included).
async fn outside(args: RunArgs) -> anyhow::Result<()> {
    if let Err(why) = net::available() {
        eprintln!("chaos: {why:#}: running the process faults only, on loopback (partitions need network namespaces)");
        // Stopped by a signal, the run is dropped, and its cluster with it
        // (every process killed by its pid).
        return tokio::select! {
            result = inside(args, None) => result,
            _ = keel_common::signal::shutdown_requested() => anyhow::bail!("interrupted; the run's processes are killed"),
        };
    }
    let id = format!("{:08x}", rand::random::<u32>());
    let net = NetGuard(Net::create(&id)?);
    let spec = serde_json::to_string(&NetSpec {
        router: net.router.clone(),
        zones: net.zones.clone(),
        brokers: net.brokers.clone(),
    })?;
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", &net.router])
        .arg(std::env::current_exe()?)
        .args(["chaos", "inside", "--net", &spec]);
    command.args(["--scenario", &args.scenario, "--seed", &args.seed.to_string()]);
    if let Some(soak) = args.soak {
        command.args(["--soak", &humantime_serde::re::humantime::format_duration(soak).to_string()]);
    }
    if let Some(dir) = &args.dir {
        command.arg("--dir").arg(dir);
    }
    if args.no_consumers {
        command.arg("--no-consumers");
    }
    if let Some(objects) = args.objects {
        command.args(["--objects", objects.name()]);
    }
    if args.json {
        command.arg("--json");
    }
    command.kill_on_drop(true);
    let mut child = command.spawn().context("start the run in the router namespace")?;
    let status = tokio::select! {
        status = child.wait() => Some(status?),
        _ = keel_common::signal::shutdown_requested() => None,
    };
    drop(child);
    drop(net);
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => anyhow::bail!("the chaos run failed ({status})"),
        None => anyhow::bail!("interrupted; the namespaces and their processes are removed"),
    }
}

/// Removes the run's namespaces, and every process in them, when dropped:
/// also when the run fails early.
struct NetGuard(Net);

impl Drop for NetGuard {
    fn drop(&mut self) {
        self.0.destroy();
    }
}

impl std::ops::Deref for NetGuard {
    type Target = Net;
    fn deref(&self) -> &Net {
        &self.0
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Where the run writes: a history per client and the nemesis's log.
struct Histories {
    dir: PathBuf,
    nemesis: std::fs::File,
}

impl Histories {
    fn log(&mut self, event: serde_json::Value) {
        use std::io::Write;
        let mut event = event;
        event["t"] = serde_json::json!(now());
        let _ = writeln!(self.nemesis, "{event}");
    }
}

/// The run, and what to do when it fails: keep its directory and say how
/// to replay it.
async fn inside(args: RunArgs, net: Option<Net>) -> anyhow::Result<()> {
    let (dir, keep) = match &args.dir {
        Some(dir) => (dir.clone(), true),
        None => (tempfile::Builder::new().prefix("keel-chaos").tempdir()?.keep(), false),
    };
    let history = dir.join("history");
    if std::fs::read_dir(&history).is_ok_and(|mut entries| entries.next().is_some()) {
        anyhow::bail!("{} holds the histories of another run: give an empty --dir", dir.display());
    }
    std::fs::create_dir_all(&history)?;
    let replay = {
        let what = match args.soak {
            Some(soak) => format!("--soak {}", humantime_serde::re::humantime::format_duration(soak)),
            None => format!("--scenario {}", args.scenario),
        };
        let consumers = if args.no_consumers { " --no-consumers" } else { "" };
        let objects = args.objects.map(|o| format!(" --objects {}", o.name())).unwrap_or_default();
        format!("keelctl chaos run {what} --seed {}{consumers}{objects}", args.seed)
    };
    let result = run_once(&args, net.as_ref(), &dir, &replay).await;
    if result.is_err() {
        eprintln!("chaos: replay with `{replay}`; histories and logs kept in {}", dir.display());
    } else if !keep {
        unmount_all(&dir);
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Unmounts the run's tmpfs mounts (before its directory is removed).
fn unmount_all(dir: &Path) {
    let mounts = (1..=3).map(|id| dir.join(format!("wal-{id}"))).chain(std::iter::once(dir.join("objects")));
    for mount in mounts {
        let _ = std::process::Command::new("umount").arg(&mount).stderr(std::process::Stdio::null()).status();
    }
}

/// The run: cluster, workload, nemesis, heal, drain, check, report.
async fn run_once(args: &RunArgs, net: Option<&Net>, dir: &Path, replay: &str) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let (schedule, seconds, objects) = match args.soak {
        Some(soak) => {
            let objects = args.objects.unwrap_or(Objects::S3);
            let mut schedule = Vec::new();
            let mut at = WARMUP;
            while at + HOLD + AFTER < soak {
                schedule.push((at, Fault::random(&mut rng, objects)));
                at += HOLD + Duration::from_secs(rng.gen_range(4..12));
            }
            (schedule, soak, objects)
        }
        None if args.scenario == "none" => (Vec::new(), WARMUP + HOLD + AFTER, args.objects.unwrap_or(Objects::Dir)),
        None => {
            let fault = scenario(&args.scenario, &mut rng)?;
            let objects = match (fault.objects(), args.objects) {
                (Some(needed), Some(given)) if needed != given => {
                    anyhow::bail!("{} needs --objects {}, not {}", fault.name(), needed.name(), given.name())
                }
                (needed, given) => given.or(needed).unwrap_or(Objects::Dir),
            };
            (vec![(WARMUP, fault)], WARMUP + HOLD + AFTER, objects)
        }
    };
    let label = match args.soak {
        Some(soak) => format!("soak {}", humantime_serde::re::humantime::format_duration(soak)),
        None => args.scenario.clone(),
    };
    eprintln!(
        "chaos: {label}, seed {} ({} faults, objects in {}); histories and logs in {}",
        args.seed,
        schedule.len(),
        objects.name(),
        dir.display()
    );

    let s3 = match objects {
        Objects::S3 => Some(S3Store::start(net).await?),
        Objects::Dir => None,
    };
    let mut cluster = start_cluster(&dir, net, objects_bytes(seconds), s3.as_ref()).await?;
    let bootstrap = cluster.bootstrap();
    let client = cluster.client()?;
    client
        .create_topic(keel_controller_client::pb::CreateTopicRequest {
            name: TOPIC.into(),
            partitions: PARTITIONS,
            ..Default::default()
        })
        .await?;
    crate::kafka::ready_layout(&bootstrap, TOPIC, Duration::from_secs(60)).await?;
    let script = dir.join("workload.py");
    std::fs::write(&script, WORKLOAD)?;
    let mut histories = Histories {
        dir: dir.join("history"),
        nemesis: std::fs::File::create(dir.join("history").join("nemesis.jsonl"))?,
    };
    if !args.no_consumers {
        // The group's members start from committed offsets (workload.py, `start_group`).
        let mut start = client_args(&bootstrap, seconds.as_secs_f64(), &histories.dir.join("start.jsonl"));
        start.extend(["--zone".into(), ZONES[0].into()]);
        let ns = net.map(|n| n.zones[ZONES[0]].clone());
        let status = workload(&script, ns.as_deref(), "start", &start, &dir, "start")?.wait().await?;
        anyhow::ensure!(status.success(), "the consumer group could not be started ({status}): see start.log");
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for zone in ZONES {
        let ns = net.map(|n| n.zones[zone].clone());
        let common = |role: &str| {
            let mut args =
                client_args(&bootstrap, seconds.as_secs_f64(), &histories.dir.join(format!("{role}-{zone}.jsonl")));
            args.extend(["--zone".into(), zone.into()]);
            args
        };
        let mut produce = common("producer");
        produce.extend(["--rate".into(), RATE.to_string()]);
        let name = format!("producer-{zone}");
        clients.push((name.clone(), workload(&script, ns.as_deref(), "produce", &produce, &dir, &name)?));
        if !args.no_consumers {
            let name = format!("consumer-{zone}");
            clients
                .push((name.clone(), workload(&script, ns.as_deref(), "consume", &common("consumer"), &dir, &name)?));
        }
    }

    let mut skipped = Vec::new();
    for (at, fault) in &schedule {
        tokio::time::sleep_until((started + *at).into()).await;
        if fault.needs_network() && net.is_none() {
            skipped.push(fault.name());
            continue;
        }
        if started.elapsed() + HOLD + AFTER / 2 > seconds {
            // Slow heals ate the time: the workload would end before the
            // recovery could be seen.
            skipped.push(fault.name());
            continue;
        }
        let begun = now();
        let undo = inject(&mut cluster, net, s3.as_ref(), fault).await?;
        // Logged once injected: writes acknowledged before must not count
        // as a recovery. When the injection began ends the previous fault's
        // stall window.
        histories.log(
            serde_json::json!({"f": "fault", "kind": fault.name(), "detail": format!("{fault:?}"), "begun": begun}),
        );
        eprintln!("chaos: {:>5.1} s  {fault:?}", started.elapsed().as_secs_f64());
        tokio::time::sleep(HOLD).await;
        heal(&mut cluster, net, s3.as_ref(), undo).await?;
        histories.log(serde_json::json!({"f": "heal", "kind": fault.name()}));
        eprintln!("chaos: {:>5.1} s  healed", started.elapsed().as_secs_f64());
    }
    let mut failures = Vec::new();
    for (name, client) in &mut clients {
        let waited = tokio::time::timeout(Duration::from_secs(120), client.wait()).await;
        if !matches!(waited, Ok(Ok(status)) if status.success()) {
            let _ = client.kill().await;
            failures.push(format!("workload client {name} did not end cleanly ({waited:?}): see {name}.log"));
        }
    }
    for (kind, id, running) in cluster
        .controllers
        .iter_mut()
        .map(|c| ("controller", c.spec.id, c.is_running()))
        .chain(cluster.wal_nodes.iter_mut().map(|w| ("WAL node", w.spec.id, w.is_running())))
        .chain(cluster.brokers.iter_mut().map(|b| ("broker", b.spec.id, b.is_running())))
        .collect::<Vec<_>>()
    {
        if !running {
            failures.push(format!("{kind} {id} is not running: it exited by itself (see its log)"));
        }
    }
    // The bytes the workload made cross, before the drain adds its own.
    let cross = match net {
        Some(net) => Some(net.counters()?),
        None => None,
    };
    // Heal, wait, then the final drain from zone a.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let drain_args = client_args(&bootstrap, 90.0, &histories.dir.join("drain.jsonl"));
    let ns = net.map(|n| n.zones["a"].clone());
    let status = workload(&script, ns.as_deref(), "drain", &drain_args, &dir, "drain")?.wait().await?;
    anyhow::ensure!(status.success(), "the final drain failed; see drain.log in {}", dir.display());
    cluster.stop_all(Duration::from_secs(5));
    let checked = check::check_dir(&histories.dir)?;
    let mut report = Report::from(&checked, &label, args.seed, cross, net.is_some());
    report.skipped = skipped;
    report.failures = failures;
    report.replay = replay.to_owned();
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    report.print(args.json)?;
    report.verdict()
}

/// The arguments every workload client takes.
fn client_args(bootstrap: &str, seconds: f64, history: &Path) -> Vec<String> {
    vec![
        "--bootstrap".to_owned(),
        bootstrap.to_owned(),
        "--topic".into(),
        TOPIC.into(),
        "--partitions".into(),
        PARTITIONS.to_string(),
        "--seconds".into(),
        seconds.to_string(),
        "--out".into(),
        history.to_string_lossy().into_owned(),
    ]
}

/// Starts a workload client (in a zone's namespace when given).
fn workload(
    script: &Path,
    netns: Option<&str>,
    role: &str,
    args: &[String],
    dir: &Path,
    log: &str,
) -> anyhow::Result<tokio::process::Child> {
    let python = crate::launcher::python();
    let mut command = match netns {
        Some(ns) => {
            let mut command = tokio::process::Command::new("ip");
            command.args(["netns", "exec", ns]).arg(&python);
            command
        }
        None => tokio::process::Command::new(&python),
    };
    let log = std::fs::File::create(dir.join(format!("{log}.log")))?;
    command
        .arg(script)
        .arg(role)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "start the workload with {} (confluent-kafka: KEEL_SETUP=test scripts/setup installs it)",
                python.display()
            )
        })
}

/// A cluster of three zones: each a controller, a WAL node and a broker, the
/// broker in a namespace of its own and the others in the zone's, each
/// namespace on its own address; or on loopback without namespaces.
async fn start_cluster(
    dir: &Path,
    net: Option<&Net>,
    objects_bytes: u64,
    s3: Option<&S3Store>,
) -> anyhow::Result<LocalCluster> {
    let options = ClusterOptions { cluster_id: "keel-chaos".into(), controller_args: vec![] };
    let mut cluster = match net {
        None => {
            let specs = LocalCluster::free_port_specs(dir, 3)?;
            let mut cluster = LocalCluster::new(dir, options, specs)?;
            cluster.add_free_port_wal_nodes(3)?;
            cluster.add_free_port_brokers(3, &[])?;
            cluster
        }
        Some(net) => {
            let at = |zone: &str, port: u16| SocketAddr::new(net::zone_ip(zone).into(), port);
            let specs = ZONES
                .iter()
                .enumerate()
                .map(|(i, zone)| ControllerSpec {
                    id: i as u32 + 1,
                    grpc: at(zone, 9190),
                    admin: at(zone, 9290),
                    data_dir: dir.join(format!("controller-{}", i + 1)),
                })
                .collect::<Vec<_>>();
            let mut cluster = LocalCluster::new(dir, options, Vec::new())?;
            if s3.is_none() {
                mount_tmpfs(&dir.join("objects"), objects_bytes)?;
            }
            for (i, (spec, zone)) in specs.into_iter().zip(ZONES).enumerate() {
                cluster.controllers.push(Managed::in_netns(spec, &net.zones[zone]));
                let id = i as u32 + 1;
                // Small disks of their own, which a fault can fill: 4 segments (a
                // segment holds the largest entry, 32 MiB).
                let data_dir = dir.join(format!("wal-{id}"));
                mount_tmpfs(&data_dir, 4 * WAL_SEGMENT_BYTES)?;
                let wal = WalSpec {
                    id,
                    zone: zone.into(),
                    grpc: at(zone, 9390),
                    admin: at(zone, 9490),
                    data_dir,
                    args: vec!["--segment-bytes".into(), WAL_SEGMENT_BYTES.to_string()],
                };
                cluster.wal_nodes.push(Managed::in_netns(wal, &net.zones[zone]));
                let at_broker = |port: u16| SocketAddr::new(net::broker_ip(zone).into(), port);
                let broker =
                    BrokerSpec { id, zone: zone.into(), kafka: at_broker(9092), admin: at_broker(9592), args: vec![] };
                cluster.brokers.push(Managed::in_netns(broker, &net.brokers[zone]));
            }
            cluster
        }
    };
    // The WAL nodes' slow-disk and power-cut faults go through their admin port.
    for wal in &mut cluster.wal_nodes {
        wal.spec.args.extend(["--allow-disk-faults".into(), "true".into()]);
    }
    if let Some(s3) = s3 {
        for broker in &mut cluster.brokers {
            let endpoint = s3.endpoint(net.map(|_| broker.spec.zone.as_str()));
            broker.spec.args.extend(crate::s3::broker_args(&endpoint, s3.server.bucket(), &[]));
        }
    }
    cluster.start_all()?;
    cluster.wait_for_leader(Duration::from_secs(60)).await?;
    cluster.start_all_wal()?;
    cluster.wait_for_wal_nodes(Duration::from_secs(60)).await?;
    cluster.start_all_brokers()?;
    cluster.wait_for_brokers(Duration::from_secs(60)).await?;
    Ok(cluster)
}

/// What healing a fault takes.
enum Undo {
    Network,
    Restart(Vec<(Kind, usize)>),
    /// The zone's processes with their disks wiped, and the WAL node's
    /// incarnation before.
    RestartWiped(usize, String),
    /// A file that filled a disk.
    Remove(PathBuf),
    Resume(Kind, usize),
    /// A WAL node's fdatasyncs back to normal speed.
    SyncDelay(usize),
    /// The S3 proxy forwarding everything again.
    ObjectStore,
    Nothing,
}

fn zone_index(zone: &str) -> usize {
    ZONES.iter().position(|z| *z == zone).unwrap_or(0)
}

/// moto's S3 server, and the fault proxy the brokers reach it through: on
/// all of the router's addresses in a namespaced run (each broker calls its
/// gateway), on loopback otherwise.
struct S3Store {
    server: crate::s3::S3Server,
    proxy: crate::s3::FaultProxy,
}

impl S3Store {
    async fn start(net: Option<&Net>) -> anyhow::Result<S3Store> {
        let server = crate::s3::S3Server::start().await?;
        let listen = match net {
            Some(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let proxy = crate::s3::FaultProxy::start_on(listen, server.addr()).await?;
        Ok(S3Store { server, proxy })
    }

    /// The endpoint a broker of `zone` (in a namespaced run) uses.
    fn endpoint(&self, zone: Option<&str>) -> String {
        match zone {
            Some(zone) => {
                format!("http://{}:{}", net::gateway(net::broker_ip(zone)), self.proxy.addr().port())
            }
            None => self.proxy.endpoint(),
        }
    }
}

async fn inject(
    cluster: &mut LocalCluster,
    net: Option<&Net>,
    s3: Option<&S3Store>,
    fault: &Fault,
) -> anyhow::Result<Undo> {
    Ok(match fault {
        Fault::ZoneLoss(zone) => {
            let i = zone_index(zone);
            cluster.brokers[i].kill9();
            cluster.wal_nodes[i].kill9();
            cluster.controllers[i].kill9();
            if let Some(net) = net {
                net.isolate(zone)?;
            }
            Undo::Restart(vec![(Kind::Controller, i), (Kind::Wal, i), (Kind::Broker, i)])
        }
        Fault::ZoneLossWiped(zone) => {
            let i = zone_index(zone);
            let image = cluster.client()?.read_image().await?;
            let id = keel_controller_client::NodeId(cluster.wal_nodes[i].spec.id);
            let incarnation = image.wal_nodes.get(&id).map(|n| n.incarnation.clone()).unwrap_or_default();
            cluster.brokers[i].kill9();
            cluster.wal_nodes[i].kill9();
            cluster.controllers[i].kill9();
            if let Some(net) = net {
                net.isolate(zone)?;
            }
            Undo::RestartWiped(i, incarnation)
        }
        Fault::ZonePartition(zone) => {
            net.context("partitions need namespaces")?.isolate(zone)?;
            Undo::Network
        }
        Fault::OneWay(from, to) => {
            net.context("partitions need namespaces")?.cut(from, to)?;
            Undo::Network
        }
        Fault::BrokerInboundLoss(zone) => {
            net.context("inbound loss needs namespaces")?.deafen_broker(zone)?;
            Undo::Network
        }
        Fault::Bridge => {
            let net = net.context("partitions need namespaces")?;
            net.cut("a", "b")?;
            net.cut("b", "a")?;
            Undo::Network
        }
        Fault::Flap(zone) => {
            let net = net.context("partitions need namespaces")?;
            for _ in 0..5 {
                net.isolate(zone)?;
                tokio::time::sleep(Duration::from_millis(800)).await;
                net.heal()?;
                tokio::time::sleep(Duration::from_millis(800)).await;
            }
            Undo::Nothing
        }
        Fault::ControllerLeaderKill => {
            let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
            cluster.controllers[leader].kill9();
            Undo::Restart(vec![(Kind::Controller, leader)])
        }
        Fault::WalDiskFull(zone) => {
            let dir = cluster.wal_nodes[zone_index(zone)].spec.data_dir.clone();
            Undo::Remove(fill(&dir)?)
        }
        Fault::ObjectStoreFull => {
            anyhow::ensure!(s3.is_none(), "object-store-full needs --objects dir");
            Undo::Remove(fill(&cluster.dir.join("objects"))?)
        }
        Fault::ObjectStoreErrors | Fault::ObjectStoreSlow => {
            let s3 = s3.context("the object store's faults need --objects s3")?;
            let kind = match fault {
                Fault::ObjectStoreErrors => crate::s3::Fault::ServerError,
                _ => crate::s3::Fault::Slow,
            };
            s3.proxy.set(kind);
            Undo::ObjectStore
        }
        Fault::BrokerZombie(zone) => {
            let i = zone_index(zone);
            cluster.brokers[i].pause(true);
            Undo::Resume(Kind::Broker, i)
        }
        Fault::ControllerFreeze { leader } => {
            let leading = cluster.wait_for_leader(Duration::from_secs(30)).await?;
            let i = if *leader { leading } else { (leading + 1) % cluster.controllers.len() };
            cluster.controllers[i].pause(true);
            Undo::Resume(Kind::Controller, i)
        }
        Fault::WalFreeze(zone) => {
            let i = zone_index(zone);
            cluster.wal_nodes[i].pause(true);
            Undo::Resume(Kind::Wal, i)
        }
        Fault::ZoneLossAndKill(zone, other, kind) => {
            let (i, j) = (zone_index(zone), zone_index(other));
            cluster.brokers[i].kill9();
            cluster.wal_nodes[i].kill9();
            cluster.controllers[i].kill9();
            if let Some(net) = net {
                net.isolate(zone)?;
            }
            match kind {
                Kind::Controller => cluster.controllers[j].kill9(),
                Kind::Wal => cluster.wal_nodes[j].kill9(),
                Kind::Broker => cluster.brokers[j].kill9(),
            }
            Undo::Restart(vec![(Kind::Controller, i), (Kind::Wal, i), (Kind::Broker, i), (*kind, j)])
        }
        Fault::WalSlowDisk(zone) => {
            let i = zone_index(zone);
            set_sync_delay(cluster, i, SLOW_SYNC_MS).await?;
            Undo::SyncDelay(i)
        }
        Fault::WalPowerCut(zone) => {
            let i = zone_index(zone);
            let admin = cluster.wal_nodes[i].spec.admin;
            let (status, body) = http_request(admin, "POST", "/faults/power-cut", "").await?;
            anyhow::ensure!(status == 200, "arming the power cut of WAL node {} answered {status}: {body}", i + 1);
            // Under the workload's appends the next batch comes at once.
            let deadline = Instant::now() + Duration::from_secs(5);
            while cluster.wal_nodes[i].is_running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::ensure!(
                !cluster.wal_nodes[i].is_running(),
                "WAL node {} took no batch in 5 s after its power cut was armed",
                i + 1
            );
            Undo::Restart(vec![(Kind::Wal, i)])
        }
        Fault::KillProcess(zone, kind) => {
            let i = zone_index(zone);
            match kind {
                Kind::Controller => cluster.controllers[i].kill9(),
                Kind::Wal => cluster.wal_nodes[i].kill9(),
                Kind::Broker => cluster.brokers[i].kill9(),
            }
            Undo::Restart(vec![(*kind, i)])
        }
    })
}

async fn heal(cluster: &mut LocalCluster, net: Option<&Net>, s3: Option<&S3Store>, undo: Undo) -> anyhow::Result<()> {
    if let Some(net) = net {
        net.heal()?;
    }
    match undo {
        Undo::Network | Undo::Nothing => {}
        Undo::SyncDelay(i) => set_sync_delay(cluster, i, 0).await?,
        Undo::ObjectStore => {
            if let Some(s3) = s3 {
                s3.proxy.set(crate::s3::Fault::None);
            }
        }
        Undo::Resume(kind, i) => match kind {
            Kind::Controller => cluster.controllers[i].pause(false),
            Kind::Wal => cluster.wal_nodes[i].pause(false),
            Kind::Broker => cluster.brokers[i].pause(false),
        },
        Undo::Restart(processes) => {
            for (kind, i) in processes {
                match kind {
                    Kind::Controller => cluster.start_controller(i)?,
                    Kind::Wal => cluster.start_wal(i)?,
                    Kind::Broker => cluster.start_broker(i)?,
                }
            }
        }
        Undo::RestartWiped(i, incarnation) => rejoin_wiped(cluster, i, &incarnation).await?,
        Undo::Remove(path) => std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?,
    }
    Ok(())
}

/// Makes every fdatasync of WAL node `i` take `ms` longer (0: normal again).
async fn set_sync_delay(cluster: &LocalCluster, i: usize, ms: u64) -> anyhow::Result<()> {
    let admin = cluster.wal_nodes[i].spec.admin;
    let (status, body) = http_request(admin, "PUT", "/faults/sync-delay", &ms.to_string()).await?;
    anyhow::ensure!(status == 200, "setting WAL node {}'s fdatasync delay answered {status}: {body}", i + 1);
    Ok(())
}

/// Fills the file system of `dir` (a tmpfs of this run) with one file, in
/// 1 MiB writes until it is full; returns the file.
fn fill(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join("chaos-filler");
    let mut file = std::fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(28) => break, // ENOSPC
            Err(error) => return Err(error.into()),
        }
    }
    eprintln!("chaos: filled {} with {} MiB", dir.display(), written >> 20);
    Ok(path)
}

/// Mounts a tmpfs of `bytes` on `dir` (made if missing). The mount lives in
/// this run's mount namespace (`ip netns exec` made one), so it goes away
/// with the run.
fn mount_tmpfs(dir: &Path, bytes: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
        .arg(dir)
        .status()
        .context("run mount")?;
    anyhow::ensure!(status.success(), "mount a tmpfs on {}: {status}", dir.display());
    Ok(())
}

/// Brings zone `i` back with empty disks, and checks DESIGN §5's rules: the
/// controller rejoins as a learner, never as its old voting self, and is
/// promoted; the WAL node registers as a new incarnation.
async fn rejoin_wiped(cluster: &mut LocalCluster, i: usize, old_incarnation: &str) -> anyhow::Result<()> {
    cluster.wipe_controller(i)?;
    // The WAL node's directory is a tmpfs mount point: emptied, not removed.
    for entry in std::fs::read_dir(&cluster.wal_nodes[i].spec.data_dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    cluster.start_controller(i)?;
    cluster.start_wal(i)?;
    cluster.start_broker(i)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    // A learner until promoted: its status says so before it has joined
    // too, so the promotion is retried until the leader takes it.
    loop {
        let role = cluster.node_statuses().await[i].as_ref().map(|s| s.role.clone());
        match role.as_deref() {
            Some("learner") => {
                let request = keel_controller_client::pb::ControllerRequest { controller_id: i as u32 + 1 };
                let promoted = cluster.client()?.call(|mut c| async move { c.promote_controller(request).await }).await;
                match promoted {
                    Ok(_) => break,
                    Err(error) => tracing::debug!("promotion not taken yet: {error}"),
                }
            }
            Some("leader" | "follower" | "candidate") => {
                anyhow::bail!("the wiped controller {} came back as a voter ({role:?}), not a learner", i + 1)
            }
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the wiped controller {} was not promoted from learner in 30 s",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = keel_controller_client::NodeId(cluster.wal_nodes[i].spec.id);
    loop {
        let image = cluster.client()?.read_image().await?;
        if let Some(node) = image.wal_nodes.get(&id).filter(|n| !n.incarnation.is_empty()) {
            if node.incarnation != old_incarnation {
                break;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "the wiped WAL node {} did not register as new in 30 s", id.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "chaos: the wiped controller rejoined as a learner and was promoted; the wiped WAL node registered as new"
    );
    Ok(())
}

/// A run's report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub run: String,
    pub seed: u64,
    pub namespaces: bool,
    pub faults: std::collections::BTreeMap<String, u64>,
    /// Faults not injected: no namespaces (no root), or no time left in
    /// the run to see the recovery.
    pub skipped: Vec<&'static str>,
    /// What went wrong around the checks: a workload client that failed, a
    /// process that exited by itself.
    pub failures: Vec<String>,
    pub sent: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub unknown: u64,
    pub read: u64,
    pub commits: u64,
    pub drained: u64,
    /// Errors the final drain reported, and a few of them.
    pub drain_errors: u64,
    pub drain_error_examples: Vec<String>,
    pub anomalies: std::collections::BTreeMap<&'static str, u64>,
    pub anomaly_examples: std::collections::BTreeMap<String, Vec<String>>,
    /// Seconds from each fault to every partition taking writes again.
    pub recovery_p50_s: Option<f64>,
    pub recovery_p99_s: Option<f64>,
    pub recovery_max_s: Option<f64>,
    pub recoveries: Vec<(String, Option<f64>)>,
    /// Per fault: the longest gap between acknowledgements on one
    /// partition after it, and the bound it must stay under.
    pub stalls: Vec<(String, Option<f64>, f64)>,
    /// Bytes forwarded between zones at the router, and per record byte
    /// acknowledged and read.
    pub cross_zone_bytes: Option<u64>,
    pub cross_zone_per_produced_byte: Option<f64>,
    pub cross_zone_per_consumed_byte: Option<f64>,
    pub cross_zone_by_pair: std::collections::BTreeMap<String, u64>,
    pub replay: String,
}

impl Report {
    fn from(
        checked: &check::Checked,
        run: &str,
        seed: u64,
        cross: Option<std::collections::BTreeMap<(String, String), u64>>,
        namespaces: bool,
    ) -> Report {
        let mut times: Vec<f64> = checked.recoveries.iter().filter_map(|(_, t)| *t).collect();
        times.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            (!times.is_empty()).then(|| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1])
        };
        let cross_total = cross.as_ref().map(|c| c.values().sum::<u64>());
        let ratio = |bytes: u64| cross_total.filter(|_| bytes > 0).map(|c| c as f64 / bytes as f64);
        Report {
            run: run.to_owned(),
            seed,
            namespaces,
            faults: checked.faults.clone(),
            skipped: Vec::new(),
            failures: Vec::new(),
            sent: checked.invoked,
            acknowledged: checked.acknowledged,
            failed: checked.failed,
            unknown: checked.unknown,
            read: checked.read,
            commits: checked.commits,
            drained: checked.drained,
            drain_errors: checked.drain_errors.count,
            drain_error_examples: checked.drain_errors.examples.clone(),
            anomalies: checked.anomaly_counts(),
            anomaly_examples: checked.anomalies.iter().map(|(k, v)| (k.clone(), v.examples.clone())).collect(),
            recovery_p50_s: quantile(0.5),
            recovery_p99_s: quantile(0.99),
            recovery_max_s: times.last().copied(),
            recoveries: checked.recoveries.clone(),
            stalls: checked
                .stalls
                .iter()
                .map(|(kind, stall)| (kind.clone(), *stall, Fault::stall_bound(kind).as_secs_f64()))
                .collect(),
            cross_zone_bytes: cross_total,
            cross_zone_per_produced_byte: ratio(checked.acknowledged_bytes),
            cross_zone_per_consumed_byte: ratio(checked.read_bytes),
            cross_zone_by_pair: cross
                .unwrap_or_default()
                .into_iter()
                .map(|((a, b), n)| (format!("{a}->{b}"), n))
                .collect(),
            replay: String::new(),
        }
    }

    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        let faults: Vec<String> = self.faults.iter().map(|(k, n)| format!("{k} x{n}")).collect();
        println!(
            "chaos run: {} (seed {}, {})",
            self.run,
            self.seed,
            if self.namespaces { "3 zones in network namespaces" } else { "loopback, process faults only" }
        );
        println!("faults: {}", if faults.is_empty() { "none".into() } else { faults.join(", ") });
        for failure in &self.failures {
            println!("FAILED: {failure}");
        }
        if !self.skipped.is_empty() {
            println!("skipped (no namespaces, or no time left to see a recovery): {}", self.skipped.join(", "));
        }
        println!(
            "writes: {} sent, {} acknowledged, {} failed, {} unknown; reads: {}; commits: {}; drained: {}",
            self.sent, self.acknowledged, self.failed, self.unknown, self.read, self.commits, self.drained
        );
        let anomalies: Vec<String> = self.anomalies.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("anomalies: {}", anomalies.join(", "));
        for (name, examples) in &self.anomaly_examples {
            for example in examples {
                println!("  {name}: {example}");
            }
        }
        if self.drain_errors > 0 {
            println!(
                "the final drain reported {} errors, e.g. {}",
                self.drain_errors,
                self.drain_error_examples.join("; ")
            );
        }
        let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
        println!(
            "fault to every partition writable: p50 {}, p99 {}, max {} ({} faults)",
            s(self.recovery_p50_s),
            s(self.recovery_p99_s),
            s(self.recovery_max_s),
            self.recoveries.len()
        );
        for (kind, stall, bound) in &self.stalls {
            println!("{kind}: writes stalled at most {} (bound {bound:.0} s)", s(*stall));
        }
        if let Some(bytes) = self.cross_zone_bytes {
            let r = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
            println!(
                "cross-zone: {bytes} bytes; {} per produced byte, {} per consumed byte",
                r(self.cross_zone_per_produced_byte),
                r(self.cross_zone_per_consumed_byte)
            );
        }
        Ok(())
    }

    /// Fails when an anomaly was found or nothing was acknowledged.
    fn verdict(&self) -> anyhow::Result<()> {
        let found: u64 = self.anomalies.values().sum();
        anyhow::ensure!(found == 0, "{found} anomalies found");
        anyhow::ensure!(self.failures.is_empty(), "{}", self.failures.join("; "));
        let stuck: Vec<&str> = self.recoveries.iter().filter(|(_, t)| t.is_none()).map(|(k, _)| k.as_str()).collect();
        anyhow::ensure!(stuck.is_empty(), "writes did not resume on every partition after {stuck:?}");
        let over: Vec<String> = self
            .stalls
            .iter()
            .filter(|(_, stall, bound)| stall.is_some_and(|stall| stall > *bound))
            .map(|(kind, stall, bound)| {
                format!("{kind} stalled writes {:.2} s (bound {bound:.0} s)", stall.unwrap_or(0.0))
            })
            .collect();
        anyhow::ensure!(over.is_empty(), "{}", over.join("; "));
        anyhow::ensure!(self.acknowledged > 0 || self.run == "check", "no write was acknowledged");
        Ok(())
    }
}
