//! The balancer (DESIGN §5): spreads partition leadership over the brokers
//! by measured load. I/O-free: the controller leader calls `moves` with the
//! image and the latest load reports, and proposes what it returns.
//!
//! A partition weighs its reported bytes/s in plus out, plus `IDLE_WEIGHT`,
//! so idle partitions are spread by count. While the most and least loaded
//! brokers (active, not draining) differ by more than the threshold, the
//! heaviest partition of the most loaded one that weighs at most half the
//! difference moves to the least loaded one; this never overshoots, so
//! leadership does not swing back and forth. Nothing moves while any
//! partition is leaderless or already moving.

use std::collections::{BTreeMap, HashMap};

use keel_controller_client::{Command, Image, NodeId, StreamId};

/// What an idle partition weighs, in bytes/s.
pub(crate) const IDLE_WEIGHT: f64 = 1024.0;
/// Brokers within this fraction of the mean load (or one idle partition) are balanced.
const TOLERANCE: f64 = 0.2;

/// Up to `max_moves` partition moves (`MovePartition`) that even out the load.
pub(crate) fn moves(image: &Image, loads: &HashMap<StreamId, f64>, max_moves: usize) -> Vec<Command> {
    if image.partitions().any(|(_, _, p)| p.leader.is_none() || p.moving_to.is_some()) {
        return Vec::new();
    }
    let mut brokers: BTreeMap<NodeId, f64> = image.broker_load().into_keys().map(|id| (id, 0.0)).collect();
    if brokers.len() < 2 {
        return Vec::new();
    }
    let weight = |stream: &StreamId| IDLE_WEIGHT + loads.get(stream).copied().unwrap_or(0.0);
    let mut candidates: Vec<(NodeId, f64, Command)> = Vec::new();
    for (topic, index, partition) in image.partitions() {
        let Some(leader) = partition.leader else { continue };
        let Some(load) = brokers.get_mut(&leader) else { continue };
        *load += weight(&partition.stream_id);
        let command = Command::MovePartition {
            topic: topic.id,
            partition: index,
            leader_epoch: partition.leader_epoch,
            to: leader, // replaced by the chosen target
        };
        candidates.push((leader, weight(&partition.stream_id), command));
    }
    let mean = brokers.values().sum::<f64>() / brokers.len() as f64;
    let mut chosen = Vec::new();
    while chosen.len() < max_moves {
        let (&hot, &most) = brokers.iter().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0))).expect("two brokers");
        let (&cold, &least) = brokers.iter().min_by(|a, b| a.1.total_cmp(b.1).then(a.0.cmp(b.0))).expect("two brokers");
        let spread = most - least;
        if spread <= (TOLERANCE * mean).max(IDLE_WEIGHT) {
            break;
        }
        let best = candidates
            .iter()
            .enumerate()
            .filter(|(_, (leader, weight, _))| *leader == hot && *weight <= spread / 2.0)
            .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1))
            .map(|(at, _)| at);
        let Some(at) = best else { break };
        let (_, weight, mut command) = candidates.swap_remove(at);
        if let Command::MovePartition { to, .. } = &mut command {
            *to = cold;
        }
        *brokers.get_mut(&hot).expect("a broker") -= weight;
        *brokers.get_mut(&cold).expect("a broker") += weight;
        chosen.push(command);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use keel_controller_client::{Command, Image, NodeKind, Outcome, Version};

    use super::*;

    fn image_with(brokers: u32, partitions: usize) -> Image {
        let mut image = Image::default();
        let mut version = 0;
        for id in 1..=brokers {
            version += 1;
            let register = Command::RegisterNode {
                kind: NodeKind::Broker,
                id: NodeId(id),
                zone: "a".into(),
                internal_addr: "127.0.0.1:1".into(),
                kafka_listeners: vec![],
                incarnation: "i".into(),
            };
            assert!(matches!(image.apply(Version(version), &register), Ok(Outcome::Registered { .. })));
        }
        let create = Command::CreateTopic {
            id: keel_controller_client::TopicId(uuid::Uuid::new_v4()),
            name: "orders".into(),
            configs: BTreeMap::new(),
            owner: String::new(),
            description: String::new(),
            leaders: vec![Some(NodeId(1)); partitions],
        };
        image.apply(Version(version + 1), &create).unwrap();
        image
    }

    fn targets(moves: &[Command]) -> Vec<u32> {
        moves.iter().map(|m| if let Command::MovePartition { to, .. } = m { to.0 } else { 0 }).collect()
    }

    #[test]
    fn idle_partitions_are_spread_by_count() {
        let image = image_with(3, 12);
        let moves = moves(&image, &HashMap::new(), 100);
        let mut to = targets(&moves);
        to.sort();
        assert_eq!(to, vec![2, 2, 2, 2, 3, 3, 3, 3], "12 idle partitions end 4/4/4");
    }

    #[test]
    fn a_hot_partition_counts_more_than_idle_ones() {
        let image = image_with(2, 4);
        let streams: Vec<StreamId> = image.topics["orders"].partitions.iter().map(|p| p.stream_id).collect();
        let loads = HashMap::from([(streams[0], 10e6)]);
        let moves = moves(&image, &loads, 100);
        // Broker 1 keeps the hot one; the three idle ones go to broker 2.
        assert_eq!(targets(&moves), vec![2, 2, 2]);
        assert!(moves.iter().all(|m| !matches!(m, Command::MovePartition { partition: 0, .. })));
    }

    #[test]
    fn a_balanced_cluster_or_one_with_a_partition_in_motion_moves_nothing() {
        let mut image = image_with(2, 4);
        for partition in &mut image.topics.get_mut("orders").unwrap().partitions[2..] {
            partition.leader = Some(NodeId(2));
        }
        assert!(moves(&image, &HashMap::new(), 100).is_empty());
        let partitions = &mut image.topics.get_mut("orders").unwrap().partitions;
        partitions[2].leader = Some(NodeId(1));
        partitions[3].leader = Some(NodeId(1));
        partitions[3].moving_to = Some(NodeId(2));
        assert!(moves(&image, &HashMap::new(), 100).is_empty());
    }
}
