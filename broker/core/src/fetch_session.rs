//! Incremental fetch sessions (KIP-227): a consumer that fetches many
//! partitions sends the whole list once, then only what changed. The broker
//! remembers each session's partitions and answers an incremental fetch with
//! only the partitions that have news (records, a moved high watermark or
//! log start, an error).
//!
//! The rules, as Kafka's `FetchSession`:
//! - epoch -1: a sessionless full fetch; a named session is closed.
//! - epoch 0: a full fetch that opens a new session (closing a named one).
//! - epoch > 0: an incremental fetch of session `id`, whose next epoch it
//!   must be; unknown id -> FETCH_SESSION_ID_NOT_FOUND, wrong epoch ->
//!   INVALID_FETCH_SESSION_EPOCH. Listed partitions are added or updated,
//!   forgotten ones removed.
//!
//! Sessions live in memory only, bounded in number; the least recently used
//! one is evicted to make room, and its client starts a new one on its next
//! fetch (FETCH_SESSION_ID_NOT_FOUND is retriable for every client).

use std::collections::HashMap;
use std::sync::Mutex;

use kafka_protocol::error::ResponseError;
use keel_controller_client::Offset;
use uuid::Uuid;

/// Sessions kept at once (Kafka's `max.incremental.fetch.session.cache.slots`).
pub const SESSION_SLOTS: usize = 1000;

/// A topic as a fetch names it: by name before Fetch v13, by id from v13 on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicKey {
    pub name: String,
    pub id: Uuid,
}

/// One partition as a fetch asks for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WantedPartition {
    pub partition: i32,
    pub fetch_offset: Offset,
    /// The leader epoch the client knows (-1: any).
    pub current_leader_epoch: i32,
    pub partition_max_bytes: i32,
}

/// The partitions of one topic a fetch asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedTopic {
    pub key: TopicKey,
    pub partitions: Vec<WantedPartition>,
}

/// Partitions an incremental fetch removes from its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgotten {
    pub key: TopicKey,
    pub partitions: Vec<i32>,
}

/// One partition of a session: what the client asked last, and what it was
/// last told.
#[derive(Clone, Debug)]
struct Cached {
    request: WantedPartition,
    high_watermark: Offset,
    log_start: Offset,
}

#[derive(Debug)]
struct Session {
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    /// In the order the client added them.
    partitions: Vec<(TopicKey, Cached)>,
    /// Where each (topic, partition) is in `partitions`: a fetch of many
    /// partitions costs time in proportion to them, not to their square.
    index: HashMap<(TopicKey, i32), usize>,
    /// When it was last used, on the cache's own clock.
    last_used: u64,
}

impl Session {
    fn new(now: u64) -> Session {
        Session { next_epoch: 1, partitions: Vec::new(), index: HashMap::new(), last_used: now }
    }
}

/// How one fetch relates to the sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Context {
    /// A full fetch with no session (epoch -1, or no room).
    Sessionless,
    /// A full fetch that opened session `id`.
    Opened { id: i32 },
    /// An incremental fetch on session `id`: answer only partitions with news.
    Incremental { id: i32 },
}

impl Context {
    /// The session id the answer carries.
    pub fn id(&self) -> i32 {
        match self {
            Context::Sessionless => 0,
            Context::Opened { id } | Context::Incremental { id } => *id,
        }
    }
}

/// What a partition's answer said, for deciding whether an incremental
/// answer includes it.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub bytes: usize,
    pub high_watermark: Offset,
    pub log_start: Offset,
    pub error: bool,
}

#[derive(Debug, Default)]
pub struct FetchSessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<i32, Session>,
    /// Counts uses, to find the least recently used session.
    clock: u64,
}

impl FetchSessions {
    /// Resolves a fetch against the sessions: the context, and the partitions
    /// to read (for an incremental fetch, every partition of the session
    /// after the request's changes).
    pub fn begin(
        &self,
        session_id: i32,
        epoch: i32,
        topics: &[WantedTopic],
        forgotten: &[Forgotten],
    ) -> Result<(Context, Vec<WantedTopic>), ResponseError> {
        let mut inner = self.inner.lock().expect("fetch sessions lock");
        inner.clock += 1;
        let now = inner.clock;
        let sessions = &mut inner.sessions;
        match epoch {
            -1 => {
                sessions.remove(&session_id);
                Ok((Context::Sessionless, topics.to_vec()))
            }
            0 => {
                sessions.remove(&session_id);
                if sessions.len() >= SESSION_SLOTS {
                    let oldest = sessions.iter().min_by_key(|(_, session)| session.last_used).map(|(id, _)| *id);
                    if let Some(oldest) = oldest {
                        sessions.remove(&oldest);
                    }
                }
                let id = loop {
                    let id = rand::random::<i32>();
                    if id > 0 && !sessions.contains_key(&id) {
                        break id;
                    }
                };
                let mut session = Session::new(now);
                update(&mut session, topics, &[]);
                sessions.insert(id, session);
                Ok((Context::Opened { id }, topics.to_vec()))
            }
            epoch if epoch > 0 => {
                let session = sessions.get_mut(&session_id).ok_or(ResponseError::FetchSessionIdNotFound)?;
                if session.next_epoch != epoch {
                    return Err(ResponseError::InvalidFetchSessionEpoch);
                }
                session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
                session.last_used = now;
                update(session, topics, forgotten);
                Ok((Context::Incremental { id: session_id }, wanted(session)))
            }
            _ => Err(ResponseError::InvalidFetchSessionEpoch),
        }
    }

    /// Records what a session's partitions were told, and says for each
    /// (topic, partition) whether an incremental answer must include it.
    pub fn finish(&self, context: &Context, answered: &[(TopicKey, i32, Answered)]) -> Vec<bool> {
        let id = match context {
            Context::Sessionless => return vec![true; answered.len()],
            Context::Opened { id } | Context::Incremental { id } => *id,
        };
        let incremental = matches!(context, Context::Incremental { .. });
        let mut inner = self.inner.lock().expect("fetch sessions lock");
        let Some(session) = inner.sessions.get_mut(&id) else {
            // Evicted meanwhile: answer everything; the next fetch starts over.
            return vec![true; answered.len()];
        };
        answered
            .iter()
            .map(|(topic, partition, answer)| {
                let Some(at) = session.index.get(&(topic.clone(), *partition)) else { return true };
                let (_, cached) = &mut session.partitions[*at];
                let news = answer.bytes > 0
                    || answer.error
                    || answer.high_watermark != cached.high_watermark
                    || answer.log_start != cached.log_start;
                // After an error the partition is sent again once it clears.
                cached.high_watermark = if answer.error { Offset(-1) } else { answer.high_watermark };
                cached.log_start = answer.log_start;
                !incremental || news
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("fetch sessions lock").sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Adds or updates the listed partitions and removes the forgotten ones.
fn update(session: &mut Session, topics: &[WantedTopic], forgotten: &[Forgotten]) {
    let gone: std::collections::HashSet<(&TopicKey, i32)> =
        forgotten.iter().flat_map(|topic| topic.partitions.iter().map(move |p| (&topic.key, *p))).collect();
    if !gone.is_empty() {
        session.partitions.retain(|(key, cached)| !gone.contains(&(key, cached.request.partition)));
        session.index = session
            .partitions
            .iter()
            .enumerate()
            .map(|(at, (key, cached))| ((key.clone(), cached.request.partition), at))
            .collect();
    }
    for topic in topics {
        for partition in &topic.partitions {
            let slot = (topic.key.clone(), partition.partition);
            match session.index.get(&slot) {
                Some(at) => session.partitions[*at].1.request = partition.clone(),
                None => {
                    session.index.insert(slot, session.partitions.len());
                    session.partitions.push((
                        topic.key.clone(),
                        Cached { request: partition.clone(), high_watermark: Offset(-1), log_start: Offset(-1) },
                    ));
                }
            }
        }
    }
}

/// Every partition of the session, grouped by topic in the session's order.
fn wanted(session: &Session) -> Vec<WantedTopic> {
    let mut topics: Vec<WantedTopic> = Vec::new();
    let mut positions: HashMap<&TopicKey, usize> = HashMap::new();
    for (key, cached) in &session.partitions {
        let at = *positions.entry(key).or_insert_with(|| {
            topics.push(WantedTopic { key: key.clone(), partitions: Vec::new() });
            topics.len() - 1
        });
        topics[at].partitions.push(cached.request.clone());
    }
    topics
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: &[(i32, i64)]) -> WantedTopic {
        let partitions = partitions
            .iter()
            .map(|(partition, fetch_offset)| WantedPartition {
                partition: *partition,
                fetch_offset: Offset(*fetch_offset),
                ..Default::default()
            })
            .collect();
        WantedTopic { key: key(name), partitions }
    }

    fn key(name: &str) -> TopicKey {
        TopicKey { name: name.into(), id: Uuid::nil() }
    }

    fn answered(bytes: usize, high_watermark: i64) -> Answered {
        Answered { bytes, high_watermark: Offset(high_watermark), log_start: Offset(0), error: false }
    }

    #[test]
    fn a_session_answers_only_partitions_with_news_and_keeps_unlisted_ones() {
        let sessions = FetchSessions::default();
        let (context, wanted_now) = sessions.begin(0, 0, &[topic("t", &[(0, 0), (1, 0)])], &[]).unwrap();
        let Context::Opened { id } = context else { panic!("a full fetch at epoch 0 opens a session") };
        assert_eq!(wanted_now.len(), 1);
        let all = sessions.finish(&context, &[(key("t"), 0, answered(10, 5)), (key("t"), 1, answered(0, 0))]);
        assert_eq!(all, vec![true, true], "a full fetch answers every partition");

        // Incremental: only partition 0 moved; partition 1 is still read.
        let (context, wanted_now) = sessions.begin(id, 1, &[topic("t", &[(0, 5)])], &[]).unwrap();
        assert_eq!(context, Context::Incremental { id });
        let offsets: Vec<(i32, i64)> =
            wanted_now[0].partitions.iter().map(|p| (p.partition, p.fetch_offset.0)).collect();
        assert_eq!(offsets, vec![(0, 5), (1, 0)]);
        let news = sessions.finish(&context, &[(key("t"), 0, answered(0, 5)), (key("t"), 1, answered(0, 3))]);
        assert_eq!(news, vec![false, true], "only the partition whose high watermark moved");

        // Forgetting a partition removes it from the session.
        let forgotten = Forgotten { key: key("t"), partitions: vec![1] };
        let (_, wanted_now) = sessions.begin(id, 2, &[], &[forgotten]).unwrap();
        assert_eq!(wanted_now[0].partitions.len(), 1);
    }

    #[test]
    fn a_wrong_epoch_or_unknown_session_is_refused_and_epoch_minus_one_closes() {
        let sessions = FetchSessions::default();
        let (context, _) = sessions.begin(0, 0, &[topic("t", &[(0, 0)])], &[]).unwrap();
        let id = context.id();
        assert_eq!(sessions.begin(id, 5, &[], &[]).unwrap_err(), ResponseError::InvalidFetchSessionEpoch);
        assert_eq!(sessions.begin(id + 1, 1, &[], &[]).unwrap_err(), ResponseError::FetchSessionIdNotFound);
        assert!(sessions.begin(id, 1, &[], &[]).is_ok(), "a refused fetch does not use up the epoch");
        let (context, _) = sessions.begin(id, -1, &[topic("t", &[(0, 0)])], &[]).unwrap();
        assert_eq!(context, Context::Sessionless);
        assert_eq!(sessions.begin(id, 2, &[], &[]).unwrap_err(), ResponseError::FetchSessionIdNotFound);
    }

    /// Issue 21: every partition of a fetch was looked up by a scan of the
    /// session, so a session of n partitions cost n² per fetch. Now indexed;
    /// this checks the index stays right through forgets and re-adds.
    #[test]
    fn a_large_session_keeps_its_partitions_in_order_through_forgets_and_adds() {
        let sessions = FetchSessions::default();
        let partitions: Vec<(i32, i64)> = (0..5_000).map(|p| (p, 0)).collect();
        let (context, _) = sessions.begin(0, 0, &[topic("a", &partitions), topic("b", &partitions)], &[]).unwrap();
        let id = context.id();
        let forgotten: Vec<i32> = (0..5_000).filter(|p| p % 2 == 0).collect();
        let forget = Forgotten { key: key("a"), partitions: forgotten };
        let moved = topic("b", &[(4_999, 7), (10_000, 3)]);
        let (context, wanted_now) = sessions.begin(id, 1, &[moved], &[forget]).unwrap();
        let names: Vec<&str> = wanted_now.iter().map(|t| t.key.name.as_str()).collect();
        assert_eq!(names, vec!["a", "b"]);
        let odd: Vec<i32> = wanted_now[0].partitions.iter().map(|p| p.partition).collect();
        assert_eq!(odd, (0..5_000).filter(|p| p % 2 == 1).collect::<Vec<_>>());
        let b = &wanted_now[1].partitions;
        assert_eq!(b.len(), 5_001);
        assert_eq!((b[4_999].partition, b[4_999].fetch_offset), (4_999, Offset(7)), "updated in place");
        assert_eq!((b[5_000].partition, b[5_000].fetch_offset), (10_000, Offset(3)), "added at the end");
        let news = sessions.finish(&context, &[(key("a"), 1, answered(1, 1)), (key("a"), 2, answered(1, 1))]);
        assert_eq!(news, vec![true, true], "a forgotten partition answered anyway is sent; a kept one with news too");
    }

    #[test]
    fn an_error_is_always_answered_and_the_partition_is_sent_again_once_it_clears() {
        let sessions = FetchSessions::default();
        let (context, _) = sessions.begin(0, 0, &[topic("t", &[(0, 0)])], &[]).unwrap();
        let id = context.id();
        sessions.finish(&context, &[(key("t"), 0, answered(0, 7))]);
        let (context, _) = sessions.begin(id, 1, &[], &[]).unwrap();
        let error = Answered { bytes: 0, high_watermark: Offset(-1), log_start: Offset(-1), error: true };
        assert_eq!(sessions.finish(&context, &[(key("t"), 0, error)]), vec![true]);
        let (context, _) = sessions.begin(id, 2, &[], &[]).unwrap();
        assert_eq!(sessions.finish(&context, &[(key("t"), 0, answered(0, 7))]), vec![true]);
    }

    #[test]
    fn the_least_recently_used_session_makes_room() {
        let sessions = FetchSessions::default();
        let first = sessions.begin(0, 0, &[], &[]).unwrap().0.id();
        for _ in 1..SESSION_SLOTS {
            sessions.begin(0, 0, &[], &[]).unwrap();
        }
        assert_eq!(sessions.len(), SESSION_SLOTS);
        sessions.begin(0, 0, &[], &[]).unwrap();
        assert_eq!(sessions.len(), SESSION_SLOTS);
        assert_eq!(sessions.begin(first, 1, &[], &[]).unwrap_err(), ResponseError::FetchSessionIdNotFound);
    }
}
