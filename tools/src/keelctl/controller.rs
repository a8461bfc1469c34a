//! `keelctl controller status|promote|remove`.

use clap::Subcommand;
use keel_controller_client::{pb, MetadataClient};
use serde::Serialize;

use super::print_json;

#[derive(Debug, Subcommand)]
pub(super) enum ControllerCommand {
    /// Each controller's own view: role, term, log, snapshot.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Makes a learner (a controller that joined with an empty data directory) a voter,
    /// replacing its former incarnation.
    Promote { controller_id: u32 },
    /// Removes a controller (every incarnation of it) from the quorum.
    Remove { controller_id: u32 },
}

/// A membership entry as `keelctl` shows it.
#[derive(Debug, Serialize)]
pub(super) struct ControllerView {
    controller_id: u32,
    raft_id: String,
    address: String,
    role: &'static str,
    matched_index: Option<u64>,
}

impl From<&pb::ControllerInfo> for ControllerView {
    fn from(info: &pb::ControllerInfo) -> ControllerView {
        ControllerView {
            controller_id: info.controller_id,
            raft_id: format!("{:016x}", info.raft_id),
            address: info.addr.clone(),
            role: if info.voter { "voter" } else { "learner" },
            matched_index: info.matched_index,
        }
    }
}

pub(super) fn print_table(controllers: &[ControllerView], leader: Option<u32>) {
    println!("{:<11} {:<17} {:<22} {:<8} MATCHED", "CONTROLLER", "RAFT ID", "ADDRESS", "ROLE");
    for c in controllers {
        let id = format!(
            "c{}{}",
            c.controller_id,
            if leader == Some(c.controller_id) && c.role == "voter" { " *" } else { "" }
        );
        let matched = c.matched_index.map_or("-".to_owned(), |index| index.to_string());
        println!("{:<11} {:<17} {:<22} {:<8} {}", id, c.raft_id, c.address, c.role, matched);
    }
}

#[derive(Debug, Serialize)]
struct NodeStatusView {
    address: String,
    reachable: bool,
    controller_id: Option<u32>,
    role: Option<String>,
    term: Option<u64>,
    leader_controller_id: Option<u32>,
    last_log_index: Option<u64>,
    last_applied_index: Option<u64>,
    snapshot_index: Option<u64>,
    purged_index: Option<u64>,
    log_entry_count: Option<u64>,
}

pub(super) async fn run(client: &MetadataClient, command: ControllerCommand) -> anyhow::Result<()> {
    match command {
        ControllerCommand::Status { json } => status(client, json).await,
        ControllerCommand::Promote { controller_id } => {
            let request = pb::ControllerRequest { controller_id };
            let reply = client.call(|mut c| async move { c.promote_controller(request).await }).await?;
            println!("promoted controller c{controller_id}");
            print_membership(&reply);
            Ok(())
        }
        ControllerCommand::Remove { controller_id } => {
            let request = pb::ControllerRequest { controller_id };
            let reply = client.call(|mut c| async move { c.remove_controller(request).await }).await?;
            println!("removed controller c{controller_id}");
            print_membership(&reply);
            Ok(())
        }
    }
}

fn print_membership(reply: &pb::MembershipReply) {
    let controllers: Vec<ControllerView> = reply.controllers.iter().map(ControllerView::from).collect();
    print_table(&controllers, None);
}

async fn status(client: &MetadataClient, json: bool) -> anyhow::Result<()> {
    let mut views = Vec::new();
    for (index, address) in client.endpoints().iter().enumerate() {
        let mut request = tonic::Request::new(pb::NodeStatusRequest {});
        request.set_timeout(std::time::Duration::from_secs(2));
        let reply = client.controller(index).node_status(request).await.ok().map(|r| r.into_inner());
        views.push(NodeStatusView {
            address: address.clone(),
            reachable: reply.is_some(),
            controller_id: reply.as_ref().map(|r| r.controller_id),
            role: reply.as_ref().map(|r| r.role.clone()),
            term: reply.as_ref().map(|r| r.term),
            leader_controller_id: reply.as_ref().and_then(|r| r.leader_controller_id),
            last_log_index: reply.as_ref().and_then(|r| r.last_log_index),
            last_applied_index: reply.as_ref().and_then(|r| r.last_applied_index),
            snapshot_index: reply.as_ref().and_then(|r| r.snapshot_index),
            purged_index: reply.as_ref().and_then(|r| r.purged_index),
            log_entry_count: reply.as_ref().map(|r| r.log_entry_count),
        });
    }
    if json {
        return print_json(&views);
    }
    let show = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    println!(
        "{:<22} {:<6} {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "ADDRESS", "ID", "ROLE", "TERM", "LEADER", "LAST LOG", "APPLIED", "SNAPSHOT", "ENTRIES"
    );
    for v in &views {
        if !v.reachable {
            println!("{:<22} unreachable", v.address);
            continue;
        }
        println!(
            "{:<22} {:<6} {:<10} {:>6} {:>7} {:>9} {:>9} {:>9} {:>8}",
            v.address,
            v.controller_id.map_or("-".into(), |id| format!("c{id}")),
            v.role.as_deref().unwrap_or("-"),
            show(v.term),
            v.leader_controller_id.map_or("-".into(), |id| format!("c{id}")),
            show(v.last_log_index),
            show(v.last_applied_index),
            show(v.snapshot_index),
            show(v.log_entry_count),
        );
    }
    Ok(())
}
