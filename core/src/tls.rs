//! TLS for a Manager served over TCP (rustls with the `ring` provider):
//! the public configuration types [`ServerTls`] and [`ClientTls`], and the
//! stream types both ends use. Authentication with the key still runs
//! inside the TLS session: TLS keeps the traffic private and proves the
//! server's certificate, the key proves each side may talk at all.

use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use serde::{Deserialize, Serialize};

/// A TLS server stream.
pub(crate) type ServerStream = rustls::StreamOwned<ServerConnection, TcpStream>;
/// A TLS client stream.
pub(crate) type ClientStream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// rustls refused the configuration or the peer.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The private key is not PKCS#8, PKCS#1 or SEC1 DER.
    #[error("TLS: the private key is not in a known DER format")]
    Key,
    /// The server name is not a DNS name or an IP address.
    #[error("TLS: invalid server name {0:?}")]
    Name(String),
    /// The TCP connection failed during the TLS handshake.
    #[error("TLS handshake: {0}")]
    Io(#[from] std::io::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key a served Manager presents over TCP:
/// `mproc::ServerTls`, for [`Manager::serve_tls`](crate::Manager::serve_tls).
#[derive(Clone, Serialize, Deserialize)]
pub struct ServerTls {
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) key: Vec<u8>,
}

impl std::fmt::Debug for ServerTls {
    // The private key is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A certificate chain (DER, leaf first) and its private key (DER:
    /// PKCS#8, PKCS#1 or SEC1).
    pub fn new(cert_chain_der: Vec<Vec<u8>>, private_key_der: Vec<u8>) -> Self {
        ServerTls {
            chain: cert_chain_der,
            key: private_key_der,
        }
    }

    pub(crate) fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = self
            .chain
            .iter()
            .cloned()
            .map(CertificateDer::from)
            .collect();
        let key = PrivateKeyDer::try_from(self.key.clone()).map_err(|_| TlsError::Key)?;
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Arc::new(cfg))
    }
}

/// What a client trusts when it connects to a Manager served with TLS:
/// `mproc::ClientTls`, for [`Manager::connect_tls`](crate::Manager::connect_tls).
/// Proxies carry it, so a proxy passed to another process connects with
/// TLS too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClientTls {
    root: Vec<u8>,
    server_name: String,
}

impl ClientTls {
    /// Trust `root_cert_der` (a CA or the server's self-signed certificate,
    /// DER) for a server whose certificate names `server_name` (a DNS name
    /// or an IP address).
    pub fn new(root_cert_der: Vec<u8>, server_name: impl Into<String>) -> Self {
        ClientTls {
            root: root_cert_der,
            server_name: server_name.into(),
        }
    }

    /// Runs the TLS handshake over `tcp` (whose timeouts bound it).
    pub(crate) fn connect(&self, mut tcp: TcpStream) -> Result<ClientStream, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(self.root.clone()))?;
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|_| TlsError::Name(self.server_name.clone()))?;
        let mut conn = ClientConnection::new(Arc::new(cfg), name)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}

/// The server's side of a TLS session over `tcp`; the handshake runs on
/// first use, bounded by `tcp`'s timeouts.
pub(crate) fn accept(cfg: &Arc<ServerConfig>, tcp: TcpStream) -> Result<ServerStream, TlsError> {
    let conn = ServerConnection::new(cfg.clone())?;
    Ok(rustls::StreamOwned::new(conn, tcp))
}
