//! Three zones on one machine: per zone, a network namespace for its
//! controller and WAL node and one for its broker (so that a fault can hit
//! the broker alone), and a router namespace between them, each linked to
//! the router by a veth pair, with addresses from 198.18.0.0/15 (reserved
//! for network tests), so they exist only inside these namespaces. At the
//! router, nftables counts the bytes forwarded between each pair of zones
//! and drops what a fault says.
//!
//! ```text
//!   zone a        198.18.1.2  ──veth── 198.18.1.1  z-a ┐
//!   zone a broker 198.18.11.2 ──veth── 198.18.11.1 k-a │
//!   zone b        198.18.2.2  ──veth── 198.18.2.1  z-b ├ router (forwards; nft: faults, counters)
//!   ...                                                │
//!   zone c broker 198.18.13.2 ──veth── 198.18.13.1 k-c ┘
//! ```
//!
//! Needs root, iproute2 and nftables. `destroy` kills every process left in
//! the namespaces (only this run's: they are its own) and deletes them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::Context;

pub const ZONES: [&str; 3] = ["a", "b", "c"];

/// The namespaces of one run.
#[derive(Clone, Debug)]
pub struct Net {
    pub router: String,
    /// Zone name -> the namespace of its controller and WAL node (and its clients).
    pub zones: BTreeMap<String, String>,
    /// Zone name -> the namespace of its broker.
    pub brokers: BTreeMap<String, String>,
}

/// The address of a zone's controller and WAL node (the router's side is .1).
pub fn zone_ip(zone: &str) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, zone_index(zone) + 1, 2)
}

/// The address of a zone's broker.
pub fn broker_ip(zone: &str) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, zone_index(zone) + 11, 2)
}

/// The router's address on the link of the namespace at `ip`: its gateway.
pub fn gateway(ip: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, ip.octets()[2], 1)
}

fn zone_index(zone: &str) -> u8 {
    ZONES.iter().position(|z| *z == zone).unwrap_or(0) as u8
}

/// The router's interface towards a zone's namespace, and towards its broker's.
fn router_if(zone: &str) -> String {
    format!("z-{zone}")
}

fn broker_if(zone: &str) -> String {
    format!("k-{zone}")
}

/// Both router interfaces of a zone, as an nftables set.
fn zone_ifs(zone: &str) -> String {
    format!("{{ \"{}\", \"{}\" }}", router_if(zone), broker_if(zone))
}

/// Runs a command, failing with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program} (is it installed?)"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether this process may make namespaces (root), and the tools exist.
pub fn available() -> anyhow::Result<()> {
    if run("id", &["-u"]).map(|uid| uid.trim() != "0").unwrap_or(true) {
        anyhow::bail!("network namespaces need root");
    }
    for tool in ["ip", "nft"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            anyhow::bail!("{tool} is not installed (scripts/setup installs iproute2 and nftables)");
        }
    }
    Ok(())
}

impl Net {
    /// Makes the namespaces of run `id` (a few characters), linked and
    /// routed, with the router's nftables table.
    pub fn create(id: &str) -> anyhow::Result<Net> {
        let net = Net {
            router: format!("kc{id}r"),
            zones: ZONES.iter().map(|z| (z.to_string(), format!("kc{id}{z}"))).collect(),
            brokers: ZONES.iter().map(|z| (z.to_string(), format!("kc{id}{z}k"))).collect(),
        };
        // Never touch another run's namespaces, even on a clash of ids.
        let existing = run("ip", &["netns", "list"])?;
        let taken = existing
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .any(|name| net.namespaces().any(|ns| ns == name));
        anyhow::ensure!(!taken, "namespaces of run {id} exist already");
        if let Err(error) = net.build() {
            net.destroy();
            return Err(error);
        }
        Ok(net)
    }

    fn build(&self) -> anyhow::Result<()> {
        run("ip", &["netns", "add", &self.router])?;
        run("ip", &["-n", &self.router, "link", "set", "lo", "up"])?;
        run("ip", &["netns", "exec", &self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let zones = self.zones.iter().map(|(zone, ns)| (ns, zone_ip(zone), router_if(zone)));
        let brokers = self.brokers.iter().map(|(zone, ns)| (ns, broker_ip(zone), broker_if(zone)));
        for (ns, ip, outside) in zones.chain(brokers) {
            let gateway = gateway(ip);
            run("ip", &["netns", "add", ns])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            run(
                "ip",
                &["link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", &outside, "netns", &self.router],
            )?;
            run("ip", &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", ns, "route", "add", "default", "via", &gateway.to_string()])?;
            run("ip", &["-n", &self.router, "addr", "add", &format!("{gateway}/24"), "dev", &outside])?;
            run("ip", &["-n", &self.router, "link", "set", &outside, "up"])?;
        }
        let mut script = String::from("table inet keel {\n");
        for (from, to) in self.pairs() {
            script += &format!("  counter {from}{to} {{}}\n");
        }
        script += "  chain faults {}\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    jump faults\n";
        for (from, to) in self.pairs() {
            script +=
                &format!("    iifname {} oifname {} counter name \"{from}{to}\"\n", zone_ifs(&from), zone_ifs(&to));
        }
        script += "  }\n}\n";
        self.nft(&script)
    }

    /// Every namespace of the run, the router's last.
    fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.zones.values().chain(self.brokers.values()).chain(std::iter::once(&self.router))
    }

    /// Every ordered pair of distinct zones.
    fn pairs(&self) -> Vec<(String, String)> {
        let zones: Vec<&String> = self.zones.keys().collect();
        zones
            .iter()
            .flat_map(|a| zones.iter().filter(move |b| a != *b).map(move |b| ((*a).clone(), (*b).clone())))
            .collect()
    }

    /// Runs an nft script in the router.
    fn nft(&self, script: &str) -> anyhow::Result<()> {
        let path = std::env::temp_dir().join(format!("{}-{}.nft", self.router, rand::random::<u32>()));
        std::fs::write(&path, script)?;
        let result = run("ip", &["netns", "exec", &self.router, "nft", "-f", &path.to_string_lossy()]);
        let _ = std::fs::remove_file(&path);
        result.map(|_| ())
    }

    /// Drops everything between `zone` and the other zones at the router.
    pub fn isolate(&self, zone: &str) -> anyhow::Result<()> {
        let ifs = zone_ifs(zone);
        self.nft(&format!(
            "add rule inet keel faults iifname {ifs} oifname != {ifs} drop\nadd rule inet keel faults iifname != {ifs} oifname {ifs} drop\n"
        ))
    }

    /// Drops what `from` sends to `to` (one way).
    pub fn cut(&self, from: &str, to: &str) -> anyhow::Result<()> {
        let (from, to) = (zone_ifs(from), zone_ifs(to));
        self.nft(&format!("add rule inet keel faults iifname {from} oifname {to} drop\n"))
    }

    /// Drops everything sent to `zone`'s broker, from anywhere; what it
    /// sends still arrives (it hears nothing, and is heard).
    pub fn deafen_broker(&self, zone: &str) -> anyhow::Result<()> {
        self.nft(&format!("add rule inet keel faults oifname \"{}\" drop\n", broker_if(zone)))
    }

    /// Removes every fault rule.
    pub fn heal(&self) -> anyhow::Result<()> {
        self.nft("flush chain inet keel faults\n")
    }

    /// Bytes forwarded from zone to zone so far.
    pub fn counters(&self) -> anyhow::Result<BTreeMap<(String, String), u64>> {
        let json =
            run("ip", &["netns", "exec", &self.router, "nft", "-j", "list", "counters", "table", "inet", "keel"])?;
        let value: serde_json::Value = serde_json::from_str(&json)?;
        let mut counters = BTreeMap::new();
        for item in value["nftables"].as_array().into_iter().flatten() {
            let counter = &item["counter"];
            let (Some(name), Some(bytes)) = (counter["name"].as_str(), counter["bytes"].as_u64()) else { continue };
            let (from, to) = name.split_at(1);
            counters.insert((from.to_owned(), to.to_owned()), bytes);
        }
        Ok(counters)
    }

    /// Kills every process still in the namespaces and deletes them.
    #[allow(clippy::disallowed_methods)]
    pub fn destroy(&self) {
        for ns in self.namespaces() {
            if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
                for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
}
