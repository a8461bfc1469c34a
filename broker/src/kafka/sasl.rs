//! SASL authentication on a SASL_PLAINTEXT or SASL_SSL listener (KIP-43,
//! KIP-152): SaslHandshake picks a mechanism, SaslAuthenticate carries its
//! messages, and until it succeeds a connection may send ApiVersions and
//! nothing else (anything else closes it, as Kafka does). Mechanisms: PLAIN
//! (checked against the user's stored SCRAM keys: no password is stored)
//! and SCRAM-SHA-256/512 (`scram`), with the credentials the controllers
//! hold (AlterUserScramCredentials). A failed authentication is answered
//! SASL_AUTHENTICATION_FAILED, logged once and the connection closed.
//! Re-authentication (KIP-368) is not offered: the session lifetime is 0.
//!
//! Runs in the connection's reader, in request order, before `request::admit`.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use keel_broker_core::sasl::{self as messages, ClientFirst};
use keel_broker_core::wire::{decode, encode, versions, Request, Unreadable};
use keel_controller_client::{Image, ScramCredential, ScramMechanism};

use super::scram;
use crate::broker::Broker;
pub use crate::config::listeners::Mechanism;

/// What the reader does with a request.
#[derive(Debug)]
pub enum Gate {
    /// Not SASL's: handle it as any request.
    Pass(Request),
    /// Answered here.
    Answer(BytesMut),
    /// Answered here, then the connection closes (an authentication failed).
    AnswerThenClose(BytesMut, String),
    /// Closed without an answer, as Kafka does for a request before authentication.
    Close(String),
}

#[derive(Debug)]
enum State {
    Start,
    Chosen(Mechanism),
    /// SCRAM's server-first message was sent.
    ScramFirst(Box<ScramFirst>),
    Authenticated,
}

/// What SCRAM's final step checks against.
#[derive(Debug)]
struct ScramFirst {
    client: ClientFirst,
    server_first: String,
    nonce: String,
    credential: ScramCredential,
}

/// One connection's authentication.
#[derive(Debug)]
pub struct Authentication {
    enabled: Vec<Mechanism>,
    state: State,
    /// `User:<name>` once authenticated.
    principal: Option<String>,
}

impl Authentication {
    pub fn new(enabled: Vec<Mechanism>) -> Authentication {
        Authentication { enabled, state: State::Start, principal: None }
    }

    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// Decides what becomes of `request` on this connection.
    pub fn gate(&mut self, broker: &Broker, request: Request) -> Result<Gate, Unreadable> {
        let authenticated = matches!(self.state, State::Authenticated);
        match request.api {
            ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => {}
            ApiKey::ApiVersions => return Ok(Gate::Pass(request)),
            _ if authenticated => return Ok(Gate::Pass(request)),
            other => return Ok(Gate::Close(format!("{other:?} before SASL authentication"))),
        }
        let Request { api, version, header, body } = request;
        let (min, max) = versions::supported(api).unwrap_or((0, -1));
        if version < min || version > max {
            return Ok(Gate::Close(format!("{api:?} v{version} is not supported (v{min} to v{max})")));
        }
        let correlation = header.correlation_id;
        if api == ApiKey::SaslHandshake {
            let request: SaslHandshakeRequest = decode(api, version, body)?;
            let mechanisms = self.enabled.iter().map(|m| StrBytes::from_static_str(m.name())).collect();
            let answer = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
            if version == 0 {
                let answer = answer.with_error_code(ResponseError::UnsupportedVersion.code());
                return Ok(Gate::AnswerThenClose(
                    encode(api, version, correlation, &answer)?,
                    "SaslHandshake v0 (unframed SASL tokens) is not supported: use v1".into(),
                ));
            }
            if !matches!(self.state, State::Start) {
                let answer = answer.with_error_code(ResponseError::IllegalSaslState.code());
                return Ok(Gate::AnswerThenClose(
                    encode(api, version, correlation, &answer)?,
                    "SaslHandshake after the mechanism was chosen".into(),
                ));
            }
            return Ok(match self.enabled.iter().find(|m| m.name() == request.mechanism.as_str()) {
                Some(mechanism) => {
                    self.state = State::Chosen(*mechanism);
                    Gate::Answer(encode(api, version, correlation, &answer)?)
                }
                None => {
                    broker.cluster.metrics.sasl_failed.with_label_values(&[request.mechanism.as_str()]).inc();
                    let answer = answer.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
                    Gate::AnswerThenClose(
                        encode(api, version, correlation, &answer)?,
                        format!("SASL mechanism {:?} is not enabled", request.mechanism.as_str()),
                    )
                }
            });
        }
        let request: SaslAuthenticateRequest = decode(api, version, body)?;
        let answer = |bytes: Vec<u8>| SaslAuthenticateResponse::default().with_auth_bytes(bytes.into());
        // `why` is logged, never told: the client gets Kafka's message.
        let refuse_because = |error: ResponseError, message: String, why: String| -> Result<Gate, Unreadable> {
            let answer = answer(Vec::new()).with_error_code(error.code()).with_error_message(Some(message.into()));
            Ok(Gate::AnswerThenClose(encode(api, version, correlation, &answer)?, why))
        };
        let refuse = |error: ResponseError, message: String| refuse_because(error, message.clone(), message);
        let image = broker.cluster.image();
        match std::mem::replace(&mut self.state, State::Start) {
            State::Chosen(Mechanism::Plain) => match plain(&image, &request.auth_bytes) {
                Some(user) => {
                    self.authenticated(broker, Mechanism::Plain, &user);
                    Ok(Gate::Answer(encode(api, version, correlation, &answer(Vec::new()))?))
                }
                None => {
                    broker.cluster.metrics.sasl_failed.with_label_values(&["PLAIN"]).inc();
                    refuse(ResponseError::SaslAuthenticationFailed, failed(Mechanism::Plain))
                }
            },
            State::Chosen(Mechanism::Scram(mechanism)) => {
                let scram_failed = |broker: &Broker, why: String| {
                    broker.cluster.metrics.sasl_failed.with_label_values(&[mechanism.name()]).inc();
                    refuse_because(ResponseError::SaslAuthenticationFailed, failed(Mechanism::Scram(mechanism)), why)
                };
                let client = match messages::parse_client_first(&request.auth_bytes) {
                    Ok(client) => client,
                    Err(error) => return scram_failed(broker, format!("{} first message: {error}", mechanism.name())),
                };
                let Some(credential) = image.scram_credentials.get(&client.user).and_then(|c| c.get(&mechanism)) else {
                    return scram_failed(
                        broker,
                        format!("user {:?} has no {} credential", client.user, mechanism.name()),
                    );
                };
                let (server_first, nonce) = match scram::server_first(&client, credential) {
                    Ok(first) => first,
                    Err(error) => return scram_failed(broker, error.to_string()),
                };
                let bytes = server_first.clone().into_bytes();
                self.state = State::ScramFirst(Box::new(ScramFirst {
                    client,
                    server_first,
                    nonce,
                    credential: credential.clone(),
                }));
                Ok(Gate::Answer(encode(api, version, correlation, &answer(bytes))?))
            }
            State::ScramFirst(first) => {
                let ScramFirst { client, server_first, nonce, credential } = *first;
                let mechanism = credential.mechanism;
                let verified = messages::parse_client_final(&request.auth_bytes, &client, &nonce)
                    .and_then(|last| scram::verify(&last, &client, &server_first, &credential));
                match verified {
                    Ok(server_final) => {
                        self.authenticated(broker, Mechanism::Scram(mechanism), &client.user);
                        Ok(Gate::Answer(encode(api, version, correlation, &answer(server_final.into_bytes()))?))
                    }
                    Err(error) => {
                        broker.cluster.metrics.sasl_failed.with_label_values(&[mechanism.name()]).inc();
                        let why = format!("user {:?}, {}: {error}", client.user, mechanism.name());
                        refuse_because(
                            ResponseError::SaslAuthenticationFailed,
                            failed(Mechanism::Scram(mechanism)),
                            why,
                        )
                    }
                }
            }
            State::Start => refuse(ResponseError::IllegalSaslState, "SaslAuthenticate before SaslHandshake".into()),
            State::Authenticated => {
                self.state = State::Authenticated;
                refuse(
                    ResponseError::IllegalSaslState,
                    "already authenticated: re-authentication is not offered".into(),
                )
            }
        }
    }

    fn authenticated(&mut self, broker: &Broker, mechanism: Mechanism, user: &str) {
        broker.cluster.metrics.sasl_authenticated.with_label_values(&[mechanism.name()]).inc();
        self.state = State::Authenticated;
        self.principal = Some(format!("User:{user}"));
    }
}

/// Kafka's message for a failed authentication, which names no user and
/// says nothing of whether the user exists.
fn failed(mechanism: Mechanism) -> String {
    format!(
        "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
        mechanism.name()
    )
}

/// SASL/PLAIN (RFC 4616): the user, if the password matches one of the
/// user's SCRAM credentials.
fn plain(image: &Image, message: &[u8]) -> Option<String> {
    let plain = messages::parse_plain(message).ok()?;
    let credentials = image.scram_credentials.get(plain.user)?;
    let credential = credentials.get(&ScramMechanism::Sha512).or_else(|| credentials.get(&ScramMechanism::Sha256))?;
    scram::password_matches(credential, plain.password).then(|| plain.user.to_owned())
}
