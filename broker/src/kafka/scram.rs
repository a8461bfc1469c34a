//! SCRAM (RFC 5802, with RFC 7677's SHA-256 and Kafka's SHA-512) on the
//! server side: the server's messages, the check of a client's proof, and
//! what a credential stores. The messages are parsed by
//! `keel_broker_core::sasl`; the hashes, HMAC, PBKDF2, random nonces and the
//! constant-time comparison are aws-lc-rs's (the provider rustls already
//! uses).

use std::num::NonZeroU32;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use keel_broker_core::sasl::{ClientFinal, ClientFirst, SaslError};
use keel_controller_client::{ScramCredential, ScramMechanism};

/// The server's first message and the combined nonce.
pub fn server_first(client: &ClientFirst, credential: &ScramCredential) -> Result<(String, String), SaslError> {
    let mut random = [0u8; 24];
    rand::fill(&mut random).map_err(|_| SaslError::Malformed("no randomness for a nonce"))?;
    let nonce = format!("{}{}", client.nonce, BASE64.encode(random));
    let message = format!("r={nonce},s={},i={}", BASE64.encode(&credential.salt), credential.iterations);
    Ok((message, nonce))
}

/// Checks the client's proof against the credential; returns the server's
/// final message (its signature, which proves it knew the keys).
pub fn verify(
    last: &ClientFinal,
    client: &ClientFirst,
    server_first: &str,
    credential: &ScramCredential,
) -> Result<String, SaslError> {
    let auth_message = format!("{},{server_first},{}", client.bare, last.without_proof);
    let (algorithm, hash) = algorithms(credential.mechanism);
    let signature = hmac::sign(&hmac::Key::new(algorithm, &credential.stored_key), auth_message.as_bytes());
    if last.proof.len() != signature.as_ref().len() {
        return Err(SaslError::InvalidCredentials);
    }
    let client_key: Vec<u8> = last.proof.iter().zip(signature.as_ref()).map(|(p, s)| p ^ s).collect();
    let stored = digest::digest(hash, &client_key);
    constant_time::verify_slices_are_equal(stored.as_ref(), &credential.stored_key)
        .map_err(|_| SaslError::InvalidCredentials)?;
    let server = hmac::sign(&hmac::Key::new(algorithm, &credential.server_key), auth_message.as_bytes());
    Ok(format!("v={}", BASE64.encode(server.as_ref())))
}

/// Whether `password` is the one `credential` was made from (SASL/PLAIN
/// checked against the stored SCRAM keys: no password is ever stored).
pub fn password_matches(credential: &ScramCredential, password: &[u8]) -> bool {
    let salted = salted(credential.mechanism, password, &credential.salt, credential.iterations);
    let (stored_key, _) = keys(credential.mechanism, &salted);
    constant_time::verify_slices_are_equal(&stored_key, &credential.stored_key).is_ok()
}

/// The stored and server keys of a salted password (Kafka's
/// AlterUserScramCredentials sends the salted password, not the password).
pub fn keys(mechanism: ScramMechanism, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (algorithm, hash) = algorithms(mechanism);
    let key = hmac::Key::new(algorithm, salted_password);
    let client_key = hmac::sign(&key, b"Client Key");
    let stored_key = digest::digest(hash, client_key.as_ref()).as_ref().to_vec();
    let server_key = hmac::sign(&key, b"Server Key").as_ref().to_vec();
    (stored_key, server_key)
}

/// PBKDF2 of `password` with `salt`: what a client proves it knows.
pub fn salted(mechanism: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let algorithm = match mechanism {
        ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
    };
    let mut out = vec![0u8; mechanism.key_len()];
    pbkdf2::derive(algorithm, NonZeroU32::new(iterations.max(1)).expect("at least 1"), salt, password, &mut out);
    out
}

fn algorithms(mechanism: ScramMechanism) -> (hmac::Algorithm, &'static digest::Algorithm) {
    match mechanism {
        ScramMechanism::Sha256 => (hmac::HMAC_SHA256, &digest::SHA256),
        ScramMechanism::Sha512 => (hmac::HMAC_SHA512, &digest::SHA512),
    }
}

#[cfg(test)]
mod tests {
    use keel_broker_core::sasl::{parse_client_final, parse_client_first};

    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, end to end.
    #[test]
    fn the_rfc_7677_exchange_verifies_and_a_wrong_proof_or_password_does_not() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let mechanism = ScramMechanism::Sha256;
        let (stored_key, server_key) = keys(mechanism, &salted(mechanism, b"pencil", &salt, 4096));
        let credential =
            ScramCredential { user: "user".into(), mechanism, salt, stored_key, server_key, iterations: 4096 };
        let first = parse_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        // The RFC's server nonce, instead of a random one.
        let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_first = format!("r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
        let last = format!("c=biws,r={nonce},p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let last = parse_client_final(last.as_bytes(), &first, nonce).unwrap();
        let answer = verify(&last, &first, &server_first, &credential).unwrap();
        assert_eq!(answer, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        let wrong = format!("c=biws,r={nonce},p=AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let wrong = parse_client_final(wrong.as_bytes(), &first, nonce).unwrap();
        assert_eq!(verify(&wrong, &first, &server_first, &credential), Err(SaslError::InvalidCredentials));
        assert!(password_matches(&credential, b"pencil"));
        assert!(!password_matches(&credential, b"pen"));
    }
}
