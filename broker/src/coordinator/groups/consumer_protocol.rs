//! KIP-848's ConsumerGroupHeartbeat at the coordinator: the group decides
//! (`keel_broker_core::groups::consumer`), and a change is written as one
//! record of the whole group before the heartbeat that made it is
//! answered, so a coordinator taking over knows what each member was told.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use kafka_protocol::error::ResponseError;
use keel_broker_core::groups::consumer::{ConsumerGroup, Heartbeat, HeartbeatAnswer};
use keel_broker_core::groups::{is_internal, Kind};

use super::Groups;

impl Groups {
    /// One heartbeat of a consumer-protocol member; the error comes with a
    /// message for the client.
    pub async fn consumer_heartbeat(
        self: &Arc<Self>,
        group_id: &str,
        heartbeat: Heartbeat,
    ) -> Result<HeartbeatAnswer, (ResponseError, String)> {
        let image = self.runtime.cluster().image();
        let topics: BTreeMap<String, (uuid::Uuid, i32)> = image
            .topics
            .values()
            .filter(|topic| !is_internal(&topic.name))
            .map(|topic| (topic.name.clone(), (topic.id.0, topic.partitions.len() as i32)))
            .collect();
        let settings = &self.settings;
        let (answer, written) = {
            let mut locked = self.lock(group_id).map_err(|error| (error, String::new()))?;
            let partition = locked.partition;
            let group = locked.state().group_or_new(group_id, settings);
            if let Kind::Classic(classic) = &group.kind {
                if !classic.is_empty() {
                    return Err((
                        ResponseError::GroupIdNotFound,
                        "the group is a classic group with members; it cannot use the consumer protocol".to_owned(),
                    ));
                }
                group.kind = Kind::Consumer(ConsumerGroup::new(group_id, settings.consumer_session_timeout));
            }
            let Kind::Consumer(consumer) = &mut group.kind else { unreachable!("converted above") };
            let answer = consumer.heartbeat(heartbeat, &topics, Instant::now()).map_err(|e| (e, String::new()))?;
            let now_ms = keel_broker_core::clock::now_ms();
            let written = group.dirty_record(group_id, now_ms).map(|(entry, _)| self.append(partition, vec![entry]));
            (answer, written)
        };
        let Some(written) = written else { return Ok(answer) };
        match self.written(written).await {
            Ok(()) => Ok(answer),
            Err(error) => {
                if let Ok(mut locked) = self.lock(group_id) {
                    if let Some(group) = locked.state().groups.get_mut(group_id) {
                        group.written(None, Err(error), Instant::now());
                        if let Kind::Consumer(consumer) = &mut group.kind {
                            consumer.forget_told(&answer.member_id);
                        }
                    }
                }
                Err((error, "the group's new state could not be written; retry".to_owned()))
            }
        }
    }
}
