//! `keelctl broker drain`: hand a broker's partitions to the others.

use std::time::{Duration, Instant};

use clap::Subcommand;
use keel_controller_client::{pb, Image, MetadataClient, NodeId};

#[derive(Debug, Subcommand)]
pub(super) enum BrokerCommand {
    /// Marks a broker as draining: it gets no new partitions and hands the
    /// ones it leads to other brokers (no data is copied). It stays
    /// draining until it registers again (a restart).
    Drain {
        /// The broker's id.
        id: u32,
        /// Return once the drain is recorded, without waiting for it.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the broker to lead nothing.
        #[arg(long, default_value = "60s", value_parser = humantime_serde::re::humantime::parse_duration)]
        timeout: Duration,
    },
}

pub(super) async fn run(client: &MetadataClient, command: BrokerCommand) -> anyhow::Result<()> {
    let BrokerCommand::Drain { id, no_wait, timeout } = command;
    let before = partitions_led(&client.read_image().await?, id);
    client.drain_broker(pb::DrainBrokerRequest { broker: id, broker_epoch: 0 }).await?;
    println!("broker {id} is draining; it led {before} partitions");
    if no_wait {
        return Ok(());
    }
    let started = Instant::now();
    let mut last = before;
    loop {
        let left = partitions_led(&client.read_image().await?, id);
        if left == 0 {
            println!(
                "broker {id} leads no partition ({before} handed over in {:.1} s)",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if left != last {
            println!("  {left} partitions left");
            last = left;
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "broker {id} still leads {left} partitions after {timeout:?}; is it running? (`keelctl cluster status`)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many partitions broker `id` leads in `image`.
fn partitions_led(image: &Image, id: u32) -> usize {
    image.led_by(NodeId(id)).count()
}
