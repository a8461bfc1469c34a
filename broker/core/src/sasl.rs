//! The SASL messages a client sends, parsed: PLAIN's (RFC 4616) and
//! SCRAM's two (RFC 5802). No cryptography here (the broker's `scram`
//! checks the proofs); this is the part that reads untrusted bytes, so it
//! has a fuzz target (`fuzz/fuzz_targets/sasl_messages.rs`).
//!
//! Kafka's SCRAM has no channel binding: a client-first message must start
//! with `n,` (the client does not ask for it); an authorization id, if
//! given, must be the user itself.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

/// Why a message was refused: said to the client as SASL_AUTHENTICATION_FAILED.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    #[error("invalid credentials")]
    InvalidCredentials,
}

/// SASL/PLAIN: `authzid NUL user NUL password`, the authorization id empty
/// or the user.
#[derive(Debug, PartialEq, Eq)]
pub struct Plain<'a> {
    pub user: &'a str,
    pub password: &'a [u8],
}

pub fn parse_plain(message: &[u8]) -> Result<Plain<'_>, SaslError> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed("PLAIN needs authzid NUL user NUL password"));
    };
    let user = std::str::from_utf8(user).map_err(|_| SaslError::Malformed("user name is not UTF-8"))?;
    if user.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(SaslError::InvalidCredentials);
    }
    Ok(Plain { user, password })
}

/// SCRAM's client-first message.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst {
    pub user: String,
    pub nonce: String,
    /// `n=...,r=...` and any extension, as the proofs sign it.
    pub bare: String,
    /// The GS2 header (`n,,` or `n,a=user,`), echoed in the final message.
    pub gs2_header: String,
}

pub fn parse_client_first(message: &[u8]) -> Result<ClientFirst, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("not UTF-8"))?;
    let rest = text.strip_prefix("n,").ok_or(SaslError::Malformed("channel binding is not supported"))?;
    let (authzid, bare) = rest.split_once(',').ok_or(SaslError::Malformed("no GS2 header"))?;
    let mut user = None;
    let mut nonce = None;
    for attribute in bare.split(',') {
        match attribute.split_once('=') {
            Some(("n", value)) => user = Some(sasl_name(value)?),
            Some(("r", value)) if !value.is_empty() => nonce = Some(value.to_owned()),
            Some(("m", _)) => return Err(SaslError::Malformed("mandatory extensions are not supported")),
            _ => {}
        }
    }
    let user = user.ok_or(SaslError::Malformed("no user name"))?;
    let nonce = nonce.ok_or(SaslError::Malformed("no nonce"))?;
    if let Some(authzid) = authzid.strip_prefix("a=") {
        if sasl_name(authzid)? != user {
            return Err(SaslError::InvalidCredentials);
        }
    } else if !authzid.is_empty() {
        return Err(SaslError::Malformed("bad authorization id"));
    }
    Ok(ClientFirst { user, nonce, bare: bare.to_owned(), gs2_header: format!("n,{authzid},") })
}

/// SCRAM's client-final message, checked against the first one and the
/// server's nonce, its proof still to check.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFinal {
    /// Everything before `,p=`, as the proofs sign it.
    pub without_proof: String,
    pub proof: Vec<u8>,
}

pub fn parse_client_final(message: &[u8], first: &ClientFirst, nonce: &str) -> Result<ClientFinal, SaslError> {
    let text = std::str::from_utf8(message).map_err(|_| SaslError::Malformed("not UTF-8"))?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or(SaslError::Malformed("no proof"))?;
    let mut binding = None;
    let mut echoed = None;
    for attribute in without_proof.split(',') {
        match attribute.split_once('=') {
            Some(("c", value)) => binding = Some(value),
            Some(("r", value)) => echoed = Some(value),
            _ => {}
        }
    }
    if binding != Some(BASE64.encode(&first.gs2_header).as_str()) {
        return Err(SaslError::Malformed("channel binding differs from the first message"));
    }
    // librdkafka before 2.6 sends the client's nonce once more in front of
    // the server's (which starts with it); Kafka accepts that since 3.8.1
    // by checking that the echoed nonce ends with its own, and so does this.
    if !echoed.is_some_and(|echoed| echoed.ends_with(nonce)) {
        return Err(SaslError::Malformed("nonce differs from the server's"));
    }
    let proof = BASE64.decode(proof).map_err(|_| SaslError::Malformed("proof is not base64"))?;
    Ok(ClientFinal { without_proof: without_proof.to_owned(), proof })
}

/// RFC 5802's saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is an error.
fn sasl_name(value: &str) -> Result<String, SaslError> {
    let mut name = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('=') {
        name.push_str(&rest[..at]);
        match rest.get(at..at + 3) {
            Some("=2C") => name.push(','),
            Some("=3D") => name.push('='),
            _ => return Err(SaslError::Malformed("bad escape in a name")),
        }
        rest = &rest[at + 3..];
    }
    name.push_str(rest);
    if name.is_empty() {
        return Err(SaslError::Malformed("empty user name"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_messages_are_refused_and_names_unescaped() {
        for bad in [
            &b"y,,n=user,r=abc"[..],
            b"p=tls-unique,,n=user,r=abc",
            b"n,,r=abc",
            b"n,,n=user",
            b"n,,n=us=er,r=abc",
            b"n,,n=user,r=abc,m=ext",
            b"n,a=other,n=user,r=abc",
            b"\xff\xfe",
        ] {
            assert!(parse_client_first(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_client_first(b"n,a=a=2Cb,n=a=2Cb,r=x").unwrap().user, "a,b");
        let first = parse_client_first(b"n,,n=user,r=abc").unwrap();
        assert!(parse_client_final(b"c=biws,r=abcdef,p=AAAA", &first, "abcdef").is_ok());
        assert!(parse_client_final(b"c=biws,r=abcabcdef,p=AAAA", &first, "abcdef").is_ok(), "librdkafka < 2.6");
        assert!(parse_client_final(b"c=biws,r=other,p=AAAA", &first, "abcdef").is_err());
        assert!(parse_client_final(b"c=eSws,r=abcdef,p=AAAA", &first, "abcdef").is_err(), "another GS2 header");
        assert!(parse_client_final(b"c=biws,r=abcdef,p=!!", &first, "abcdef").is_err());
        assert!(parse_client_final(b"c=biws,r=abcdef", &first, "abcdef").is_err());

        assert_eq!(parse_plain(b"\0alice\0pw"), Ok(Plain { user: "alice", password: b"pw" }));
        assert_eq!(parse_plain(b"alice\0alice\0pw").unwrap().user, "alice");
        assert_eq!(parse_plain(b"bob\0alice\0pw"), Err(SaslError::InvalidCredentials));
        for bad in [&b"alice\0pw"[..], b"\0\0pw", b"\0a\0b\0c", b"\0\xff\0pw"] {
            assert!(parse_plain(bad).is_err(), "{bad:?}");
        }
    }
}
