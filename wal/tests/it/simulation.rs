//! Deterministic simulation of one WAL log: a writer, three WAL nodes in zones
//! a, b and c, recoverers, and the controller as a compare-and-set register,
//! all driven by the I/O-free cores (`QuorumWriter`, `LogReplica`, `Recovery`).
//!
//! Each step picks one enabled action at random from a seeded RNG: deliver the
//! next message of some connection (connections are FIFO, like gRPC streams,
//! so delivery order across connections is arbitrary), break a connection
//! (its messages are lost and the writer is told), fsync a node, crash a node
//! (it loses what it had not fsynced) or restart it, append, reconnect, start
//! a recovery, crash or retry a recoverer, commit a trim point (what is
//! acknowledged is uploaded) or apply it at a node. A node learns trims late
//! or not at all while it is down, and the flaky member lags: trims pass it,
//! and it skips ahead (`LogReplica::trim`). The writer keeps running while it
//! is being recovered: it is the zombie.
//!
//! Checked on every store and after every step:
//! - the same (log, seq) always holds the bytes the writer built;
//! - every entry the writer saw acknowledged is fsynced on an ack quorum
//!   (or trimmed: uploaded);
//! - once the log is sealed at S, the writer never has anything above S
//!   acknowledged, and every entry up to S is fsynced on an ack quorum;
//! - recoveries read entries in seq order and never find a conflict.
//!
//! `KEEL_SIM_SEEDS=N` runs N seeds (default 300); `KEEL_SIM_SEED=S` replays one.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use keel_controller_client::{NodeId, StreamId};
use keel_wal::acceptor::{AppendKind, LogReplica, ReplicaError};
use keel_wal_client::entry::{decode_header, Record};
use keel_wal_client::ids::{LogEpoch, LogId, Offset, Seq};
use keel_wal_client::quorum::{Member, QuorumWriter};
use keel_wal_client::recovery::{Recovery, RecoveryPlan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LOG: LogId = LogId(1);
const NODES: usize = 3;
const ACK_QUORUM: usize = 2;
const STEPS: usize = 3000;
const ENTRIES_MAX: u64 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Actor {
    Writer,
    Recoverer(u64),
    Node(usize),
}

#[derive(Clone, Debug)]
enum Msg {
    Append { epoch: LogEpoch, bytes: Bytes },
    AppendOk { seq: Seq },
    AppendRefused { error: ReplicaError },
    Fence { epoch: LogEpoch },
    FenceOk { last_seq: Seq },
    FenceRefused,
    Read { from: Seq, upto: Seq },
    ReadOk { entries: Vec<Bytes> },
}

/// A WAL node: its journal is `durable` (fsynced) plus `unsynced`, the
/// entries after `base` (what it trimmed, or skipped to).
struct Node {
    up: bool,
    replica: LogReplica,
    base: Seq,
    durable: Vec<(LogEpoch, Bytes)>,
    unsynced: Vec<(LogEpoch, Bytes)>,
    fence_epoch: LogEpoch,
    /// Acknowledgements owed once the entries are fsynced, in order.
    owed: Vec<(Actor, Seq)>,
}

impl Node {
    fn new() -> Node {
        Node {
            up: true,
            replica: LogReplica::new(LOG),
            base: Seq(0),
            durable: vec![],
            unsynced: vec![],
            fence_epoch: LogEpoch(0),
            owed: vec![],
        }
    }

    /// The last seq it holds durably; trimmed entries count (they are uploaded).
    fn durable_last(&self) -> Seq {
        Seq(self.base.0 + self.durable.len() as u64)
    }

    fn held(&self, seq: Seq) -> Option<&Bytes> {
        let index = seq.0.checked_sub(self.base.0 + 1)? as usize;
        self.durable.iter().chain(&self.unsynced).nth(index).map(|(_, bytes)| bytes)
    }

    /// Applies a trim point: entries up to it go; a node that holds less
    /// skips ahead to it, durably (the store journals the skip). Returns
    /// whether it skipped.
    fn trim(&mut self, trim: Seq) -> bool {
        if trim <= self.base {
            return false;
        }
        let skipped = trim > self.replica.last_seq();
        let drop = ((trim.0 - self.base.0) as usize).min(self.durable.len() + self.unsynced.len());
        let from_durable = drop.min(self.durable.len());
        self.durable.drain(..from_durable);
        self.unsynced.drain(..drop - from_durable);
        self.base = trim;
        self.replica.trim(trim);
        skipped
    }

    /// Loses what was not fsynced and rebuilds the replica from the journal.
    fn crash(&mut self) {
        self.up = false;
        self.unsynced.clear();
        self.owed.clear();
        let mut replica = LogReplica::new(LOG);
        replica.trim(self.base);
        for (epoch, bytes) in &self.durable {
            let (header, _) = decode_header(bytes).expect("journal holds valid entries");
            replica.on_appended(*epoch, &header);
        }
        if self.fence_epoch >= replica.epoch() {
            replica.fence(self.fence_epoch).expect("rebuilt fence is not stale");
        }
        self.replica = replica;
    }
}

#[derive(Debug)]
enum Phase {
    Fencing,
    Repairing { plan: RecoveryPlan, outstanding: BTreeMap<usize, Seq> },
    Done,
    Dead,
}

struct Recoverer {
    id: u64,
    recovery: Recovery,
    phase: Phase,
    /// What it read, by seq: a repair copies from here (the real recoverer
    /// reads it again from the plan's source member).
    read: BTreeMap<Seq, Bytes>,
}

impl Recoverer {
    /// The entries the plan copies to `member`.
    fn missing(&self, range: &std::ops::RangeInclusive<Seq>) -> Vec<(Seq, Bytes)> {
        if range.is_empty() {
            return vec![];
        }
        self.read.range(range.clone()).map(|(seq, bytes)| (*seq, bytes.clone())).collect()
    }
}

/// The controller's record of the log: a compare-and-set register.
#[derive(Debug, Default)]
struct Controller {
    epoch: LogEpoch,
    sealed: Option<Seq>,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    writer: QuorumWriter,
    writer_links: [bool; NODES],
    built: BTreeMap<Seq, Bytes>,
    nodes: Vec<Node>,
    links: BTreeMap<(Actor, Actor), VecDeque<Msg>>,
    controller: Controller,
    recoverers: Vec<Recoverer>,
    step: usize,
    /// No recovery starts before this step, so the writer first builds up a history.
    recovery_from: usize,
    /// The member whose link breaks most often, so that one member lags.
    flaky: usize,
    /// The committed trim point: entries up to it are uploaded.
    trim: Seq,
    /// Trims that found a node behind them, which skipped ahead.
    skips: usize,
    /// Recoveries that fenced a member behind the trim point.
    lagging_fenced: usize,
}

fn members() -> Vec<Member> {
    ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, zone)| Member { node: NodeId(i as u32 + 1), zone: zone.to_string(), incarnation: "i".into() })
        .collect()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let recovery_from = rng.gen_range(0..STEPS);
        let flaky = rng.gen_range(0..NODES);
        Sim {
            flaky,
            seed,
            rng,
            step: 0,
            recovery_from,
            writer: QuorumWriter::new(LOG, LogEpoch(1), members(), ACK_QUORUM, Seq(0)),
            writer_links: [true; NODES],
            built: BTreeMap::new(),
            nodes: (0..NODES).map(|_| Node::new()).collect(),
            links: BTreeMap::new(),
            controller: Controller { epoch: LogEpoch(1), sealed: None },
            recoverers: vec![],
            trim: Seq(0),
            skips: 0,
            lagging_fenced: 0,
        }
    }

    fn send(&mut self, from: Actor, to: Actor, msg: Msg) {
        if let Actor::Node(index) = to {
            if !self.nodes[index].up {
                return;
            }
        }
        if from == Actor::Writer || to == Actor::Writer {
            let node = match (from, to) {
                (Actor::Node(index), _) | (_, Actor::Node(index)) => index,
                _ => unreachable!("the writer only talks to nodes"),
            };
            if !self.writer_links[node] {
                return;
            }
        }
        self.links.entry((from, to)).or_default().push_back(msg);
    }

    /// Drops the connection between the writer and a node, both directions.
    fn break_writer_link(&mut self, node: usize) {
        self.links.remove(&(Actor::Writer, Actor::Node(node)));
        self.links.remove(&(Actor::Node(node), Actor::Writer));
        if self.writer_links[node] {
            self.writer_links[node] = false;
            self.writer.on_member_lost(node);
        }
    }

    fn step(&mut self) {
        self.step += 1;
        match self.rng.gen_range(0..108) {
            100..=103 => self.commit_trim(),
            104..=107 => {
                // The flaky member is the one that learns of trims last.
                let node = self.rng.gen_range(0..NODES);
                if node != self.flaky || self.rng.gen_bool(0.2) {
                    self.apply_trim(node);
                }
            }
            0..=44 => self.deliver_one(),
            45..=59 => {
                let node = self.rng.gen_range(0..NODES);
                self.fsync(node);
            }
            60..=71 => self.append(),
            72..=76 => self.break_writer_link(self.flaky),
            77..=79 => {
                let node = self.rng.gen_range(0..NODES);
                self.break_writer_link(node);
            }
            80..=82 => self.reconnect_writer(),
            83..=84 => self.deliver_one(),
            85..=87 => self.crash_node(),
            88..=91 => self.restart_nodes(),
            92..=93 if self.step >= self.recovery_from => self.start_recovery(),
            92..=93 => self.deliver_one(),
            94 => self.crash_recoverer(),
            _ => self.retry_recoverers(),
        }
    }

    fn deliver_one(&mut self) {
        let busy: Vec<(Actor, Actor)> =
            self.links.iter().filter(|(_, queue)| !queue.is_empty()).map(|(key, _)| *key).collect();
        if busy.is_empty() {
            return;
        }
        let key = busy[self.rng.gen_range(0..busy.len())];
        let msg = self.links.get_mut(&key).and_then(VecDeque::pop_front).expect("chosen link has a message");
        let (from, to) = key;
        match to {
            Actor::Node(index) => self.node_receives(index, from, msg),
            Actor::Writer => self.writer_receives(from, msg),
            Actor::Recoverer(id) => self.recoverer_receives(id, from, msg),
        }
    }

    fn node_receives(&mut self, index: usize, from: Actor, msg: Msg) {
        if !self.nodes[index].up {
            return;
        }
        match msg {
            Msg::Append { epoch, bytes } => {
                let (header, _) = decode_header(&bytes).expect("senders send valid entries");
                let crc = crc32c_of(&bytes);
                let node = &self.nodes[index];
                let decision =
                    node.replica.check_append(epoch, &header, crc, |seq| node.held(seq).map(|b| crc32c_of(b)));
                match decision {
                    Ok(AppendKind::New) => {
                        assert_eq!(
                            self.built.get(&header.seq),
                            Some(&bytes),
                            "seed {}: node {index} stores bytes nobody built",
                            self.seed
                        );
                        let node = &mut self.nodes[index];
                        node.replica.on_appended(epoch, &header);
                        node.unsynced.push((epoch, bytes));
                        node.owed.push((from, header.seq));
                    }
                    Ok(AppendKind::AlreadyHeld) => self.nodes[index].owed.push((from, header.seq)),
                    Err(error) => self.send(Actor::Node(index), from, Msg::AppendRefused { error }),
                }
            }
            Msg::Fence { epoch } => {
                // A fence is journalled and fsynced before the reply, which also
                // makes every entry before it durable.
                self.fsync(index);
                let node = &mut self.nodes[index];
                match node.replica.fence(epoch) {
                    Ok(reply) => {
                        node.fence_epoch = epoch;
                        self.send(Actor::Node(index), from, Msg::FenceOk { last_seq: reply.last_seq });
                    }
                    Err(_) => self.send(Actor::Node(index), from, Msg::FenceRefused),
                }
            }
            Msg::Read { from: first, upto } => {
                let node = &self.nodes[index];
                let entries = (first.0..=upto.0).filter_map(|seq| node.held(Seq(seq)).cloned()).collect();
                self.send(Actor::Node(index), from, Msg::ReadOk { entries });
            }
            other => panic!("seed {}: node got {other:?}", self.seed),
        }
    }

    fn fsync(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        if !node.up {
            return;
        }
        node.durable.append(&mut node.unsynced);
        let owed = std::mem::take(&mut node.owed);
        for (to, seq) in owed {
            self.send(Actor::Node(index), to, Msg::AppendOk { seq });
        }
    }

    fn writer_receives(&mut self, from: Actor, msg: Msg) {
        let Actor::Node(index) = from else { unreachable!("only nodes write to the writer") };
        match msg {
            Msg::AppendOk { seq } => {
                self.writer.on_ack(index, seq);
            }
            Msg::AppendRefused { error: ReplicaError::Fenced { .. } } => self.writer.on_fenced(),
            Msg::AppendRefused { error } => panic!("seed {}: writer refused by node {index}: {error}", self.seed),
            other => panic!("seed {}: writer got {other:?}", self.seed),
        }
    }

    fn append(&mut self) {
        let next = Seq(self.built.len() as u64 + 1);
        if next.0 > ENTRIES_MAX {
            return;
        }
        let record = Record {
            stream: StreamId(next.0 % 3),
            base_offset: Offset(next.0 as i64 * 10),
            record_count: 10,
            batch: Bytes::from(format!("batch {} of seed {}", next.0, self.seed)),
        };
        let Ok(entry) = self.writer.next_entry(vec![record]) else { return };
        assert_eq!(entry.header.seq, next);
        self.built.insert(next, entry.bytes.clone());
        for node in 0..NODES {
            self.send(Actor::Writer, Actor::Node(node), Msg::Append { epoch: LogEpoch(1), bytes: entry.bytes.clone() });
        }
    }

    /// CommitUpload: the owner uploaded some acknowledged entries, and the
    /// trim point moves up to them. Not once a recovery began: the owner is
    /// gone then, and its log is uploaded only after it is sealed.
    fn commit_trim(&mut self) {
        let acked = self.writer.acked();
        if self.controller.epoch != LogEpoch(1) || acked <= self.trim {
            return;
        }
        self.trim = Seq(self.rng.gen_range(self.trim.0 + 1..=acked.0));
    }

    /// A node learns the committed trim point from the metadata.
    fn apply_trim(&mut self, node: usize) {
        if self.nodes[node].up && self.nodes[node].trim(self.trim) {
            self.skips += 1;
        }
    }

    fn reconnect_writer(&mut self) {
        let Some(node) = (0..NODES).find(|node| !self.writer_links[*node] && self.nodes[*node].up) else { return };
        self.writer_links[node] = true;
        for (_, bytes) in self.writer.on_member_back(node) {
            self.send(Actor::Writer, Actor::Node(node), Msg::Append { epoch: LogEpoch(1), bytes });
        }
    }

    fn crash_node(&mut self) {
        // At most one node is down at a time, so recoveries can finish.
        if self.nodes.iter().any(|node| !node.up) {
            return;
        }
        let index = self.rng.gen_range(0..NODES);
        self.nodes[index].crash();
        self.links.retain(|(from, to), _| *from != Actor::Node(index) && *to != Actor::Node(index));
        self.break_writer_link(index);
    }

    fn restart_nodes(&mut self) {
        for node in &mut self.nodes {
            node.up = true;
        }
    }

    fn start_recovery(&mut self) {
        if self.controller.sealed.is_some()
            || self.recoverers.iter().any(|r| matches!(r.phase, Phase::Fencing | Phase::Repairing { .. }))
        {
            return;
        }
        // RecoverLog: compare-and-set the epoch, so two recoverers never share one.
        let epoch = LogEpoch(self.controller.epoch.0 + 1);
        self.controller.epoch = epoch;
        let id = self.recoverers.len() as u64;
        self.recoverers.push(Recoverer {
            id,
            recovery: Recovery::new(LOG, epoch, members(), ACK_QUORUM, self.trim),
            phase: Phase::Fencing,
            read: BTreeMap::new(),
        });
        for node in 0..NODES {
            self.send(Actor::Recoverer(id), Actor::Node(node), Msg::Fence { epoch });
        }
    }

    fn crash_recoverer(&mut self) {
        if let Some(recoverer) =
            self.recoverers.iter_mut().find(|r| matches!(r.phase, Phase::Fencing | Phase::Repairing { .. }))
        {
            recoverer.phase = Phase::Dead;
        }
    }

    /// A live recoverer asks again whatever it still waits for (its messages
    /// may have been lost with a crashed node). Every request is idempotent.
    fn retry_recoverers(&mut self) {
        let mut sends = vec![];
        for recoverer in &self.recoverers {
            let actor = Actor::Recoverer(recoverer.id);
            match &recoverer.phase {
                Phase::Fencing => {
                    for node in 0..NODES {
                        sends.push((actor, node, Msg::Fence { epoch: recoverer.recovery.epoch() }));
                    }
                }
                Phase::Repairing { plan, outstanding } => {
                    for (member, range) in &plan.repairs {
                        if outstanding.contains_key(member) {
                            for (_, bytes) in recoverer.missing(range) {
                                sends.push((actor, *member, Msg::Append { epoch: recoverer.recovery.epoch(), bytes }));
                            }
                        }
                    }
                }
                Phase::Done | Phase::Dead => {}
            }
        }
        for (from, node, msg) in sends {
            self.send(from, Actor::Node(node), msg);
        }
    }

    fn recoverer_receives(&mut self, id: u64, from: Actor, msg: Msg) {
        let Actor::Node(index) = from else { unreachable!("only nodes answer recoverers") };
        let seed = self.seed;
        let recoverer = &mut self.recoverers[id as usize];
        let actor = Actor::Recoverer(id);
        let epoch = recoverer.recovery.epoch();
        let mut sends: Vec<(usize, Msg)> = vec![];
        let mut lagging = false;
        match (&mut recoverer.phase, msg) {
            (Phase::Dead | Phase::Done, _) => return,
            (_, Msg::FenceRefused) | (_, Msg::AppendRefused { error: ReplicaError::Fenced { .. } }) => {
                // A newer recoverer owns the log now.
                recoverer.phase = Phase::Dead;
                return;
            }
            // A repair refused for any other reason (a gap, other bytes) was
            // a wrong decision of the recovery: retrying it cannot succeed.
            (_, Msg::AppendRefused { error }) => panic!("seed {seed}: node {index} refused a repair: {error}"),
            (Phase::Fencing, Msg::FenceOk { last_seq }) => {
                recoverer.recovery.on_fenced(index, last_seq);
                lagging = last_seq < recoverer.recovery.trim();
                // The recovery's own decision: whom to read, and which seqs.
                for (member, first, upto) in recoverer.recovery.reads_to_make() {
                    if member == index {
                        sends.push((index, Msg::Read { from: first, upto }));
                    }
                }
            }
            (Phase::Fencing, Msg::ReadOk { entries }) => {
                for bytes in &entries {
                    let (header, _) = decode_header(bytes).expect("nodes hold valid entries");
                    recoverer.read.insert(header.seq, bytes.clone());
                }
                if let Err(error) = recoverer.recovery.on_read(index, entries) {
                    panic!("seed {seed}: recovery read from node {index} failed: {error}");
                }
                let plan = recoverer
                    .recovery
                    .plan()
                    .unwrap_or_else(|error| panic!("seed {seed}: recovery plan failed: {error}"));
                if let Some(plan) = plan {
                    let mut outstanding = BTreeMap::new();
                    for (member, range) in &plan.repairs {
                        let missing = recoverer.missing(range);
                        assert_eq!(
                            missing.len() as u64,
                            (range.end().0 + 1).saturating_sub(range.start().0),
                            "seed {seed}: a repair of unread seqs"
                        );
                        if let Some((last, _)) = missing.last() {
                            outstanding.insert(*member, *last);
                        }
                        for (_, bytes) in missing {
                            sends.push((*member, Msg::Append { epoch, bytes }));
                        }
                    }
                    recoverer.phase = Phase::Repairing { plan, outstanding };
                }
            }
            (Phase::Repairing { outstanding, .. }, Msg::AppendOk { seq }) => {
                if outstanding.get(&index).is_some_and(|last| seq >= *last) {
                    outstanding.remove(&index);
                }
            }
            (Phase::Repairing { .. }, Msg::FenceOk { .. } | Msg::ReadOk { .. }) => {}
            (Phase::Fencing, Msg::AppendOk { .. }) => {}
            (phase, msg) => panic!("seed {seed}: recoverer in {phase:?} got {msg:?}"),
        }
        self.lagging_fenced += usize::from(lagging);
        for (node, msg) in sends {
            self.send(actor, Actor::Node(node), msg);
        }
        self.maybe_seal(id);
    }

    /// SealLog: committed only if this recoverer's epoch is still the log's
    /// and the log is not sealed yet.
    fn maybe_seal(&mut self, id: u64) {
        let recoverer = &mut self.recoverers[id as usize];
        let Phase::Repairing { plan, outstanding } = &recoverer.phase else { return };
        if !outstanding.is_empty() {
            return;
        }
        if self.controller.epoch == recoverer.recovery.epoch() && self.controller.sealed.is_none() {
            self.controller.sealed = Some(plan.sealed_seq);
            recoverer.phase = Phase::Done;
        } else {
            recoverer.phase = Phase::Dead;
        }
    }

    fn check(&self) {
        self.check_quorums();
        self.check_bytes();
    }

    /// Cheap: run after every step.
    fn check_quorums(&self) {
        let seed = self.seed;
        let quorum_holds = |seq: Seq| self.nodes.iter().filter(|node| node.durable_last() >= seq).count() >= ACK_QUORUM;
        let acked = self.writer.acked();
        assert!(quorum_holds(acked), "seed {seed}: acknowledged {acked} is not fsynced on an ack quorum");
        if let Some(sealed) = self.controller.sealed {
            assert!(acked <= sealed, "seed {seed}: the writer has {acked} acknowledged beyond the sealed {sealed}");
            assert!(quorum_holds(sealed), "seed {seed}: sealed {sealed} is not fsynced on an ack quorum");
        }
    }

    /// Every node's bytes against what the writer built. Stores are also
    /// checked one by one as they happen; this sweep runs every few steps.
    fn check_bytes(&self) {
        let seed = self.seed;
        for (index, node) in self.nodes.iter().enumerate() {
            for (position, (_, bytes)) in node.durable.iter().chain(&node.unsynced).enumerate() {
                let seq = Seq(node.base.0 + position as u64 + 1);
                assert_eq!(self.built.get(&seq), Some(bytes), "seed {seed}: node {index} holds other bytes at {seq}");
            }
        }
    }

    /// Heals everything and drives the log to a seal, checking all the way.
    fn finish(&mut self) {
        self.restart_nodes();
        for node in 0..NODES {
            if !self.writer_links[node] {
                self.reconnect_writer();
            }
        }
        self.crash_recoverer();
        for _ in 0..10_000 {
            if self.controller.sealed.is_some() {
                break;
            }
            self.start_recovery();
            self.retry_recoverers();
            while self.links.values().any(|queue| !queue.is_empty()) {
                self.deliver_one();
                for node in 0..NODES {
                    self.fsync(node);
                }
                self.check_quorums();
            }
        }
        assert!(self.controller.sealed.is_some(), "seed {}: the log was never sealed", self.seed);
        self.check();
    }
}

fn crc32c_of(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[8..12].try_into().expect("an entry has a checksum"))
}

fn run(seed: u64) -> (Seq, Seq, usize, usize, usize) {
    let mut sim = Sim::new(seed);
    for step in 0..STEPS {
        sim.step();
        sim.check_quorums();
        if step % 64 == 0 {
            sim.check_bytes();
        }
    }
    sim.finish();
    let sealed = sim.controller.sealed.expect("sealed");
    assert!(sealed >= sim.trim, "seed {seed}: sealed {sealed} below the trim point {}", sim.trim);
    (sim.writer.acked(), sealed, sim.recoverers.len(), sim.skips, sim.lagging_fenced)
}

/// Prints how to replay a seed if the test fails while running it.
struct ReplayHint(u64);

impl Drop for ReplayHint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("simulation failed at seed {0}; replay with: KEEL_SIM_SEED={0} cargo nextest run -p keel-wal simulation", self.0);
        }
    }
}

#[test]
fn simulation_keeps_every_acknowledged_entry_through_fencing_and_recovery() {
    let seeds: Vec<u64> = match std::env::var("KEEL_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("KEEL_SIM_SEED is a number")],
        Err(_) => {
            let count = std::env::var("KEEL_SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(300);
            (0..count).collect()
        }
    };
    let mut acked_total = 0;
    let mut recoveries_total = 0;
    let mut sealed_above_acked = 0;
    let (mut skips_total, mut lagging_total) = (0, 0);
    for seed in &seeds {
        let _hint = ReplayHint(*seed);
        let (acked, sealed, recoveries, skips, lagging) = run(*seed);
        acked_total += acked.0;
        recoveries_total += recoveries;
        sealed_above_acked += u64::from(sealed > acked);
        skips_total += skips;
        lagging_total += lagging;
    }
    eprintln!(
        "{} seeds: {acked_total} entries acknowledged, {recoveries_total} recoveries started, {sealed_above_acked} logs sealed above the writer's acknowledged seq, {skips_total} trims a lagging node skipped to, {lagging_total} fences of a member behind the trim point",
        seeds.len()
    );
    // The simulation must exercise the interesting cases, not just pass.
    assert!(acked_total > 10 * seeds.len() as u64, "too few entries acknowledged to mean anything");
    assert!(recoveries_total > seeds.len(), "too few recoveries");
    if seeds.len() >= 100 {
        assert!(skips_total > 0, "no trim ever passed a lagging node");
        assert!(lagging_total > 0, "no recovery ever fenced a member behind the trim point");
    }
}
