//! The cluster token: the one piece of hand-written code in this crate,
//! here because every crate that speaks Keel's gRPC depends on it.
//!
//! Internal calls (Raft, metadata, WAL appends, fences, reads) are refused
//! unless they carry the cluster's shared secret. A process sets its token
//! once at start from its config (`set_token`); every client channel made
//! with `channel` then sends it as `authorization: Bearer <token>`, and
//! every server built with the `check` interceptor refuses a call without
//! it, or with another, as UNAUTHENTICATED. A process with no token sends
//! and checks nothing (an unsecured cluster: tests of one process's parts).

use std::sync::OnceLock;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

/// The token as configured, and as sent.
static TOKEN: OnceLock<Option<(String, MetadataValue<Ascii>)>> = OnceLock::new();

/// A secret from a config: shown as `<redacted>` in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a cluster token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cluster_token must be at least 16 visible ASCII characters (no spaces)")]
    Malformed,
    #[error("this process already uses another cluster token")]
    AlreadySet,
}

/// Sets this process's cluster token, once; later calls must give the same.
pub fn set_token(token: Option<&str>) -> Result<(), TokenError> {
    let value = match token {
        None => None,
        Some(token) => {
            if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(TokenError::Malformed);
            }
            let header = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| TokenError::Malformed)?;
            Some((token.to_owned(), header))
        }
    };
    let set = TOKEN.get_or_init(|| value.clone());
    if *set != value {
        return Err(TokenError::AlreadySet);
    }
    Ok(())
}

/// This process's cluster token, if it has one (for the processes it starts).
pub fn token_text() -> Option<&'static str> {
    TOKEN.get().and_then(Option::as_ref).map(|(text, _)| text.as_str())
}

fn token() -> Option<&'static MetadataValue<Ascii>> {
    TOKEN.get().and_then(Option::as_ref).map(|(_, header)| header)
}

/// Adds the cluster token to each call.
#[derive(Clone, Copy, Debug, Default)]
pub struct WithToken;

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = token() {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry the cluster token.
pub type Channel = InterceptedService<tonic::transport::Channel, WithToken>;

pub fn channel(channel: tonic::transport::Channel) -> Channel {
    InterceptedService::new(channel, WithToken)
}

/// The server side, for `Server::builder().layer(tonic::service::interceptor(check))`:
/// refuses a call without this process's cluster token.
pub fn check(request: Request<()>) -> Result<Request<()>, Status> {
    let Some(expected) = token() else { return Ok(request) };
    match request.metadata().get("authorization") {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(request),
        Some(_) => Err(Status::unauthenticated(
            "wrong cluster token: the caller's cluster_token (KEEL_CLUSTER_TOKEN) differs from this cluster's",
        )),
        None => Err(Status::unauthenticated(
            "no cluster token: internal calls must carry the cluster's cluster_token (KEEL_CLUSTER_TOKEN)",
        )),
    }
}

/// Compares without stopping at the first difference, so the time taken
/// says nothing about how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_comparisons_see_every_byte() {
        assert_eq!(format!("{:?}", Secret("hunter2hunter2hunter2".into())), "<redacted>");
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn a_process_has_one_token_and_servers_check_it() {
        assert!(set_token(Some("short")).is_err(), "too short");
        assert!(set_token(Some("with a space in it...")).is_err());
        set_token(Some("0123456789abcdef0123")).unwrap();
        set_token(Some("0123456789abcdef0123")).unwrap();
        assert!(set_token(Some("another-token-entirely")).is_err());
        let mut with = Request::new(());
        with = tonic::service::Interceptor::call(&mut WithToken, with).unwrap();
        assert!(check(with).is_ok());
        let status = check(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        let mut wrong = Request::new(());
        wrong.metadata_mut().insert("authorization", MetadataValue::from_static("Bearer nope-nope-nope-nope"));
        assert_eq!(check(wrong).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
