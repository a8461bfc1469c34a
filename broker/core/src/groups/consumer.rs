//! One consumer group on the KIP-848 protocol (`ConsumerGroupHeartbeat`),
//! without I/O: the coordinator computes the assignment (the `uniform` or
//! `range` assignor) and hands each member its part through its heartbeats.
//!
//! A change of members or subscriptions bumps the group epoch, and a new
//! target assignment is computed for it. Each member then converges on its
//! target one heartbeat at a time: first it is told to give up the
//! partitions it must lose (it keeps its epoch until its heartbeat no
//! longer lists them), then it is given the new ones that no other member
//! still holds, at the target's epoch. A partition is never held by two
//! members at once.
//!
//! Every change is written to the log as one record of the whole group
//! (`records::ConsumerGroupValue`) before the heartbeat that made it is
//! answered, so a coordinator that takes over knows every member, its
//! epoch and what it holds, and the members carry on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use super::records::{ConsumerGroupValue, ConsumerMemberValue};

/// A partition: topic id and index.
pub type TopicPartition = (uuid::Uuid, i32);

pub const ASSIGNORS: &[&str] = &["uniform", "range"];

/// Kafka's `max.poll.interval.ms` default, the rebalance timeout a member
/// gets when its join does not give one.
const DEFAULT_REBALANCE_TIMEOUT: Duration = Duration::from_secs(300);

/// A `ConsumerGroupHeartbeat` as the group sees it.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: Duration,
    pub subscribed_topics: Option<Vec<String>>,
    /// A regular expression topics are matched against in whole (RE2
    /// syntax, as Kafka's); `Some("")` drops it, `None` leaves it as it is.
    pub subscribed_regex: Option<String>,
    pub assignor: Option<String>,
    pub owned: Option<BTreeSet<TopicPartition>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The member's partitions, when they changed since it was last told.
    pub assignment: Option<BTreeSet<TopicPartition>>,
}

#[derive(Debug)]
pub struct ConsumerMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: Vec<String>,
    pub regex: Option<Subscription>,
    pub epoch: i32,
    previous_epoch: i32,
    pub assigned: BTreeSet<TopicPartition>,
    /// Taken away and not yet confirmed given up.
    revoking: BTreeSet<TopicPartition>,
    told: Option<BTreeSet<TopicPartition>>,
    assignor: Option<String>,
    deadline: Instant,
    /// How long the member may take to give partitions up, and until when it
    /// may for the ones it is giving up now; past that it is removed.
    rebalance_timeout: Duration,
    revoke_deadline: Option<Instant>,
}

/// A subscription by regular expression: its text and its compiled form.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub text: String,
    whole: regex::Regex,
}

impl Subscription {
    pub fn new(text: &str) -> Result<Subscription, regex::Error> {
        Ok(Subscription { text: text.to_owned(), whole: regex::Regex::new(&format!("^(?:{text})$"))? })
    }
}

impl ConsumerMember {
    /// Whether the member subscribes to `topic`, by name or by its regular expression.
    pub fn subscribes_to(&self, topic: &str) -> bool {
        self.subscribed.iter().any(|t| t == topic) || self.regex.as_ref().is_some_and(|r| r.whole.is_match(topic))
    }
}

#[derive(Debug)]
pub struct ConsumerGroup {
    pub id: String,
    pub epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    target_epoch: i32,
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    /// The topics (name → id, partition count) the target was computed from.
    target_topics: BTreeMap<String, (uuid::Uuid, i32)>,
    session_timeout: Duration,
    /// Set when the group's record in the log is out of date.
    pub dirty: bool,
}

impl ConsumerGroup {
    pub fn new(id: &str, session_timeout: Duration) -> ConsumerGroup {
        ConsumerGroup {
            id: id.to_owned(),
            epoch: 0,
            members: BTreeMap::new(),
            target_epoch: 0,
            target: BTreeMap::new(),
            target_topics: BTreeMap::new(),
            session_timeout,
            dirty: false,
        }
    }

    /// The group as its last record in the log left it, each member given a
    /// full session from `now`.
    pub fn restore(id: &str, value: &ConsumerGroupValue, session_timeout: Duration, now: Instant) -> ConsumerGroup {
        let members = value
            .members
            .iter()
            .map(|m| {
                let rebalance_timeout = Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64);
                let assigned: BTreeSet<TopicPartition> = m.assigned.iter().copied().collect();
                let revoking: BTreeSet<TopicPartition> = m.revoking.iter().copied().collect();
                let member = ConsumerMember {
                    id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.subscribed.clone(),
                    regex: m.regex.as_deref().and_then(|text| Subscription::new(text).ok()),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    told: Some(assigned.clone()),
                    assigned,
                    revoke_deadline: (!revoking.is_empty()).then(|| now + rebalance_timeout),
                    revoking,
                    assignor: m.assignor.clone(),
                    deadline: now + session_timeout,
                    rebalance_timeout,
                };
                (member.id.clone(), member)
            })
            .collect();
        ConsumerGroup {
            id: id.to_owned(),
            epoch: value.epoch,
            members,
            target_epoch: value.target_epoch,
            target: value.target.iter().map(|(m, ps)| (m.clone(), ps.iter().copied().collect())).collect(),
            target_topics: value.target_topics.iter().map(|(name, id, n)| (name.clone(), (*id, *n))).collect(),
            session_timeout,
            dirty: false,
        }
    }

    /// The record that describes the group in the log.
    pub fn value(&self) -> ConsumerGroupValue {
        ConsumerGroupValue {
            epoch: self.epoch,
            target_epoch: self.target_epoch,
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed: m.subscribed.clone(),
                    regex: m.regex.as_ref().map(|r| r.text.clone()),
                    epoch: m.epoch,
                    previous_epoch: m.previous_epoch,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                    assignor: m.assignor.clone(),
                    assigned: m.assigned.iter().copied().collect(),
                    revoking: m.revoking.iter().copied().collect(),
                })
                .collect(),
            target: self.target.iter().map(|(m, ps)| (m.clone(), ps.iter().copied().collect())).collect(),
            target_topics: self.target_topics.iter().map(|(name, (id, n))| (name.clone(), *id, *n)).collect(),
        }
    }

    /// The epoch of the target assignment.
    pub fn assignment_epoch(&self) -> i32 {
        self.target_epoch
    }

    /// What the target assignment gives `member_id`.
    pub fn target_of(&self, member_id: &str) -> BTreeSet<TopicPartition> {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    /// The member's last answer did not reach it (its record could not be
    /// written): its next heartbeat is told its assignment again.
    pub fn forget_told(&mut self, member_id: &str) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.told = None;
        }
    }

    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.target_epoch < self.epoch {
            "Assigning"
        } else if self.members.values().any(|m| m.epoch != self.target_epoch || !m.revoking.is_empty()) {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// The group's assignor: the one members asked for, else `uniform`.
    pub fn assignor(&self) -> &str {
        self.members.values().find_map(|m| m.assignor.as_deref()).unwrap_or("uniform")
    }

    /// One heartbeat. `topics` maps every topic name to (id, partitions).
    /// Marks the group dirty when it changed.
    pub fn heartbeat(
        &mut self,
        request: Heartbeat,
        topics: &BTreeMap<String, (uuid::Uuid, i32)>,
        now: Instant,
    ) -> Result<HeartbeatAnswer, ResponseError> {
        let before = self.value();
        let answer = self.apply(request, topics, now);
        if self.value() != before {
            self.dirty = true;
        }
        answer
    }

    fn apply(
        &mut self,
        mut request: Heartbeat,
        topics: &BTreeMap<String, (uuid::Uuid, i32)>,
        now: Instant,
    ) -> Result<HeartbeatAnswer, ResponseError> {
        if let Some(assignor) = &request.assignor {
            if !ASSIGNORS.contains(&assignor.as_str()) {
                return Err(ResponseError::UnsupportedAssignor);
            }
        }
        // Checked before anything changes: a bad request changes nothing.
        let new_regex = match request.subscribed_regex.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(text) => Some(Some(Subscription::new(text).map_err(|_| ResponseError::InvalidRegularExpression)?)),
        };
        match request.member_epoch {
            -2 if self.members.get(&request.member_id).is_some_and(|m| m.instance_id.is_some()) => {
                // A static member leaving for a restart keeps its place and
                // partitions until its session times out; coming back under
                // the same instance id, it takes them again (KIP-848).
                let member = self.members.get_mut(&request.member_id).expect("checked above");
                member.deadline = now + self.session_timeout;
                return Ok(HeartbeatAnswer { member_id: request.member_id, member_epoch: -2, assignment: None });
            }
            -1 | -2 => {
                if self.members.remove(&request.member_id).is_none() {
                    return Err(ResponseError::UnknownMemberId);
                }
                self.epoch += 1;
                return Ok(HeartbeatAnswer {
                    member_id: request.member_id,
                    member_epoch: request.member_epoch,
                    assignment: None,
                });
            }
            0 => {
                if request.member_id.is_empty() {
                    // Heartbeat v0: the coordinator names the member.
                    request.member_id = uuid::Uuid::new_v4().simple().to_string();
                }
                self.join(&request, now)?
            }
            epoch => {
                let member = self.members.get(&request.member_id).ok_or(ResponseError::UnknownMemberId)?;
                if epoch != member.epoch && epoch != member.previous_epoch {
                    return Err(ResponseError::FencedMemberEpoch);
                }
            }
        }
        let member = self.members.get_mut(&request.member_id).expect("joined or checked above");
        member.deadline = now + self.session_timeout;
        if let Some(regex) = new_regex {
            let member = self.members.get_mut(&request.member_id).expect("joined or checked above");
            if member.regex.as_ref().map(|r| &r.text) != regex.as_ref().map(|r| &r.text) {
                member.regex = regex;
                self.epoch += 1;
            }
        }
        let member = self.members.get_mut(&request.member_id).expect("joined or checked above");
        if let Some(subscribed) = &request.subscribed_topics {
            let mut subscribed = subscribed.clone();
            subscribed.sort();
            if member.subscribed != subscribed {
                member.subscribed = subscribed;
                self.epoch += 1;
            }
        }
        if let Some(owned) = &request.owned {
            member.revoking.retain(|partition| owned.contains(partition));
            if member.revoking.is_empty() {
                member.revoke_deadline = None;
            }
        }
        if request.rebalance_timeout > Duration::ZERO {
            member.rebalance_timeout = request.rebalance_timeout;
        }
        let subscribed: BTreeMap<String, (uuid::Uuid, i32)> = topics
            .iter()
            .filter(|(name, _)| self.members.values().any(|m| m.subscribes_to(name)))
            .map(|(name, topic)| (name.clone(), *topic))
            .collect();
        if self.target_epoch < self.epoch || subscribed != self.target_topics {
            if self.target_epoch == self.epoch {
                self.epoch += 1; // the topics changed under the same members
            }
            self.target = assign(self.assignor(), &self.members, &subscribed);
            self.target_topics = subscribed;
            self.target_epoch = self.epoch;
        }
        Ok(self.reconcile(&request.member_id, now))
    }

    fn join(&mut self, request: &Heartbeat, now: Instant) -> Result<(), ResponseError> {
        let mut carried = None;
        if let Some(instance) = &request.instance_id {
            let holder = self.members.values().find(|m| m.instance_id.as_ref() == Some(instance)).map(|m| m.id.clone());
            if let Some(holder) = holder.filter(|holder| *holder != request.member_id) {
                // A static member restarted: it takes its old place.
                carried = self.members.remove(&holder);
            }
        }
        // A returning static member keeps its epoch, partitions and
        // subscription: the same subscription again changes nothing.
        let (epoch, assigned, subscribed, regex) = match carried {
            Some(old) => {
                if let Some(target) = self.target.remove(&old.id) {
                    self.target.insert(request.member_id.clone(), target);
                }
                (old.epoch, old.assigned, old.subscribed, old.regex)
            }
            None => (0, BTreeSet::new(), Vec::new(), None),
        };
        if self.members.remove(&request.member_id).is_some() || epoch == 0 {
            self.epoch += 1;
        }
        self.members.insert(
            request.member_id.clone(),
            ConsumerMember {
                id: request.member_id.clone(),
                instance_id: request.instance_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                subscribed,
                regex,
                epoch,
                previous_epoch: epoch,
                assigned,
                revoking: BTreeSet::new(),
                told: None,
                assignor: request.assignor.clone(),
                deadline: now + self.session_timeout,
                // Kafka's default when a join leaves it out (-1).
                rebalance_timeout: if request.rebalance_timeout > Duration::ZERO {
                    request.rebalance_timeout
                } else {
                    DEFAULT_REBALANCE_TIMEOUT
                },
                revoke_deadline: None,
            },
        );
        Ok(())
    }

    /// Moves one member towards its target, never handing it a partition
    /// another member still holds.
    fn reconcile(&mut self, member_id: &str, now: Instant) -> HeartbeatAnswer {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let held_elsewhere: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != member_id)
            .flat_map(|m| m.assigned.iter().chain(m.revoking.iter()).copied())
            .collect();
        let target_epoch = self.target_epoch;
        let member = self.members.get_mut(member_id).expect("the caller's member");
        let lose: BTreeSet<TopicPartition> = member.assigned.difference(&target).copied().collect();
        if !lose.is_empty() {
            member.assigned.retain(|p| target.contains(p));
            member.revoking.extend(lose);
            member.revoke_deadline.get_or_insert(now + member.rebalance_timeout);
        } else if member.revoking.is_empty() {
            let free: Vec<TopicPartition> = target.iter().filter(|p| !held_elsewhere.contains(p)).copied().collect();
            member.assigned.extend(free);
            if member.epoch != target_epoch {
                member.previous_epoch = member.epoch;
                member.epoch = target_epoch;
            }
        }
        let assignment = (member.told.as_ref() != Some(&member.assigned)).then(|| member.assigned.clone());
        if assignment.is_some() {
            member.told = Some(member.assigned.clone());
        }
        HeartbeatAnswer { member_id: member.id.clone(), member_epoch: member.epoch, assignment }
    }

    /// Removes members whose session expired, or that did not give up their
    /// partitions within their rebalance timeout; true if any was.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.members.len();
        self.members.retain(|_, member| {
            if member.deadline <= now {
                tracing::info!(member = %member.id, "the consumer group member's session expired; removing it");
                return false;
            }
            if member.revoke_deadline.is_some_and(|deadline| deadline <= now) {
                tracing::info!(member = %member.id, "the member did not give up partitions within its rebalance timeout; removing it");
                return false;
            }
            true
        });
        let removed = self.members.len() != before;
        if removed {
            self.epoch += 1;
            self.dirty = true;
        }
        removed
    }

    /// Commits from `member_id` at `member_epoch`.
    pub fn check_commit(&self, member_id: &str, member_epoch: i32) -> Result<(), ResponseError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let member = self.members.get(member_id).ok_or(ResponseError::UnknownMemberId)?;
        if member_epoch > member.epoch {
            return Err(ResponseError::FencedMemberEpoch);
        }
        if member_epoch < member.epoch {
            return Err(ResponseError::StaleMemberEpoch);
        }
        Ok(())
    }
}

/// The target assignment of `assignor` for `members` over `topics`.
fn assign(
    assignor: &str,
    members: &BTreeMap<String, ConsumerMember>,
    topics: &BTreeMap<String, (uuid::Uuid, i32)>,
) -> BTreeMap<String, BTreeSet<TopicPartition>> {
    let mut target: BTreeMap<String, BTreeSet<TopicPartition>> =
        members.keys().map(|id| (id.clone(), BTreeSet::new())).collect();
    for (name, (topic_id, partitions)) in topics {
        let subscribers: Vec<&String> = members.values().filter(|m| m.subscribes_to(name)).map(|m| &m.id).collect();
        if subscribers.is_empty() {
            continue;
        }
        if assignor == "range" {
            // Contiguous ranges, the first `partitions % n` one longer.
            let (share, extra) = (*partitions / subscribers.len() as i32, *partitions % subscribers.len() as i32);
            let mut next = 0;
            for (i, member) in subscribers.iter().enumerate() {
                let count = share + i32::from((i as i32) < extra);
                target.get_mut(*member).expect("listed").extend((next..next + count).map(|p| (*topic_id, p)));
                next += count;
            }
        } else {
            // Uniform: each partition to the subscriber holding the fewest,
            // keeping a partition where it is while that stays balanced.
            let mut unplaced = Vec::new();
            for partition in 0..*partitions {
                let holder = subscribers.iter().find(|id| members[**id].assigned.contains(&(*topic_id, partition)));
                match holder {
                    Some(holder) => {
                        target.get_mut(*holder).expect("listed").insert((*topic_id, partition));
                    }
                    None => unplaced.push(partition),
                }
            }
            let quota = (*partitions as usize).div_ceil(subscribers.len());
            for member in &subscribers {
                let held: Vec<TopicPartition> =
                    target[*member].iter().filter(|(t, _)| t == topic_id).copied().collect();
                for extra in held.into_iter().skip(quota) {
                    target.get_mut(*member).expect("listed").remove(&extra);
                    unplaced.push(extra.1);
                }
            }
            unplaced.sort();
            for partition in unplaced {
                let least = subscribers.iter().min_by_key(|id| target[**id].len()).expect("at least one subscriber");
                target.get_mut(*least).expect("listed").insert((*topic_id, partition));
            }
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> BTreeMap<String, (uuid::Uuid, i32)> {
        BTreeMap::from([("events".to_string(), (uuid::Uuid::from_u128(7), 12))])
    }

    fn join(group: &mut ConsumerGroup, id: &str, now: Instant) -> HeartbeatAnswer {
        let request = Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            subscribed_topics: Some(vec!["events".into()]),
            assignor: Some("uniform".into()),
            ..Default::default()
        };
        group.heartbeat(request, &topics(), now).unwrap()
    }

    fn beat(
        group: &mut ConsumerGroup,
        id: &str,
        epoch: i32,
        owned: &BTreeSet<TopicPartition>,
        now: Instant,
    ) -> HeartbeatAnswer {
        let request =
            Heartbeat { member_id: id.into(), member_epoch: epoch, owned: Some(owned.clone()), ..Default::default() };
        group.heartbeat(request, &topics(), now).unwrap()
    }

    #[test]
    fn a_second_member_gets_half_once_the_first_gave_it_up() {
        let now = Instant::now();
        let mut group = ConsumerGroup::new("g", Duration::from_secs(45));
        let a = join(&mut group, "a", now);
        let mut a_owned = a.assignment.clone().unwrap();
        assert_eq!(a_owned.len(), 12);
        let b = join(&mut group, "b", now);
        assert_eq!(b.assignment.unwrap().len(), 0, "b waits while a still holds everything");
        let a2 = beat(&mut group, "a", a.member_epoch, &a_owned, now);
        assert_eq!(a2.member_epoch, a.member_epoch, "a keeps its epoch until it revoked");
        a_owned = a2.assignment.unwrap();
        assert_eq!(a_owned.len(), 6);
        let a3 = beat(&mut group, "a", a2.member_epoch, &a_owned, now);
        assert_eq!(a3.member_epoch, group.epoch);
        let b2 = beat(&mut group, "b", b.member_epoch, &BTreeSet::new(), now);
        let b_owned = b2.assignment.unwrap();
        assert_eq!(b_owned.len(), 6);
        assert!(a_owned.is_disjoint(&b_owned));
        assert_eq!(group.state(), "Stable");
    }

    #[test]
    fn unknown_members_and_wrong_epochs_are_refused() {
        let now = Instant::now();
        let mut group = ConsumerGroup::new("g", Duration::from_secs(45));
        let request = Heartbeat { member_id: "x".into(), member_epoch: 3, ..Default::default() };
        assert_eq!(group.heartbeat(request, &topics(), now), Err(ResponseError::UnknownMemberId));
        let a = join(&mut group, "a", now);
        let request = Heartbeat { member_id: "a".into(), member_epoch: a.member_epoch + 5, ..Default::default() };
        assert_eq!(group.heartbeat(request, &topics(), now), Err(ResponseError::FencedMemberEpoch));
        let request = Heartbeat { member_id: "a".into(), assignor: Some("magic".into()), ..Default::default() };
        assert_eq!(group.heartbeat(request, &topics(), now), Err(ResponseError::UnsupportedAssignor));
    }

    #[test]
    fn a_member_that_never_gives_partitions_up_is_removed() {
        let now = Instant::now();
        let mut group = ConsumerGroup::new("g", Duration::from_secs(45));
        let request = |id: &str| Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout: Duration::from_secs(10),
            subscribed_topics: Some(vec!["events".into()]),
            ..Default::default()
        };
        let a = group.heartbeat(request("a"), &topics(), now).unwrap();
        let everything = a.assignment.unwrap();
        let b = group.heartbeat(request("b"), &topics(), now).unwrap();
        // a is told to give half up, and keeps reporting that it owns everything.
        let a2 = beat(&mut group, "a", a.member_epoch, &everything, now);
        assert_eq!(a2.assignment.unwrap().len(), 6);
        beat(&mut group, "a", a.member_epoch, &everything, now + Duration::from_secs(5));
        assert!(!group.tick(now + Duration::from_secs(9)));
        assert!(group.tick(now + Duration::from_secs(11)), "removed after its rebalance timeout");
        assert!(!group.members.contains_key("a"));
        let b = beat(&mut group, "b", b.member_epoch, &BTreeSet::new(), now + Duration::from_secs(11));
        assert_eq!(b.assignment.unwrap().len(), 12, "b gets everything once a is gone");
    }

    #[test]
    fn a_regular_expression_subscribes_to_the_topics_it_matches_in_whole() {
        let now = Instant::now();
        let mut topics = topics();
        topics.insert("events-archive".into(), (uuid::Uuid::from_u128(8), 2));
        topics.insert("old-events".into(), (uuid::Uuid::from_u128(9), 2));
        let mut group = ConsumerGroup::new("g", Duration::from_secs(45));
        let request = Heartbeat {
            member_id: "a".into(),
            member_epoch: 0,
            subscribed_regex: Some("events.*".into()),
            ..Default::default()
        };
        let answer = group.heartbeat(request, &topics, now).unwrap();
        assert_eq!(answer.assignment.unwrap().len(), 14, "events and events-archive, not old-events");
        let bad = Heartbeat { member_id: "b".into(), subscribed_regex: Some("(".into()), ..Default::default() };
        assert_eq!(group.heartbeat(bad, &topics, now), Err(ResponseError::InvalidRegularExpression));
        assert_eq!(group.members.len(), 1, "the bad request changed nothing");
    }

    #[test]
    fn a_static_member_that_leaves_for_a_restart_gets_its_partitions_back() {
        let now = Instant::now();
        let mut group = ConsumerGroup::new("g", Duration::from_secs(45));
        let static_join = |id: &str| Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            instance_id: Some("billing-1".into()),
            subscribed_topics: Some(vec!["events".into()]),
            ..Default::default()
        };
        let first = group.heartbeat(static_join("old"), &topics(), now).unwrap();
        let held = first.assignment.unwrap();
        let leave = Heartbeat { member_id: "old".into(), member_epoch: -2, ..Default::default() };
        assert_eq!(group.heartbeat(leave, &topics(), now).unwrap().member_epoch, -2);
        let epoch = group.epoch;
        assert!(!group.tick(now + Duration::from_secs(10)), "kept within its session");
        let back = group.heartbeat(static_join("new"), &topics(), now + Duration::from_secs(10)).unwrap();
        assert_eq!(back.assignment.unwrap(), held, "the same partitions, without a new assignment");
        assert_eq!(group.epoch, epoch, "no new group epoch");
        assert!(!group.members.contains_key("old"));
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let mut members = BTreeMap::new();
        for id in ["a", "b", "c", "d", "e"] {
            let now = Instant::now();
            let mut group = ConsumerGroup::new("g", Duration::from_secs(1));
            join(&mut group, id, now);
            let mut member = group.members.remove(id).unwrap();
            member.subscribed = vec!["events".into()];
            members.insert(id.to_string(), member);
        }
        let target = assign("range", &members, &topics());
        let sizes: Vec<usize> = target.values().map(BTreeSet::len).collect();
        assert_eq!(sizes, vec![3, 3, 2, 2, 2]);
        assert_eq!(target["a"].iter().map(|p| p.1).collect::<Vec<_>>(), vec![0, 1, 2]);
    }
}
