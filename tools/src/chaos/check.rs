//! The chaos suite's checker: reads the run's histories (JSON lines written
//! by the workload's clients and the nemesis) and finds, with Jepsen's names
//! for them:
//!
//! - `lost-write`: acknowledged (partition, offset, value) not found there
//!   by the final drain;
//! - `duplicate`: one value stored at two offsets;
//! - `inconsistent-offsets`: two values seen at one (partition, offset),
//!   by acknowledgements, reads or the drain;
//! - `nonmonotonic-send`: one producer's values (`<producer>-<n>|padding`)
//!   acknowledged in a partition
//!   at offsets that do not grow with the order they were sent in;
//! - `nonmonotonic-commit`: a group's committed offset of a partition going
//!   backwards;
//! - `poll-skip`: a stored record below the group's final committed offset
//!   that no member of the group read;
//! - `offset-reset`: a group member told that its position (a committed
//!   offset or one it read up to) is out of range;
//! - `failed-but-read`: a value whose produce failed for certain (an error
//!   that is no timeout or lost connection) read or drained all the same;
//! - `read-past-end`: a group member read an offset at or past the end the
//!   final drain found (a record that was later gone);
//! - `nonmonotonic-poll`: a group member reading offsets of a partition
//!   that do not grow, with no rebalance in between.
//!
//! Errors the final drain reported are counted and shown with the anomalies.
//!
//! It also measures, for each fault, the time until writes succeed again on
//! every partition (the latest, over partitions, of the first
//! acknowledgement of a value sent after the fault), and the stall: the
//! longest time any partition went without an acknowledgement from the
//! fault until the next one (or the end), so that a fault which stops writes
//! a while after it starts is seen too.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One history line; fields a kind of event lacks are absent.
#[derive(Debug, Deserialize)]
struct Event {
    f: String,
    t: f64,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    partition: Option<i32>,
    #[serde(default)]
    offset: Option<i64>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    member: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// A fault's: when its injection began (`t` is when it was done; a
    /// flapping partition's injection is the fault itself).
    #[serde(default)]
    begun: Option<f64>,
}

/// What the checker found.
#[derive(Debug, Default, Serialize)]
pub struct Checked {
    pub invoked: u64,
    pub acknowledged: u64,
    pub failed: u64,
    pub unknown: u64,
    pub read: u64,
    pub commits: u64,
    pub drained: u64,
    /// Errors the final drain reported: count and up to five examples.
    pub drain_errors: Anomaly,
    /// Anomalies by name: count and up to five examples.
    pub anomalies: BTreeMap<String, Anomaly>,
    /// Faults by kind.
    pub faults: BTreeMap<String, u64>,
    /// Per fault: seconds until writes succeeded again on every partition
    /// (`None`: not within the run).
    pub recoveries: Vec<(String, Option<f64>)>,
    /// Per fault: the longest gap between acknowledgements on one partition
    /// from the fault to the next one (`None`: a partition took no write
    /// after it).
    pub stalls: Vec<(String, Option<f64>)>,
    pub acknowledged_bytes: u64,
    pub read_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Anomaly {
    pub count: u64,
    pub examples: Vec<String>,
}

impl Checked {
    fn anomaly(&mut self, name: &str, example: String) {
        let anomaly = self.anomalies.entry(name.to_owned()).or_default();
        anomaly.count += 1;
        if anomaly.examples.len() < 5 {
            anomaly.examples.push(example);
        }
    }

    /// Every anomaly's count, the names the checker knows included (zero).
    pub fn anomaly_counts(&self) -> BTreeMap<&'static str, u64> {
        ANOMALIES.iter().map(|name| (*name, self.anomalies.get(*name).map_or(0, |a| a.count))).collect()
    }
}

pub const ANOMALIES: [&str; 10] = [
    "lost-write",
    "duplicate",
    "inconsistent-offsets",
    "nonmonotonic-send",
    "nonmonotonic-commit",
    "poll-skip",
    "offset-reset",
    "failed-but-read",
    "read-past-end",
    "nonmonotonic-poll",
];

/// A value's unique part, before its padding.
fn id(value: &str) -> &str {
    value.split('|').next().unwrap_or(value)
}

/// Reads every `*.jsonl` file of `dir` and checks the run.
pub fn check_dir(dir: &Path) -> anyhow::Result<Checked> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            let source = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            for (number, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
                // A client killed mid-line leaves a torn last line: skipped.
                match serde_json::from_str::<Event>(line) {
                    Ok(event) => events.push((source.clone(), event)),
                    Err(error) if number + 1 == text.lines().count() => {
                        tracing::debug!("{}: torn last line: {error}", path.display())
                    }
                    Err(error) => anyhow::bail!("{}:{}: {error}", path.display(), number + 1),
                }
            }
        }
    }
    Ok(check(events))
}

/// Checks the events of a run, each with the history it came from.
fn check(mut events: Vec<(String, Event)>) -> Checked {
    events.sort_by(|a, b| a.1.t.total_cmp(&b.1.t));
    let mut checked = Checked::default();
    // (partition, offset) -> value, from every observation.
    let mut seen: HashMap<(i32, i64), String> = HashMap::new();
    let mut observe = |checked: &mut Checked, partition: i32, offset: i64, value: &str, by: &str| match seen
        .get(&(partition, offset))
    {
        Some(known) if known != value => checked.anomaly(
            "inconsistent-offsets",
            format!("partition {partition} offset {offset}: {:?} and {:?} ({by})", id(known), id(value)),
        ),
        Some(_) => {}
        None => {
            seen.insert((partition, offset), value.to_owned());
        }
    };
    let mut invoked_at: HashMap<String, f64> = HashMap::new();
    let mut acked: Vec<(String, i32, i64, f64)> = Vec::new();
    let mut drained: HashMap<(i32, i64), String> = HashMap::new();
    let mut drained_at: HashMap<String, std::collections::BTreeSet<(i32, i64)>> = HashMap::new();
    let mut settled: std::collections::HashSet<String> = Default::default();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut read: std::collections::HashSet<(i32, i64)> = Default::default();
    let mut committed: HashMap<i32, i64> = HashMap::new();
    // (kind, injected at, injection begun at)
    let mut faults: Vec<(String, f64, f64)> = Vec::new();
    let mut failed: std::collections::HashSet<String> = Default::default();
    let mut reads: Vec<(String, i32, i64, String)> = Vec::new();
    // (member, partition) -> the last offset it read since its last rebalance.
    let mut positions: HashMap<(String, i32), i64> = HashMap::new();
    for (source, event) in &events {
        let (value, partition, offset) = (event.value.as_deref(), event.partition, event.offset);
        match (event.f.as_str(), value, partition, offset) {
            ("invoke", Some(value), _, _) => {
                checked.invoked += 1;
                invoked_at.insert(value.to_owned(), event.t);
            }
            ("ok", Some(value), Some(p), Some(o)) => {
                settled.insert(value.to_owned());
                checked.acknowledged += 1;
                checked.acknowledged_bytes += value.len() as u64;
                observe(&mut checked, p, o, value, "acknowledged");
                acked.push((value.to_owned(), p, o, event.t));
            }
            ("fail" | "unknown", value, ..) => {
                if event.f == "fail" {
                    checked.failed += 1;
                    if let Some(value) = value {
                        failed.insert(value.to_owned());
                    }
                } else {
                    checked.unknown += 1;
                }
                if let Some(value) = value {
                    settled.insert(value.to_owned());
                }
            }
            ("read", Some(value), Some(p), Some(o)) => {
                checked.read += 1;
                checked.read_bytes += value.len() as u64;
                observe(&mut checked, p, o, value, &format!("read by {source}"));
                read.insert((p, o));
                reads.push((value.to_owned(), p, o, source.clone()));
                let member = event.member.clone().unwrap_or_else(|| source.clone());
                if let Some(last) = positions.insert((member.clone(), p), o) {
                    if o <= last {
                        checked.anomaly(
                            "nonmonotonic-poll",
                            format!("partition {p}: {member} read {o} after {last} (at {:.3})", event.t),
                        );
                    }
                }
            }
            ("assign" | "revoke", ..) => {
                // A rebalance: the member starts again from committed offsets.
                let member = event.member.clone().unwrap_or_else(|| source.clone());
                positions.retain(|(m, _), _| *m != member);
            }
            ("drain-error", ..) => {
                let error = event.error.clone().unwrap_or_default();
                checked.drain_errors.count += 1;
                if checked.drain_errors.examples.len() < 5 {
                    let at = partition.map_or(String::new(), |p| format!(" (partition {p})"));
                    checked.drain_errors.examples.push(format!("{error}{at}"));
                }
            }
            ("commit", _, Some(p), Some(o)) => {
                checked.commits += 1;
                let last = committed.entry(p).or_insert(o);
                if o < *last {
                    checked.anomaly(
                        "nonmonotonic-commit",
                        format!("partition {p}: committed {o} after {last} ({source} at {:.3})", event.t),
                    );
                }
                *last = (*last).max(o);
            }
            ("drain", Some(value), Some(p), Some(o)) => {
                checked.drained += 1;
                observe(&mut checked, p, o, value, "drain");
                drained.insert((p, o), value.to_owned());
                drained_at.entry(value.to_owned()).or_default().insert((p, o));
            }
            ("end", _, Some(p), Some(o)) => {
                ends.insert(p, o);
            }
            ("reset", _, Some(p), _) => {
                checked.anomaly(
                    "offset-reset",
                    format!("partition {p}: position out of range ({source} at {:.3})", event.t),
                );
            }
            ("fault", ..) => {
                let kind = event.kind.clone().unwrap_or_default();
                *checked.faults.entry(kind.clone()).or_default() += 1;
                faults.push((kind, event.t, event.begun.unwrap_or(event.t)));
            }
            _ => {}
        }
    }
    // A send with no outcome at all (its producer died before it could say)
    // counts as unknown.
    checked.unknown += invoked_at.keys().filter(|value| !settled.contains(*value)).count() as u64;
    for (value, places) in &drained_at {
        if places.len() > 1 {
            checked.anomaly("duplicate", format!("{:?} stored at {places:?}", id(value)));
        }
    }
    for (value, p, o, source) in &reads {
        if failed.contains(value) {
            checked.anomaly(
                "failed-but-read",
                format!("{:?} failed, read at partition {p} offset {o} by {source}", id(value)),
            );
        }
        if let Some(end) = ends.get(p).filter(|end| *o >= **end) {
            checked.anomaly("read-past-end", format!("partition {p} offset {o} read by {source}, drained to {end}"));
        }
    }
    for ((p, o), value) in &drained {
        if failed.contains(value) {
            checked.anomaly("failed-but-read", format!("{:?} failed, drained at partition {p} offset {o}", id(value)));
        }
    }
    for (value, p, o, _) in &acked {
        if !drained.contains_key(&(*p, *o)) {
            let end = ends.get(p).copied().unwrap_or(0);
            checked.anomaly(
                "lost-write",
                format!("{:?} acknowledged at partition {p} offset {o} (drained to {end})", id(value)),
            );
        }
    }
    // Per producer (the value's prefix) and partition, offsets follow the send order.
    let mut sends: HashMap<(String, i32), Vec<(u64, i64)>> = HashMap::new();
    for (value, p, o, _) in &acked {
        if let Some((producer, n)) = id(value).rsplit_once('-').and_then(|(prefix, n)| Some((prefix, n.parse().ok()?)))
        {
            sends.entry((producer.to_owned(), *p)).or_default().push((n, *o));
        }
    }
    for ((producer, p), mut list) in sends {
        list.sort();
        for pair in list.windows(2) {
            if pair[1].1 <= pair[0].1 {
                checked.anomaly(
                    "nonmonotonic-send",
                    format!(
                        "{producer}-{} at offset {} but {producer}-{} at {} in partition {p}",
                        pair[0].0, pair[0].1, pair[1].0, pair[1].1
                    ),
                );
            }
        }
    }
    for (p, upto) in &committed {
        for ((dp, o), value) in &drained {
            if dp == p && o < upto && !read.contains(&(*p, *o)) {
                checked.anomaly(
                    "poll-skip",
                    format!("partition {p} offset {o} ({:?}) below commit {upto}, never read", id(value)),
                );
            }
        }
    }
    // Recovery: per fault, the latest over partitions of the first
    // acknowledgement of a value sent after it.
    let partitions: std::collections::BTreeSet<i32> = acked.iter().map(|a| a.1).collect();
    for (kind, at, _) in faults.iter().cloned() {
        let mut first: HashMap<i32, f64> = HashMap::new();
        for (value, p, _, t) in &acked {
            if invoked_at.get(value).is_some_and(|sent| *sent >= at) {
                let entry = first.entry(*p).or_insert(*t);
                *entry = entry.min(*t);
            }
        }
        let recovered = (first.len() == partitions.len() && !partitions.is_empty())
            .then(|| first.values().fold(f64::MIN, |a, b| a.max(*b)) - at);
        checked.recoveries.push((kind, recovered));
    }
    checked.stalls = stalls(&faults, &acked, &partitions);
    checked
}

/// Per fault, the longest gap between acknowledgements on one partition in
/// the window from the fault to the start of the next fault's injection (or
/// the last acknowledgement), counting the fault itself as the window's
/// start.
fn stalls(
    faults: &[(String, f64, f64)],
    acked: &[(String, i32, i64, f64)],
    partitions: &std::collections::BTreeSet<i32>,
) -> Vec<(String, Option<f64>)> {
    let mut times: HashMap<i32, Vec<f64>> = HashMap::new();
    for (_, p, _, t) in acked {
        times.entry(*p).or_default().push(*t);
    }
    for list in times.values_mut() {
        list.sort_by(f64::total_cmp);
    }
    let mut starts: Vec<f64> = faults.iter().map(|(_, _, begun)| *begun).collect();
    starts.sort_by(f64::total_cmp);
    faults
        .iter()
        .map(|(kind, at, _)| {
            let until = starts.iter().copied().find(|t| t > at).unwrap_or(f64::INFINITY);
            let mut longest = 0.0f64;
            for p in partitions {
                let window: Vec<f64> =
                    times.get(p).into_iter().flatten().copied().filter(|t| *t > *at && *t <= until).collect();
                let Some(first) = window.first() else { return (kind.clone(), None) };
                longest = longest.max(first - at);
                for pair in window.windows(2) {
                    longest = longest.max(pair[1] - pair[0]);
                }
            }
            (kind.clone(), (!partitions.is_empty()).then_some(longest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(f: &str, t: f64, value: Option<&str>, partition: Option<i32>, offset: Option<i64>) -> Event {
        Event {
            f: f.into(),
            t,
            value: value.map(Into::into),
            partition,
            offset,
            kind: None,
            member: None,
            error: None,
            begun: None,
        }
    }

    fn history(lines: Vec<Event>) -> Vec<(String, Event)> {
        lines.into_iter().map(|e| ("h".to_owned(), e)).collect()
    }

    #[test]
    fn a_clean_run_has_no_anomaly_and_each_one_is_found() {
        let clean = history(vec![
            event("invoke", 1.0, Some("a-0"), Some(0), None),
            event("ok", 1.1, Some("a-0"), Some(0), Some(0)),
            event("invoke", 1.2, Some("a-1"), Some(0), None),
            event("ok", 1.3, Some("a-1"), Some(0), Some(1)),
            event("read", 2.0, Some("a-0"), Some(0), Some(0)),
            event("commit", 2.1, None, Some(0), Some(1)),
            event("assign", 2.2, None, None, None),
            event("read", 2.3, Some("a-0"), Some(0), Some(0)), // again after a rebalance: fine
            event("drain", 3.0, Some("a-0"), Some(0), Some(0)),
            event("drain", 3.0, Some("a-1"), Some(0), Some(1)),
            event("end", 3.0, None, Some(0), Some(2)),
        ]);
        let checked = check(clean);
        assert!(checked.anomalies.is_empty(), "{:?}", checked.anomalies);
        assert_eq!((checked.acknowledged, checked.read, checked.drained), (2, 2, 2));

        let broken = history(vec![
            event("ok", 1.0, Some("a-0"), Some(0), Some(5)), // never drained: lost
            event("ok", 1.1, Some("a-1"), Some(0), Some(1)),
            event("ok", 1.2, Some("a-2"), Some(0), Some(0)), // sent later, stored earlier
            event("read", 2.0, Some("b-9"), Some(0), Some(1)), // another value at offset 1
            event("commit", 2.1, None, Some(0), Some(3)),
            event("commit", 2.2, None, Some(0), Some(2)), // backwards
            event("drain", 3.0, Some("a-2"), Some(0), Some(0)),
            event("drain", 3.0, Some("a-1"), Some(0), Some(1)),
            event("drain", 3.0, Some("a-1"), Some(0), Some(2)), // twice; offset 2 never read below commit 3
            event("reset", 3.1, None, Some(0), None),
            event("fail", 1.3, Some("a-7"), Some(0), None),
            event("read", 2.3, Some("a-7"), Some(0), Some(3)), // failed, yet read; past the end (3)
            event("read", 2.4, Some("a-1"), Some(0), Some(1)), // back to 1 with no rebalance
            event("end", 3.0, None, Some(0), Some(3)),
        ]);
        let counts = check(broken).anomaly_counts();
        for name in ANOMALIES {
            assert!(counts[name] >= 1, "{name} not found: {counts:?}");
        }
    }

    #[test]
    fn recovery_is_the_last_partition_to_take_a_write_after_the_fault() {
        let mut events = vec![event("fault", 10.0, None, None, None)];
        events[0].kind = Some("zone-loss".into());
        events.extend([
            event("invoke", 9.0, Some("a-0"), Some(0), None),
            event("ok", 9.5, Some("a-0"), Some(0), Some(0)),
            event("invoke", 9.0, Some("a-1"), Some(1), None),
            event("ok", 9.5, Some("a-1"), Some(1), Some(0)),
            event("invoke", 10.5, Some("a-2"), Some(0), None),
            event("ok", 11.0, Some("a-2"), Some(0), Some(1)),
            event("invoke", 10.6, Some("a-3"), Some(1), None),
            event("ok", 13.0, Some("a-3"), Some(1), Some(1)),
        ]);
        let checked = check(history(events));
        assert_eq!(checked.recoveries, vec![("zone-loss".to_owned(), Some(3.0))]);
    }

    /// A fault that lets the first writes after it through and stops the
    /// later ones shows in the stall, not in the recovery.
    #[test]
    fn the_stall_is_the_longest_gap_between_acknowledgements_after_the_fault() {
        let mut events = vec![event("fault", 10.0, None, None, None)];
        events[0].kind = Some("controller-leader-freeze".into());
        for (n, (p, sent, acked)) in
            [(0, 10.1, 10.2), (1, 10.1, 10.3), (0, 10.5, 16.5), (1, 10.6, 10.7)].iter().enumerate()
        {
            let value = format!("a-{n}");
            events.push(event("invoke", *sent, Some(&value), Some(*p), None));
            events.push(event("ok", *acked, Some(&value), Some(*p), Some(n as i64)));
        }
        let checked = check(history(events));
        let recovery = checked.recoveries[0].1.unwrap();
        assert!((recovery - 0.3).abs() < 1e-9, "{recovery}");
        let stall = checked.stalls[0].1.unwrap();
        assert!((stall - 6.3).abs() < 1e-9, "partition 0 waited from 10.2 to 16.5: {stall}");
    }

    /// A stall that starts once the next fault's injection has begun (a
    /// flapping partition is injected for seconds) is the next fault's.
    #[test]
    fn a_stall_after_the_next_fault_began_is_the_next_faults() {
        let mut first = event("fault", 10.0, None, None, None);
        first.kind = Some("wal-freeze".into());
        let mut second = event("fault", 30.0, None, None, None);
        second.kind = Some("flapping-partition".into());
        second.begun = Some(22.0);
        let mut events = vec![first, second];
        for (n, (sent, acked)) in [(10.1, 10.2), (12.0, 12.1), (23.0, 29.0), (29.5, 29.6)].iter().enumerate() {
            let value = format!("a-{n}");
            events.push(event("invoke", *sent, Some(&value), Some(0), None));
            events.push(event("ok", *acked, Some(&value), Some(0), Some(n as i64)));
        }
        let checked = check(history(events));
        let first = checked.stalls[0].1.unwrap();
        assert!((first - 1.9).abs() < 1e-9, "the freeze's window ends when the flapping begins: {first}");
    }
}
