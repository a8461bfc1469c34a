//! One classic consumer group (Kafka's JoinGroup/SyncGroup protocol), as a
//! state machine without I/O: the coordinator calls it with the request and
//! the time, and it answers at once or parks the request (a join waits for
//! the rebalance to complete, a sync for the leader's assignment). A parked
//! request's answer comes out later, when the group moves on, through
//! `take_answers`: the coordinator delivers it to the member waiting for it.
//!
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──every member joined, or the rebalance
//!    ▲                 ▲        │        timeout──▶ CompletingRebalance
//!    │                 │        │                        │ leader's SyncGroup,
//!    └──last member────┴──join, leave, expiry────────────┤ written to the log
//!       left                                             ▼
//!                                                      Stable
//! ```
//!
//! The rules are Kafka's (`GroupCoordinator`): the first rebalance of an
//! empty group waits `initial_delay` for more members; members that do not
//! rejoin within the rebalance timeout are removed (static ones stay until
//! their session times out); a member whose heartbeats stop for its session
//! timeout is removed; a static member (`group.instance.id`) that comes back
//! takes its old place and assignment without a rebalance.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::Decodable;

use super::records::{GroupValue, MemberValue};

/// Kafka's `group.min.session.timeout.ms` and `group.max.session.timeout.ms`.
pub const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(6);
pub const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// A JoinGroup request, as the group sees it.
#[derive(Clone, Debug)]
pub struct Join {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// From v4 a new member is given an id and asked to join again with it.
    pub requires_known_member_id: bool,
    /// From v9 a static leader that rejoins is told to skip the assignment.
    pub supports_skip_assignment: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinAnswer {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinAnswer {
    fn error(error: ResponseError, member_id: &str) -> JoinAnswer {
        JoinAnswer { error: Some(error), generation: -1, member_id: member_id.to_owned(), ..Default::default() }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncAnswer {
    pub error: Option<ResponseError>,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncAnswer {
    fn error(error: ResponseError) -> SyncAnswer {
        SyncAnswer { error: Some(error), ..Default::default() }
    }
}

/// An answer now, or a parked request whose answer comes out of
/// `take_answers` when the group moves on.
#[derive(Debug, PartialEq)]
pub enum Reply<T> {
    Now(T),
    /// Parked: the answer comes out of `take_answers` for `member` (a
    /// joining member's id may be new, made here).
    Parked {
        member: String,
    },
}

/// The answer to a parked request, for the member that sent it.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    Join(JoinAnswer),
    Sync(SyncAnswer),
}

#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// The assignment before the last rebalance: a member may still commit
    /// the partitions it gave up in it (cooperative rebalancing does).
    previous_assignment: Bytes,
    /// A JoinGroup of this member is parked.
    awaiting_join: bool,
    /// A SyncGroup of this member is parked.
    awaiting_sync: bool,
    deadline: Instant,
}

impl Member {
    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct ClassicGroup {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// group.instance.id → the member id it holds now.
    statics: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they join with it.
    pending: HashMap<String, Instant>,
    /// The end of the join phase (rebalance timeout), and the first rebalance's delay.
    join_deadline: Option<Instant>,
    join_not_before: Option<Instant>,
    /// The end of the sync phase: members that did not sync by then are dropped.
    sync_deadline: Option<Instant>,
    /// The generation whose assignment is being written to the log.
    persisting: Option<i32>,
    initial_delay: Duration,
    /// Set when the group's record in the log is out of date.
    pub dirty: bool,
    /// Answers to parked requests, waiting for `take_answers`.
    answers: Vec<(String, Answer)>,
}

impl ClassicGroup {
    pub fn new(id: &str, initial_delay: Duration) -> ClassicGroup {
        ClassicGroup {
            id: id.to_owned(),
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            statics: HashMap::new(),
            pending: HashMap::new(),
            join_deadline: None,
            join_not_before: None,
            sync_deadline: None,
            persisting: None,
            initial_delay,
            dirty: false,
            answers: Vec::new(),
        }
    }

    /// The group as its last record in the log left it: stable with its
    /// members (each given a full session from `now`), or empty.
    pub fn restore(id: &str, value: &GroupValue, initial_delay: Duration, now: Instant) -> ClassicGroup {
        let mut group = ClassicGroup::new(id, initial_delay);
        group.generation = value.generation;
        group.protocol_type = Some(value.protocol_type.clone()).filter(|t| !t.is_empty());
        group.protocol = value.protocol.clone();
        group.leader = value.leader.clone();
        for stored in &value.members {
            let session_timeout = Duration::from_millis(stored.session_timeout_ms.max(0) as u64);
            let member = Member {
                id: stored.member_id.clone(),
                instance_id: stored.group_instance_id.clone(),
                client_id: stored.client_id.clone(),
                client_host: stored.client_host.clone(),
                session_timeout,
                rebalance_timeout: Duration::from_millis(stored.rebalance_timeout_ms.max(0) as u64),
                protocols: vec![(value.protocol.clone().unwrap_or_default(), stored.subscription.clone())],
                assignment: stored.assignment.clone(),
                previous_assignment: Bytes::new(),
                awaiting_join: false,
                awaiting_sync: false,
                deadline: now + session_timeout,
            };
            if let Some(instance) = &member.instance_id {
                group.statics.insert(instance.clone(), member.id.clone());
            }
            group.members.insert(member.id.clone(), member);
        }
        group.state = if group.members.is_empty() { State::Empty } else { State::Stable };
        group
    }

    /// The record that describes the group in the log.
    pub fn value(&self, now_ms: i64) -> GroupValue {
        let protocol = self.protocol.clone();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: protocol.clone(),
            leader: self.leader.clone(),
            current_state_timestamp: now_ms,
            members: self
                .members
                .values()
                .map(|member| MemberValue {
                    member_id: member.id.clone(),
                    group_instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: member.session_timeout.as_millis() as i32,
                    subscription: member.metadata(protocol.as_deref().unwrap_or_default()),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    /// The error for a request from `member_id` (with `instance_id`), if it
    /// is not a member, or an old incarnation of a static member.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), ResponseError> {
        if let Some(instance) = instance_id {
            match self.statics.get(instance) {
                Some(holder) if holder != member_id => return Err(ResponseError::FencedInstanceId),
                None if !self.members.contains_key(member_id) => return Err(ResponseError::UnknownMemberId),
                _ => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        Ok(())
    }

    pub fn join(&mut self, join: Join, now: Instant) -> Reply<JoinAnswer> {
        if join.protocol_type.is_empty() || join.protocols.is_empty() {
            return Reply::Now(JoinAnswer::error(ResponseError::InconsistentGroupProtocol, &join.member_id));
        }
        if !self.members.is_empty() && !self.supports(&join) {
            return Reply::Now(JoinAnswer::error(ResponseError::InconsistentGroupProtocol, &join.member_id));
        }
        if join.member_id.is_empty() {
            return self.join_new(join, now);
        }
        if let Err(error) = self.check_member(&join.member_id, join.instance_id.as_deref()) {
            if self.pending.remove(&join.member_id).is_some() {
                return self.add_and_rebalance(join.member_id.clone(), join, now);
            }
            return Reply::Now(JoinAnswer::error(error, &join.member_id));
        }
        let member_id = join.member_id.clone();
        let member = self.members.get_mut(&member_id).expect("checked above");
        member.deadline = now + join.session_timeout;
        let same_protocols = member.protocols == join.protocols;
        match self.state {
            State::PreparingRebalance => {
                let member = self.members.get_mut(&member_id).expect("checked above");
                update(member, &join);
                member.awaiting_join = true;
                self.maybe_complete_join(now);
                Reply::Parked { member: member_id }
            }
            State::CompletingRebalance | State::Stable
                if same_protocols && (self.state == State::CompletingRebalance || !self.is_leader(&member_id)) =>
            {
                // A repeated join with nothing new: the current generation.
                Reply::Now(self.join_answer(&member_id, false))
            }
            _ => {
                let member = self.members.get_mut(&member_id).expect("checked above");
                update(member, &join);
                member.awaiting_join = true;
                self.prepare_rebalance(now);
                self.maybe_complete_join(now);
                Reply::Parked { member: member_id }
            }
        }
    }

    /// A join without a member id: a static member coming back, or a new one.
    fn join_new(&mut self, join: Join, now: Instant) -> Reply<JoinAnswer> {
        if let Some(instance) = join.instance_id.clone() {
            let new_id = format!("{instance}-{}", uuid::Uuid::new_v4());
            if let Some(old_id) = self.statics.get(&instance).cloned() {
                return self.replace_static(old_id, new_id, join, now);
            }
            return self.add_and_rebalance(new_id, join, now);
        }
        let new_id = format!("{}-{}", join.client_id, uuid::Uuid::new_v4());
        if join.requires_known_member_id {
            self.pending.insert(new_id.clone(), now + join.session_timeout);
            return Reply::Now(JoinAnswer::error(ResponseError::MemberIdRequired, &new_id));
        }
        self.add_and_rebalance(new_id, join, now)
    }

    /// A static member restarted: its new member id takes the old one's
    /// place and assignment; a stable group does not rebalance for it.
    fn replace_static(&mut self, old_id: String, new_id: String, join: Join, now: Instant) -> Reply<JoinAnswer> {
        let mut member = self.members.remove(&old_id).expect("statics names members");
        if std::mem::take(&mut member.awaiting_join) {
            self.answers
                .push((old_id.clone(), Answer::Join(JoinAnswer::error(ResponseError::FencedInstanceId, &old_id))));
        }
        if std::mem::take(&mut member.awaiting_sync) {
            self.answers.push((old_id.clone(), Answer::Sync(SyncAnswer::error(ResponseError::FencedInstanceId))));
        }
        // Kafka's rule for a static member coming back: no rebalance while it
        // still speaks the group's protocol (its metadata is not compared:
        // a cooperative member's lists the partitions it owned, none after a restart).
        let same_protocols = self.protocol.as_ref().is_some_and(|p| join.protocols.iter().any(|(name, _)| name == p));
        member.id = new_id.clone();
        member.deadline = now + join.session_timeout;
        update(&mut member, &join);
        self.members.insert(new_id.clone(), member);
        self.statics.insert(join.instance_id.clone().expect("a static member"), new_id.clone());
        if self.leader.as_deref() == Some(old_id.as_str()) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            State::Stable if same_protocols => {
                self.dirty = true;
                let leader = self.is_leader(&new_id);
                let mut answer = self.join_answer(&new_id, leader);
                answer.skip_assignment = leader && join.supports_skip_assignment;
                Reply::Now(answer)
            }
            _ => {
                let member = self.members.get_mut(&new_id).expect("inserted above");
                member.awaiting_join = true;
                self.prepare_rebalance(now);
                self.maybe_complete_join(now);
                Reply::Parked { member: new_id }
            }
        }
    }

    fn add_and_rebalance(&mut self, member_id: String, join: Join, now: Instant) -> Reply<JoinAnswer> {
        if self.members.is_empty() {
            self.protocol_type = Some(join.protocol_type.clone());
        }
        let member = Member {
            id: member_id.clone(),
            instance_id: join.instance_id.clone(),
            client_id: join.client_id.clone(),
            client_host: join.client_host.clone(),
            session_timeout: join.session_timeout,
            rebalance_timeout: join.rebalance_timeout,
            protocols: join.protocols.clone(),
            assignment: Bytes::new(),
            previous_assignment: Bytes::new(),
            awaiting_join: true,
            awaiting_sync: false,
            deadline: now + join.session_timeout,
        };
        if let Some(instance) = &join.instance_id {
            self.statics.insert(instance.clone(), member_id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone()); // the first to join leads, as in Kafka
        }
        self.members.insert(member_id.clone(), member);
        self.prepare_rebalance(now);
        self.maybe_complete_join(now);
        Reply::Parked { member: member_id }
    }

    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Reply<SyncAnswer> {
        if let Err(error) = self.check_member(member_id, instance_id) {
            return Reply::Now(SyncAnswer::error(error));
        }
        if generation != self.generation {
            return Reply::Now(SyncAnswer::error(ResponseError::IllegalGeneration));
        }
        let is_leader = self.is_leader(member_id);
        let member = self.members.get_mut(member_id).expect("checked above");
        member.deadline = now + member.session_timeout;
        match self.state {
            State::Empty => Reply::Now(SyncAnswer::error(ResponseError::UnknownMemberId)),
            State::PreparingRebalance => Reply::Now(SyncAnswer::error(ResponseError::RebalanceInProgress)),
            State::Stable => {
                let assignment = member.assignment.clone();
                Reply::Now(SyncAnswer { assignment, ..self.sync_answer() })
            }
            State::CompletingRebalance => {
                member.awaiting_sync = true;
                if is_leader && self.persisting.is_none() {
                    let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for member in self.members.values_mut() {
                        let assignment = given.remove(&member.id).unwrap_or_default();
                        member.previous_assignment = std::mem::replace(&mut member.assignment, assignment);
                    }
                    self.persisting = Some(self.generation);
                    self.dirty = true;
                }
                Reply::Parked { member: member_id.to_owned() }
            }
        }
    }

    /// The answers to parked requests that the last calls produced, oldest
    /// first, each with the member it is for.
    pub fn take_answers(&mut self) -> Vec<(String, Answer)> {
        std::mem::take(&mut self.answers)
    }

    /// The generation whose assignment waits to be written, if any.
    pub fn persisting(&self) -> Option<i32> {
        self.persisting
    }

    /// The log took (or refused) the record of `generation`'s assignment.
    pub fn persisted(&mut self, generation: i32, result: Result<(), ResponseError>, now: Instant) {
        if self.persisting != Some(generation) {
            return;
        }
        self.persisting = None;
        if self.generation != generation || self.state != State::CompletingRebalance {
            return;
        }
        match result {
            Ok(()) => {
                self.state = State::Stable;
                self.sync_deadline = None;
                let answer = self.sync_answer();
                for member in self.members.values_mut() {
                    member.deadline = now + member.session_timeout;
                    if std::mem::take(&mut member.awaiting_sync) {
                        let answer = SyncAnswer { assignment: member.assignment.clone(), ..answer.clone() };
                        self.answers.push((member.id.clone(), Answer::Sync(answer)));
                    }
                }
            }
            Err(error) => {
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                    if std::mem::take(&mut member.awaiting_sync) {
                        self.answers.push((member.id.clone(), Answer::Sync(SyncAnswer::error(error))));
                    }
                }
                self.prepare_rebalance(now);
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.state == State::Empty {
            return Err(ResponseError::UnknownMemberId);
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let member = self.members.get_mut(member_id).expect("checked above");
        member.deadline = now + member.session_timeout;
        match self.state {
            State::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            _ => Ok(()),
        }
    }

    /// A LeaveGroup for one member, by member id or (static) instance id.
    pub fn leave(&mut self, member_id: &str, instance_id: Option<&str>, now: Instant) -> Result<(), ResponseError> {
        let id = match instance_id {
            Some(instance) => {
                let holder = self.statics.get(instance).ok_or(ResponseError::UnknownMemberId)?;
                if !member_id.is_empty() && holder != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
                holder.clone()
            }
            None => {
                if self.pending.remove(member_id).is_some() {
                    return Ok(());
                }
                self.check_member(member_id, None)?;
                member_id.to_owned()
            }
        };
        self.remove(&id, now);
        Ok(())
    }

    /// Commits from a member of this group at `generation`: Kafka's checks.
    pub fn check_commit(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        if generation < 0 && self.members.is_empty() {
            return Ok(()); // an admin or a consumer without group management
        }
        if self.state == State::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        self.check_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// The partitions `member_id` may commit: its assignment in this
    /// generation and the one before, when the group is stable on the
    /// consumer protocol (whose assignments the coordinator can read).
    pub fn owned_partitions(&self, member_id: &str) -> Option<BTreeSet<(String, i32)>> {
        if self.protocol_type.as_deref() != Some("consumer") || self.state != State::Stable {
            return None;
        }
        let member = self.members.get(member_id)?;
        let mut owned = decode_assignment(&member.assignment)?;
        owned.extend(decode_assignment(&member.previous_assignment).unwrap_or_default());
        Some(owned)
    }

    /// The topics the members subscribe to (consumer protocol).
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        let protocol = self.protocol.clone().unwrap_or_default();
        self.members.values().filter_map(|m| decode_subscription(&m.metadata(&protocol))).flatten().collect()
    }

    /// Moves the group on as time passes: the end of a join phase, members
    /// whose session expired, ids handed out and never used, a sync phase
    /// the leader never finished.
    pub fn tick(&mut self, now: Instant) {
        self.pending.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| member.deadline <= now)
            .filter(|member| match self.state {
                State::PreparingRebalance => !member.awaiting_join,
                State::CompletingRebalance => !member.awaiting_sync,
                _ => true,
            })
            .map(|member| member.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "the member's session expired; removing it");
            self.remove(&id, now);
        }
        if self.state == State::CompletingRebalance && self.sync_deadline.is_some_and(|d| d <= now) {
            let late: Vec<String> = self.members.values().filter(|m| !m.awaiting_sync).map(|m| m.id.clone()).collect();
            tracing::info!(group = %self.id, ?late, "members did not sync in time; rebalancing");
            for id in late {
                self.remove(&id, now);
            }
            if self.state == State::CompletingRebalance {
                self.prepare_rebalance(now);
            }
        }
        self.maybe_complete_join(now);
    }

    fn remove(&mut self, member_id: &str, now: Instant) {
        let Some(member) = self.members.remove(member_id) else { return };
        if let Some(instance) = &member.instance_id {
            self.statics.remove(instance);
        }
        if member.awaiting_join {
            self.answers
                .push((member.id.clone(), Answer::Join(JoinAnswer::error(ResponseError::UnknownMemberId, member_id))));
        }
        if member.awaiting_sync {
            self.answers.push((member.id.clone(), Answer::Sync(SyncAnswer::error(ResponseError::UnknownMemberId))));
        }
        if matches!(self.state, State::Stable | State::CompletingRebalance) {
            self.prepare_rebalance(now);
        }
        // The last member leaving empties the group at once.
        self.maybe_complete_join(now);
    }

    /// Everyone must join again. Parked syncs learn that a rebalance began.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == State::PreparingRebalance {
            return;
        }
        for member in self.members.values_mut() {
            if std::mem::take(&mut member.awaiting_sync) {
                let answer = Answer::Sync(SyncAnswer::error(ResponseError::RebalanceInProgress));
                self.answers.push((member.id.clone(), answer));
            }
        }
        let rebalance_timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        if self.state == State::Empty {
            let delay = self.initial_delay.min(rebalance_timeout);
            self.join_not_before = Some(now + delay);
        }
        self.state = State::PreparingRebalance;
        self.persisting = None;
        self.join_deadline = Some(now + rebalance_timeout);
        tracing::info!(group = %self.id, generation = self.generation, "rebalancing");
    }

    /// Completes the join phase once every member rejoined (after the first
    /// rebalance's delay) or the rebalance timeout passed.
    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join);
        let delayed = self.join_not_before.is_some_and(|t| t > now);
        let timed_out = self.join_deadline.is_some_and(|t| t <= now);
        if !(timed_out || (all_joined && !delayed)) {
            return;
        }
        let late: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.awaiting_join && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in late {
            tracing::info!(group = %self.id, member = %id, "the member did not rejoin in time; removing it");
            self.members.remove(&id);
        }
        self.join_not_before = None;
        self.join_deadline = None;
        let joined: Vec<String> = self.members.values().filter(|m| m.awaiting_join).map(|m| m.id.clone()).collect();
        if !self.members.is_empty() && joined.is_empty() {
            // Only static members that have not rejoined: wait another round.
            let rebalance_timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
            self.join_deadline = Some(now + rebalance_timeout);
            return;
        }
        self.generation += 1;
        self.dirty = true;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            tracing::info!(group = %self.id, generation = self.generation, "the group is empty");
            return;
        }
        if !self.leader.as_ref().is_some_and(|leader| joined.contains(leader)) {
            self.leader = joined.first().cloned();
        }
        self.protocol = self.select_protocol();
        self.state = State::CompletingRebalance;
        let rebalance_timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        self.sync_deadline = Some(now + rebalance_timeout);
        tracing::info!(
            group = %self.id,
            generation = self.generation,
            members = self.members.len(),
            protocol = ?self.protocol,
            "the join phase is complete"
        );
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let member = self.members.get_mut(&id).expect("listed above");
            member.deadline = now + member.session_timeout;
            if !std::mem::take(&mut member.awaiting_join) {
                continue;
            }
            let leader = self.leader.as_deref() == Some(id.as_str());
            let answer = self.join_answer(&id, leader);
            self.answers.push((id, Answer::Join(answer)));
        }
    }

    fn join_answer(&self, member_id: &str, with_members: bool) -> JoinAnswer {
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if with_members {
            self.members.values().map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect()
        } else {
            Vec::new()
        };
        JoinAnswer {
            error: None,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_owned(),
            skip_assignment: false,
            members,
        }
    }

    fn sync_answer(&self) -> SyncAnswer {
        SyncAnswer {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: Bytes::new(),
        }
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader.as_deref() == Some(member_id)
    }

    /// Whether a joining member speaks the group's protocol type and one of
    /// the protocols every member supports.
    fn supports(&self, join: &Join) -> bool {
        if self.protocol_type.as_deref() != Some(join.protocol_type.as_str()) {
            return false;
        }
        join.protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .filter(|m| m.id != join.member_id)
                .all(|m| m.protocols.iter().any(|(theirs, _)| theirs == name))
        })
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            if let Some(choice) = member.protocols.iter().find(|(name, _)| candidates.contains(&name)) {
                if let Some(vote) = votes.iter_mut().find(|(_, name)| *name == &choice.0) {
                    vote.0 += 1;
                }
            }
        }
        // Most votes; among equals, the first member's preference.
        let best = votes.iter().map(|(count, _)| *count).max()?;
        votes.into_iter().find(|(count, _)| *count == best).map(|(_, name)| name.clone())
    }
}

/// The (topic, partition) pairs of a classic `ConsumerProtocolAssignment`,
/// or `None` if the bytes are not one.
pub fn decode_assignment(bytes: &Bytes) -> Option<BTreeSet<(String, i32)>> {
    let assignment: kafka_protocol::messages::ConsumerProtocolAssignment = decode_versioned(bytes)?;
    Some(
        assignment
            .assigned_partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p)))
            .collect(),
    )
}

/// The topics of a classic `ConsumerProtocolSubscription`, or `None`.
pub fn decode_subscription(bytes: &Bytes) -> Option<Vec<String>> {
    let subscription: kafka_protocol::messages::ConsumerProtocolSubscription = decode_versioned(bytes)?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// A consumer-protocol structure as clients write it: its version (i16),
/// then the body at that version (read as the newest known, 3, if newer).
fn decode_versioned<T: Decodable>(bytes: &Bytes) -> Option<T> {
    let mut body = bytes.clone();
    if body.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([body[0], body[1]]);
    bytes::Buf::advance(&mut body, 2);
    T::decode(&mut body, version.clamp(0, 3)).ok()
}

fn update(member: &mut Member, join: &Join) {
    member.protocols = join.protocols.clone();
    member.session_timeout = join.session_timeout;
    member.rebalance_timeout = join.rebalance_timeout;
    member.client_id = join.client_id.clone();
    member.client_host = join.client_host.clone();
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(3);

    fn join_request(member_id: &str, instance: Option<&str>) -> Join {
        Join {
            member_id: member_id.into(),
            instance_id: instance.map(str::to_owned),
            client_id: "c".into(),
            client_host: String::new(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            requires_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn now_answer<T: std::fmt::Debug>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(answer) => answer,
            Reply::Parked { .. } => panic!("expected an answer now"),
        }
    }

    fn parked<T: std::fmt::Debug>(reply: Reply<T>) {
        assert!(matches!(reply, Reply::Parked { .. }), "expected a parked request, got {reply:?}");
    }

    /// The join answers the group gave out, by member.
    fn joins(group: &mut ClassicGroup) -> BTreeMap<String, JoinAnswer> {
        let mut answers = BTreeMap::new();
        for (member, answer) in group.take_answers() {
            match answer {
                Answer::Join(join) => assert!(answers.insert(member, join).is_none(), "one answer per member"),
                Answer::Sync(sync) => panic!("expected join answers, got a sync answer {sync:?}"),
            }
        }
        answers
    }

    /// The sync answers the group gave out, by member.
    fn syncs(group: &mut ClassicGroup) -> BTreeMap<String, SyncAnswer> {
        let mut answers = BTreeMap::new();
        for (member, answer) in group.take_answers() {
            match answer {
                Answer::Sync(sync) => assert!(answers.insert(member, sync).is_none(), "one answer per member"),
                Answer::Join(join) => panic!("expected sync answers, got a join answer {join:?}"),
            }
        }
        answers
    }

    /// Two dynamic members join a new group, the leader assigns, and the
    /// group is stable once the assignment is written.
    fn stable_group_of_two(now: Instant) -> (ClassicGroup, String, String) {
        let mut group = ClassicGroup::new("g", DELAY);
        let a = now_answer(group.join(join_request("", None), now));
        assert_eq!(a.error, Some(ResponseError::MemberIdRequired));
        parked(group.join(join_request(&a.member_id, None), now));
        let b = now_answer(group.join(join_request("", None), now));
        parked(group.join(join_request(&b.member_id, None), now));
        group.tick(now + Duration::from_secs(1));
        assert!(group.take_answers().is_empty(), "the first rebalance waits for the initial delay");
        group.tick(now + DELAY);
        let joined = joins(&mut group);
        let (a_answer, b_answer) = (&joined[&a.member_id], &joined[&b.member_id]);
        assert_eq!((a_answer.generation, b_answer.generation), (1, 1));
        assert_eq!(a_answer.leader, a.member_id);
        assert_eq!(a_answer.protocol.as_deref(), Some("range"));
        assert_eq!(a_answer.members.len(), 2, "the leader gets every member");
        assert!(b_answer.members.is_empty());
        assert_eq!(group.state, State::CompletingRebalance);
        parked(group.sync(&b.member_id, None, 1, vec![], now));
        let assignments =
            vec![(a.member_id.clone(), Bytes::from_static(b"A")), (b.member_id.clone(), Bytes::from_static(b"B"))];
        parked(group.sync(&a.member_id, None, 1, assignments, now));
        assert!(group.take_answers().is_empty(), "the assignment is handed out once it is written");
        assert_eq!(group.persisting(), Some(1));
        group.persisted(1, Ok(()), now);
        let synced = syncs(&mut group);
        let expected = |assignment: &'static [u8]| SyncAnswer {
            error: None,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            assignment: Bytes::from_static(assignment),
        };
        assert_eq!(synced[&a.member_id], expected(b"A"));
        assert_eq!(synced[&b.member_id], expected(b"B"));
        assert_eq!(group.state, State::Stable);
        (group, a.member_id, b.member_id)
    }

    #[test]
    fn members_join_sync_and_get_their_assignment() {
        stable_group_of_two(Instant::now());
    }

    #[test]
    fn an_assignment_the_log_refused_fails_the_syncs_and_the_group_rebalances() {
        let now = Instant::now();
        let mut group = ClassicGroup::new("g", Duration::ZERO);
        let mut join = join_request("", None);
        join.requires_known_member_id = false;
        parked(group.join(join, now));
        let member = joins(&mut group).into_keys().next().expect("the only member joined");
        parked(group.sync(&member, None, 1, vec![(member.clone(), Bytes::from_static(b"A"))], now));
        group.persisted(1, Err(ResponseError::NotCoordinator), now);
        assert_eq!(syncs(&mut group)[&member], SyncAnswer::error(ResponseError::NotCoordinator));
        assert_eq!(group.state, State::PreparingRebalance);
    }

    #[test]
    fn bad_heartbeats_and_syncs_get_kafka_errors() {
        let now = Instant::now();
        let (mut group, a, _) = stable_group_of_two(now);
        assert_eq!(group.heartbeat("nobody", None, 1, now), Err(ResponseError::UnknownMemberId));
        assert_eq!(group.heartbeat(&a, None, 7, now), Err(ResponseError::IllegalGeneration));
        assert_eq!(group.heartbeat(&a, None, 1, now), Ok(()));
        assert_eq!(
            now_answer(group.sync(&a, None, 2, vec![], now)),
            SyncAnswer::error(ResponseError::IllegalGeneration)
        );
        assert_eq!(group.check_commit(&a, None, 0), Err(ResponseError::IllegalGeneration));
        assert_eq!(group.check_commit("nobody", None, 1), Err(ResponseError::UnknownMemberId));
        assert_eq!(
            group.check_commit("", None, -1),
            Err(ResponseError::UnknownMemberId),
            "an admin commit to a live group"
        );
    }

    #[test]
    fn a_member_whose_session_expires_is_removed_and_the_rest_rebalance() {
        let now = Instant::now();
        let (mut group, a, b) = stable_group_of_two(now);
        let later_on = now + Duration::from_secs(8);
        assert_eq!(group.heartbeat(&a, None, 1, later_on), Ok(()));
        group.tick(now + Duration::from_secs(11));
        assert!(!group.members.contains_key(&b), "b sent nothing for its session timeout");
        assert_eq!(group.state, State::PreparingRebalance);
        assert_eq!(
            group.heartbeat(&a, None, 1, now + Duration::from_secs(11)),
            Err(ResponseError::RebalanceInProgress)
        );
        parked(group.join(join_request(&a, None), now + Duration::from_secs(11)));
        let answer = &joins(&mut group)[&a];
        assert_eq!((answer.generation, answer.members.len()), (2, 1));
    }

    #[test]
    fn a_parked_sync_learns_of_a_rebalance_that_began_meanwhile() {
        let now = Instant::now();
        let (mut group, a, b) = stable_group_of_two(now);
        // a rejoins with other metadata: a rebalance, and b must join again.
        let mut changed = join_request(&a, None);
        changed.protocols = vec![("range".into(), Bytes::from_static(b"other"))];
        parked(group.join(changed, now));
        parked(group.join(join_request(&b, None), now));
        let joined = joins(&mut group);
        assert_eq!(joined.len(), 2);
        parked(group.sync(&b, None, 2, vec![], now));
        assert!(group.leave(&a, None, now).is_ok());
        let answers = group.take_answers();
        assert!(
            answers.contains(&(b.clone(), Answer::Sync(SyncAnswer::error(ResponseError::RebalanceInProgress)))),
            "b's parked sync is told a rebalance began: {answers:?}"
        );
    }

    #[test]
    fn a_static_member_that_restarts_takes_its_place_without_a_rebalance() {
        let now = Instant::now();
        let mut group = ClassicGroup::new("g", DELAY);
        parked(group.join(join_request("", Some("m1")), now));
        parked(group.join(join_request("", Some("m2")), now));
        group.tick(now + DELAY);
        let joined = joins(&mut group);
        let first = joined.values().find(|answer| answer.member_id.starts_with("m1")).unwrap().clone();
        let second = joined.values().find(|answer| answer.member_id.starts_with("m2")).unwrap().clone();
        let assignments = vec![
            (first.member_id.clone(), Bytes::from_static(b"P1")),
            (second.member_id.clone(), Bytes::from_static(b"P2")),
        ];
        let leader = if first.leader == first.member_id { &first } else { &second };
        let instance = if leader.member_id.starts_with("m1") { "m1" } else { "m2" };
        parked(group.sync(&leader.member_id, Some(instance), 1, assignments, now));
        group.persisted(1, Ok(()), now);
        assert_eq!(group.state, State::Stable);
        assert_eq!(syncs(&mut group).len(), 1, "the leader's sync was answered");
        // m2 restarts: a new member id for the same instance, same generation.
        let back = now_answer(group.join(join_request("", Some("m2")), now));
        assert_eq!(back.error, None);
        assert_eq!(back.generation, 1, "no rebalance");
        assert_eq!(group.state, State::Stable);
        assert_ne!(back.member_id, second.member_id);
        let answer = now_answer(group.sync(&back.member_id, Some("m2"), 1, vec![], now));
        assert_eq!(answer.assignment, Bytes::from_static(b"P2"));
        // The old incarnation is fenced.
        assert_eq!(group.heartbeat(&second.member_id, Some("m2"), 1, now), Err(ResponseError::FencedInstanceId));
    }

    #[test]
    fn a_group_of_another_protocol_type_is_refused() {
        let now = Instant::now();
        let (mut group, _, _) = stable_group_of_two(now);
        let mut other = join_request("", None);
        other.protocol_type = "connect".into();
        assert_eq!(now_answer(group.join(other, now)).error, Some(ResponseError::InconsistentGroupProtocol));
    }
}
