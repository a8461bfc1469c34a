//! Named Kafka listeners, as Kafka's `listeners`, `advertised.listeners` and
//! `listener.security.protocol.map`: each has a bind address, the address
//! clients are told, and a security protocol. The one at `listen` is named
//! `PLAINTEXT`; brokers reach one another there (it is registered first),
//! so it stays plaintext and belongs on a private network. Metadata answers a
//! client with the addresses of the listener it connected to.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use keel_controller_client::ScramMechanism;

/// The default listener's name: the one at `listen`, used between brokers.
pub const INTER_BROKER: &str = "PLAINTEXT";

/// A listener's security protocol, as Kafka's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    fn parse(name: &str) -> anyhow::Result<Protocol> {
        match name {
            "PLAINTEXT" => Ok(Protocol::Plaintext),
            "SSL" => Ok(Protocol::Ssl),
            "SASL_PLAINTEXT" => Ok(Protocol::SaslPlaintext),
            "SASL_SSL" => Ok(Protocol::SaslSsl),
            other => {
                anyhow::bail!("unknown security protocol {other:?}: use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Plaintext => "PLAINTEXT",
            Protocol::Ssl => "SSL",
            Protocol::SaslPlaintext => "SASL_PLAINTEXT",
            Protocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Whether its connections start with a TLS handshake.
    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    /// Whether its clients must authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }
}

/// One Kafka listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    /// Port 0 binds a free port, which is then what clients are told.
    pub bind: SocketAddr,
    /// What clients are told; unset: the bound address.
    pub advertise: Option<String>,
    pub protocol: Protocol,
}

/// A SASL mechanism this broker can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub fn parse(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            scram => ScramMechanism::from_name(scram).map(Mechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(scram) => scram.name(),
        }
    }
}

/// Whether a TLS listener asks clients for a certificate (Kafka's
/// `ssl.client.auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Asked for, checked if given, not required.
    Requested,
    Required,
}

/// The PEM files of the TLS listeners, read again when they change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The CAs client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Every listener: the default one (`listen`, advertised as `advertise`)
/// first, then `listeners` (`NAME://host:port`) with their
/// `advertised_listeners` and `protocol_map` (`NAME:PROTOCOL`; a name
/// missing from it must itself be a protocol name, as in Kafka).
pub fn parse(
    listen: SocketAddr,
    advertise: String,
    listeners: &[String],
    advertised_listeners: &[String],
    protocol_map: &[String],
) -> anyhow::Result<Vec<Listener>> {
    let mut protocols = BTreeMap::new();
    for entry in protocol_map {
        let (name, protocol) = entry
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("listener_security_protocol_map entry {entry:?} is not NAME:PROTOCOL"))?;
        protocols.insert(name.to_owned(), Protocol::parse(protocol)?);
    }
    let mut advertised = BTreeMap::new();
    for entry in advertised_listeners {
        let (name, address) = named(entry, "advertised_listeners")?;
        check_host_port(address, entry)?;
        anyhow::ensure!(
            advertised.insert(name.to_owned(), address.to_owned()).is_none(),
            "advertised_listeners names {name} twice"
        );
    }
    let mut all = vec![Listener {
        name: INTER_BROKER.to_owned(),
        bind: listen,
        advertise: Some(advertise),
        protocol: Protocol::Plaintext,
    }];
    if protocols.get(INTER_BROKER).is_some_and(|p| *p != Protocol::Plaintext) {
        anyhow::bail!("the {INTER_BROKER} listener (at `listen`) is the brokers' own and must stay PLAINTEXT");
    }
    for entry in listeners {
        let (name, address) = named(entry, "listeners")?;
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "listener name {name:?} must be upper-case letters, digits and _"
        );
        anyhow::ensure!(
            all.iter().all(|l| l.name != name),
            "listener {name} is named twice (the one at `listen` is {INTER_BROKER})"
        );
        let bind = address
            .parse()
            .map_err(|_| anyhow::anyhow!("listener {entry:?}: bind address must be ip:port, not {address:?}"))?;
        let protocol = match protocols.get(name) {
            Some(protocol) => *protocol,
            None => Protocol::parse(name).map_err(|error| {
                anyhow::anyhow!("listener {name}: not in listener_security_protocol_map, and {error}")
            })?,
        };
        all.push(Listener { name: name.to_owned(), bind, advertise: advertised.remove(name), protocol });
    }
    if let Some(name) = advertised.keys().next() {
        anyhow::bail!("advertised_listeners names {name}, which is not a listener");
    }
    Ok(all)
}

/// `NAME://address` as (name, address).
fn named<'a>(entry: &'a str, key: &str) -> anyhow::Result<(&'a str, &'a str)> {
    entry.split_once("://").ok_or_else(|| anyhow::anyhow!("{key} entry {entry:?} is not NAME://host:port"))
}

pub fn check_host_port(address: &str, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
        "{what}: the address must be host:port, not {address:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listeners_take_kafkas_forms_and_bad_ones_are_refused() {
        let listen = "127.0.0.1:9092".parse().unwrap();
        let all = parse(
            listen,
            "b1:9092".into(),
            &strings(&["SSL://0.0.0.0:9093", "EXTERNAL://0.0.0.0:9094"]),
            &strings(&["EXTERNAL://public.example:443"]),
            &strings(&["EXTERNAL:SSL"]),
        )
        .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].name.as_str(), all[0].protocol), (INTER_BROKER, Protocol::Plaintext));
        assert_eq!((all[1].name.as_str(), all[1].protocol, all[1].advertise.as_deref()), ("SSL", Protocol::Ssl, None));
        assert_eq!(all[2].advertise.as_deref(), Some("public.example:443"));
        assert_eq!(all[2].protocol, Protocol::Ssl);
        let sasl = parse(listen, "b1:9092".into(), &strings(&["SASL_SSL://0.0.0.0:9095"]), &[], &[]).unwrap();
        assert!(sasl[1].protocol.tls() && sasl[1].protocol.sasl());

        let refused = |listeners: &[&str], advertised: &[&str], map: &[&str]| {
            parse(listen, "b1:9092".into(), &strings(listeners), &strings(advertised), &strings(map)).unwrap_err()
        };
        assert!(refused(&["OTHER://0.0.0.0:1"], &[], &[])
            .to_string()
            .contains("not in listener_security_protocol_map"));
        assert!(refused(&["TLS://0.0.0.0:1"], &[], &["TLS:TLS"]).to_string().contains("unknown security protocol"));
        assert!(refused(&["PLAINTEXT://0.0.0.0:1"], &[], &[]).to_string().contains("named twice"));
        assert!(refused(&["SSL://host:1"], &[], &[]).to_string().contains("ip:port"));
        assert!(refused(&["SSL:0.0.0.0:1"], &[], &[]).to_string().contains("NAME://host:port"));
        assert!(refused(&["SSL://0.0.0.0:1"], &["OTHER://x:1"], &[]).to_string().contains("not a listener"));
        assert!(refused(&["SSL://0.0.0.0:1"], &["SSL://nohost"], &[]).to_string().contains("host:port"));
        assert!(refused(&[], &[], &["PLAINTEXT:SSL"]).to_string().contains("must stay PLAINTEXT"));
        assert!(refused(&["ssl://0.0.0.0:1"], &[], &["ssl:SSL"]).to_string().contains("upper-case"));
    }
}
