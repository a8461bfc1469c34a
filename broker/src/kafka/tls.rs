//! TLS for the SSL listeners: rustls with TLS 1.2 and 1.3 only, the server
//! configuration built from the PEM files of `TlsFiles`. It is built again
//! when one of the files changes (checked every `CHECK_EVERY`) or on SIGHUP:
//! new connections get the new certificate, open ones keep theirs, so a
//! rotation drops nothing. A rebuild that fails (a file written half-way,
//! a key that does not match) keeps the previous configuration and says why.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::listeners::{ClientAuth, TlsFiles};

/// How often the files are checked for a change.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The files' modification times and lengths, to see a change.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The TLS configuration of the SSL listeners, kept current.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    current: RwLock<(Arc<ServerConfig>, Stamp)>,
}

impl Tls {
    /// Reads the files; an error here stops the broker's start.
    pub fn load(files: TlsFiles) -> anyhow::Result<Arc<Tls>> {
        let stamp = stamp(&files);
        let config = server_config(&files)?;
        Ok(Arc::new(Tls { files, current: RwLock::new((Arc::new(config), stamp)) }))
    }

    /// An acceptor with the current configuration.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        TlsAcceptor::from(current.0.clone())
    }

    /// Builds the configuration again if a file changed (or `always`).
    /// Returns whether it was replaced.
    pub fn reload(&self, always: bool) -> anyhow::Result<bool> {
        let stamp = stamp(&self.files);
        {
            let current = self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !always && current.1 == stamp {
                return Ok(false);
            }
        }
        let config = server_config(&self.files);
        let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Tried once per change: a bad file is reported once, not every check.
        current.1 = stamp;
        current.0 = Arc::new(config?);
        Ok(true)
    }

    /// Reloads on a file change or SIGHUP until `cancel`.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: TLS files are reloaded when they change only");
                None
            }
        };
        loop {
            let always = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            match self.reload(always) {
                Ok(true) => tracing::info!(
                    certificate = %self.files.certificate.display(),
                    "TLS certificate and key reloaded: new connections use them"
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    certificate = %self.files.certificate.display(),
                    "TLS files changed but cannot be used, keeping the previous ones: {error:#}"
                ),
            }
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    [Some(&files.certificate), Some(&files.private_key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn server_config(files: &TlsFiles) -> anyhow::Result<ServerConfig> {
    let certificate = &files.certificate;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(Iterator::collect)
        .with_context(|| format!("reading certificates from {}", certificate.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", certificate.display());
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .with_context(|| format!("reading a private key from {}", files.private_key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?;
    let builder = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => anyhow::bail!("client certificates are asked for but no client CA is set"),
        (auth, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca).with_context(|| format!("reading CAs from {}", ca.display()))?
            {
                let cert = cert.with_context(|| format!("reading CAs from {}", ca.display()))?;
                roots.add(cert).with_context(|| format!("a CA certificate in {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Requested => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    builder.with_single_cert(chain, key).context("the certificate and its private key")
}
