//! `keelctl wal status`: each WAL node as the controller records it, and as
//! it answers for itself (logs held, disk used).

use std::time::Duration;

use clap::Subcommand;
use keel_controller_client::{MetadataClient, WalLogState};
use keel_proto::wal as pb;
use serde::Serialize;

use super::print_json;

#[derive(Debug, Subcommand)]
pub(super) enum WalCommand {
    /// Every WAL node: zone, address, state, the logs whose ensemble holds
    /// it (open and sealed), and what the node itself reports.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct WalNodeView {
    id: u32,
    zone: String,
    address: String,
    state: String,
    /// Logs whose ensemble lists this node, by state in the metadata.
    open_logs: usize,
    sealed_logs: usize,
    /// What the node answered, or why it did not.
    reachable: bool,
    logs_held: Option<usize>,
    disk_bytes: Option<u64>,
    /// False when the node answers under another incarnation (a wiped disk).
    same_incarnation: Option<bool>,
    error: Option<String>,
}

pub(super) async fn run(client: &MetadataClient, command: WalCommand) -> anyhow::Result<()> {
    let WalCommand::Status { json } = command;
    let image = client.read_image().await?;
    let mut views = Vec::new();
    for node in image.wal_nodes.values() {
        let member = |log: &&keel_controller_client::WalLog| log.ensemble.iter().any(|m| m.node == node.id);
        let logs: Vec<_> = image.wal_logs.values().filter(member).collect();
        let sealed = logs.iter().filter(|log| matches!(log.state, WalLogState::Sealed { .. })).count();
        let mut view = WalNodeView {
            id: node.id.0,
            zone: node.zone.clone(),
            address: node.internal_addr.clone(),
            state: format!("{:?}", node.state).to_lowercase(),
            open_logs: logs.len() - sealed,
            sealed_logs: sealed,
            reachable: false,
            logs_held: None,
            disk_bytes: None,
            same_incarnation: None,
            error: None,
        };
        match node_status(&node.internal_addr).await {
            Ok(status) => {
                view.reachable = true;
                view.logs_held = Some(status.logs.len());
                view.disk_bytes = Some(status.disk_bytes);
                view.same_incarnation = Some(status.incarnation == node.incarnation);
            }
            Err(error) => view.error = Some(format!("{error:#}")),
        }
        views.push(view);
    }
    if json {
        return print_json(&views);
    }
    println!(
        "{:<4} {:<6} {:<22} {:<8} {:>5} {:>7} {:>5} {:>12}  NOTE",
        "ID", "ZONE", "ADDRESS", "STATE", "OPEN", "SEALED", "HELD", "DISK"
    );
    for v in &views {
        let held = v.logs_held.map_or("-".to_owned(), |n| n.to_string());
        let disk = v.disk_bytes.map_or("-".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64));
        let note = match (&v.error, v.same_incarnation) {
            (Some(error), _) => format!("unreachable: {error}"),
            (None, Some(false)) => "answers as another incarnation (wiped disk): a new node".to_owned(),
            _ => String::new(),
        };
        println!(
            "{:<4} {:<6} {:<22} {:<8} {:>5} {:>7} {:>5} {:>12}  {note}",
            v.id, v.zone, v.address, v.state, v.open_logs, v.sealed_logs, held, disk
        );
    }
    Ok(())
}

async fn node_status(addr: &str) -> anyhow::Result<pb::StatusReply> {
    let endpoint = keel_proto::transport::endpoint(addr)?.timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await?;
    let mut client = pb::wal_client::WalClient::new(keel_proto::auth::channel(channel));
    let reply = client.status(pb::StatusRequest {}).await.map_err(|status| anyhow::anyhow!("{}", status.message()))?;
    Ok(reply.into_inner())
}
