//! `DescribeUserScramCredentials` and `AlterUserScramCredentials` (KIP-554).
//! A client sends the salted password (PBKDF2 of the password with the
//! salt and iterations it chose), never the password; the broker derives
//! the stored and server keys and the controllers keep those. Describe shows
//! each user's mechanisms and iterations, never a key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::*;
use keel_controller_client::{ScramCredential, ScramMechanism, SCRAM_ITERATIONS};

use crate::broker::Broker;
use crate::kafka::{scram, text};

pub(crate) async fn describe(
    broker: &Arc<Broker>,
    request: DescribeUserScramCredentialsRequest,
    _version: i16,
) -> DescribeUserScramCredentialsResponse {
    let image = broker.cluster.image();
    let described = |user: &str| {
        let result = DescribeUserScramCredentialsResult::default().with_user(text(user.to_owned()));
        match image.scram_credentials.get(user) {
            Some(credentials) => result.with_credential_infos(
                credentials
                    .values()
                    .map(|c| {
                        CredentialInfo::default()
                            .with_mechanism(c.mechanism.kafka_type())
                            .with_iterations(c.iterations as i32)
                    })
                    .collect(),
            ),
            None => result
                .with_error_code(ResponseError::ResourceNotFound.code())
                .with_error_message(Some(text(format!("user {user:?} has no SCRAM credential")))),
        }
    };
    let results = match request.users {
        None => image.scram_credentials.keys().map(|user| described(user)).collect(),
        Some(users) => {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for user in &users {
                *counts.entry(user.name.to_string()).or_default() += 1;
            }
            counts
                .into_iter()
                .map(|(user, count)| match count {
                    1 => described(&user),
                    _ => DescribeUserScramCredentialsResult::default()
                        .with_user(text(user.clone()))
                        .with_error_code(ResponseError::DuplicateResource.code())
                        .with_error_message(Some(text(format!("user {user:?} is asked for more than once")))),
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

pub(crate) async fn alter(
    broker: &Arc<Broker>,
    request: AlterUserScramCredentialsRequest,
    _version: i16,
) -> AlterUserScramCredentialsResponse {
    let image = broker.cluster.image();
    let mut errors: BTreeMap<String, (ResponseError, String)> = BTreeMap::new();
    let mut seen: BTreeSet<(String, i8)> = BTreeSet::new();
    let mut fail = |user: &str, error: ResponseError, message: String| {
        errors.entry(user.to_owned()).or_insert((error, message));
    };
    // The mechanism of one change to `user`, once per (user, mechanism).
    let mut mechanism_of = |user: &str, kind: i8, fail: &mut dyn FnMut(&str, ResponseError, String)| {
        if !seen.insert((user.to_owned(), kind)) {
            fail(user, ResponseError::DuplicateResource, format!("{user:?} is altered twice for one mechanism"));
            return None;
        }
        let mechanism = ScramMechanism::from_kafka_type(kind);
        if mechanism.is_none() {
            fail(user, ResponseError::UnsupportedSaslMechanism, format!("unknown mechanism {kind}"));
        }
        mechanism
    };
    let mut delete = Vec::new();
    for deletion in &request.deletions {
        let user = deletion.name.to_string();
        let Some(mechanism) = mechanism_of(&user, deletion.mechanism, &mut fail) else { continue };
        if image.scram_credentials.get(&user).is_none_or(|c| !c.contains_key(&mechanism)) {
            fail(&user, ResponseError::ResourceNotFound, format!("{user:?} has no {} credential", mechanism.name()));
            continue;
        }
        delete.push((user, mechanism));
    }
    let mut upsert = Vec::new();
    for upsertion in &request.upsertions {
        let user = upsertion.name.to_string();
        let Some(mechanism) = mechanism_of(&user, upsertion.mechanism, &mut fail) else { continue };
        let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
        if user.is_empty() || !SCRAM_ITERATIONS.contains(&iterations) {
            let message = format!(
                "a user name and {} to {} iterations are needed, not {:?} and {}",
                SCRAM_ITERATIONS.start(),
                SCRAM_ITERATIONS.end(),
                user,
                upsertion.iterations
            );
            fail(&user, ResponseError::UnacceptableCredential, message);
            continue;
        }
        if upsertion.salt.is_empty() || upsertion.salted_password.len() != mechanism.key_len() {
            fail(
                &user,
                ResponseError::UnacceptableCredential,
                "empty salt, or a salted password of the wrong length".into(),
            );
            continue;
        }
        let (stored_key, server_key) = scram::keys(mechanism, &upsertion.salted_password);
        upsert.push(ScramCredential {
            user,
            mechanism,
            salt: upsertion.salt.to_vec(),
            stored_key,
            server_key,
            iterations,
        });
    }
    // A user with any error has none of its changes applied, as in Kafka.
    upsert.retain(|c| !errors.contains_key(&c.user));
    delete.retain(|(user, _)| !errors.contains_key(user));
    let users: BTreeSet<String> = request
        .deletions
        .iter()
        .map(|d| d.name.to_string())
        .chain(request.upsertions.iter().map(|u| u.name.to_string()))
        .collect();
    if !upsert.is_empty() || !delete.is_empty() {
        match broker.cluster.client.alter_scram_credentials(&upsert, &delete).await {
            Ok((version, _)) => {
                let _ = broker.cluster.seen(version).await;
                tracing::info!(
                    set = ?upsert.iter().map(|c| (c.user.as_str(), c.mechanism.name())).collect::<Vec<_>>(),
                    removed = ?delete.iter().map(|(u, m)| (u.as_str(), m.name())).collect::<Vec<_>>(),
                    "SCRAM credentials altered"
                );
            }
            Err(error) => {
                let (code, message) = super::kafka_error(error);
                for user in &users {
                    errors.entry(user.clone()).or_insert((code, message.clone()));
                }
            }
        }
    }
    let results = users
        .into_iter()
        .map(|user| {
            let result = AlterUserScramCredentialsResult::default().with_user(text(user.clone()));
            match errors.get(&user) {
                Some((error, message)) => {
                    broker.count_error("AlterUserScramCredentials", *error);
                    result.with_error_code(error.code()).with_error_message(Some(text(message.clone())))
                }
                None => result,
            }
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}
