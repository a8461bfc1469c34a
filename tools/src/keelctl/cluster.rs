//! `keelctl cluster status`.

use std::collections::BTreeMap;

use clap::Subcommand;
use keel_controller_client::{pb, MetadataClient};
use serde::Serialize;

use super::controller::ControllerView;
use super::print_json;

#[derive(Debug, Subcommand)]
pub(super) enum ClusterCommand {
    /// Controllers with leader and term, registered nodes per zone, lease state.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// The JSON shape of `keelctl cluster status --json`.
#[derive(Debug, Serialize)]
struct StatusView {
    cluster_id: String,
    leader_controller_id: u32,
    term: u64,
    metadata_version: u64,
    topic_count: u32,
    controllers: Vec<ControllerView>,
    /// Registered brokers and WAL nodes, by zone.
    zones: BTreeMap<String, Vec<NodeView>>,
}

#[derive(Debug, Serialize)]
struct NodeView {
    kind: &'static str,
    node_id: u32,
    address: String,
    epoch: u64,
    state: String,
    lease_remaining_ms: Option<u64>,
    /// Brokers: partitions led and bytes/s in and out (latest load reports).
    partitions_led: Option<u32>,
    bytes_in_per_sec: Option<f64>,
    bytes_out_per_sec: Option<f64>,
}

pub(super) async fn run(client: &MetadataClient, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status { json } = command;
    let status = client.cluster_status().await?;
    let view = StatusView {
        cluster_id: status.cluster_id.clone(),
        leader_controller_id: status.leader_controller_id,
        term: status.term,
        metadata_version: status.version,
        topic_count: status.topic_count,
        controllers: status.controllers.iter().map(ControllerView::from).collect(),
        zones: zones(&status.nodes),
    };
    if json {
        return print_json(&view);
    }
    println!(
        "cluster {}  leader c{}  term {}  metadata version {}  topics {}",
        view.cluster_id, view.leader_controller_id, view.term, view.metadata_version, view.topic_count
    );
    println!();
    super::controller::print_table(&view.controllers, Some(view.leader_controller_id));
    println!();
    if view.zones.is_empty() {
        println!("no brokers or WAL nodes registered");
    }
    for (zone, nodes) in &view.zones {
        println!("zone {zone}");
        println!(
            "  {:<7} {:>5}  {:<22} {:>8}  {:<9} {:>7}  {:>10} {:>10} {:>10}",
            "KIND", "ID", "ADDRESS", "EPOCH", "STATE", "LEASE", "PARTITIONS", "IN/S", "OUT/S"
        );
        for node in nodes {
            let lease = node.lease_remaining_ms.map_or("-".to_owned(), |ms| format!("{ms}ms"));
            let led = node.partitions_led.map_or("-".to_owned(), |count| count.to_string());
            let rate = |rate: Option<f64>| rate.map_or("-".to_owned(), human_rate);
            println!(
                "  {:<7} {:>5}  {:<22} {:>8}  {:<9} {:>7}  {:>10} {:>10} {:>10}",
                node.kind,
                node.node_id,
                node.address,
                node.epoch,
                node.state,
                lease,
                led,
                rate(node.bytes_in_per_sec),
                rate(node.bytes_out_per_sec)
            );
        }
    }
    Ok(())
}

/// Bytes per second in B, KB, MB or GB.
fn human_rate(rate: f64) -> String {
    match rate {
        r if r >= 1e9 => format!("{:.1}GB", r / 1e9),
        r if r >= 1e6 => format!("{:.1}MB", r / 1e6),
        r if r >= 1e3 => format!("{:.1}KB", r / 1e3),
        r => format!("{r:.0}B"),
    }
}

fn zones(nodes: &[pb::NodeInfo]) -> BTreeMap<String, Vec<NodeView>> {
    let mut zones: BTreeMap<String, Vec<NodeView>> = BTreeMap::new();
    for node in nodes {
        let kind = match pb::NodeKind::try_from(node.kind) {
            Ok(pb::NodeKind::Broker) => "broker",
            Ok(pb::NodeKind::Wal) => "wal",
            _ => "unknown",
        };
        zones.entry(node.zone.clone()).or_default().push(NodeView {
            kind,
            node_id: node.node_id,
            address: node.internal_addr.clone(),
            epoch: node.epoch,
            state: node.state.clone(),
            lease_remaining_ms: node.lease_remaining_ms,
            partitions_led: (kind == "broker").then_some(node.partitions_led),
            bytes_in_per_sec: (kind == "broker").then_some(node.bytes_in_per_sec),
            bytes_out_per_sec: (kind == "broker").then_some(node.bytes_out_per_sec),
        });
    }
    zones
}
