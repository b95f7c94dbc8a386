//! TLS for every listener: loads `--tls-cert` / `--tls-key` once and accepts TLS sessions over
//! accepted TCP streams (rustls with the ring provider, through futures-rustls, which drives
//! rustls over glommio's futures-io streams).
//!
//! [`load`] runs once on the main thread before any shard starts; the resulting [`Acceptor`]
//! (an `Arc` of one `rustls::ServerConfig`) is cloned into every shard. [`Acceptor::accept`]
//! runs on the shard that accepted the TCP connection, inside that connection's task, so a slow
//! handshake never holds up the accept loop. Invariants: with TLS on, no listener serves plain
//! TCP (a plain client's first bytes fail the handshake and the connection is closed); a
//! handshake that does not finish within its bound is abandoned and the socket closed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::server::TlsStream;
use futures_rustls::TlsAcceptor;
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::ServerConfig;

/// Accepts TLS sessions with the server's certificate; cheap to clone (one shared config).
#[derive(Clone)]
pub struct Acceptor {
    inner: TlsAcceptor,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor").finish_non_exhaustive()
    }
}

/// The acceptor the flags ask for: `None` without `--tls-cert`, an error naming the file when
/// the certificate or key cannot be read or do not match.
pub fn load(config: &ServerConfig) -> Result<Option<Acceptor>, String> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(Acceptor::from_pem_files(cert, key)?)),
        (None, None) => Ok(None),
        _ => Err("--tls-cert and --tls-key go together".to_string()),
    }
}

impl Acceptor {
    /// Builds the shared server configuration from a PEM certificate chain and a PEM key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Acceptor, String> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|error| format!("reading --tls-cert {}: {error:?}", cert.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("reading --tls-cert {}: {error:?}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("--tls-cert {} holds no PEM certificate", cert.display()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|error| format!("reading --tls-key {}: {error:?}", key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("TLS set-up: {error}"))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|error| format!("--tls-cert / --tls-key: {error}"))?;
        Ok(Acceptor { inner: TlsAcceptor::from(Arc::new(config)) })
    }

    /// Runs the server side of the handshake on an accepted stream, within `bound` (zero: no
    /// bound). On failure the socket is closed and the reason returned.
    pub async fn accept(&self, stream: TcpStream, bound: Duration) -> Result<TlsStream<TcpStream>, String> {
        let handshake = self.inner.accept(stream);
        let outcome = if bound.is_zero() {
            handshake.await.map_err(|error| error.to_string())
        } else {
            let timer = glommio::timer::sleep(bound);
            futures::pin_mut!(handshake, timer);
            match futures::future::select(handshake, timer).await {
                futures::future::Either::Left((outcome, _)) => outcome.map_err(|error| error.to_string()),
                futures::future::Either::Right(((), _)) => Err(format!("no TLS handshake within {bound:?}")),
            }
        };
        outcome.map_err(|reason| format!("TLS handshake failed: {reason}"))
    }
}
