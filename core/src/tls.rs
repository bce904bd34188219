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

/// A TLS session over TCP as a [`ByteStream`](mproc_transport::ByteStream),
/// for a cluster's long-lived connections, which one thread reads while
/// others write.
///
/// The session sits behind a lock that is never held while waiting for the
/// peer's bytes: a reader polls the socket unlocked, then takes the lock to
/// decrypt what came. A write encrypts under the lock and writes the records
/// out before it returns, so nothing waits in the session unsent.
#[derive(Debug)]
pub(crate) struct TlsChannel {
    sock: TcpStream,
    conn: std::sync::Mutex<rustls::Connection>,
    /// Silence longer than this many milliseconds is an error
    /// (`TimedOut`); 0 for none.
    read_timeout_ms: std::sync::atomic::AtomicU64,
}

impl TlsChannel {
    /// A client session to `tls`'s server over `tcp`; the handshake runs
    /// now, bounded by `tcp`'s timeouts.
    pub(crate) fn connect(tls: &ClientTls, tcp: TcpStream) -> Result<TlsChannel, TlsError> {
        let s = tls.connect(tcp)?;
        let (conn, sock) = (s.conn, s.sock);
        sock.set_nonblocking(true)?;
        Ok(TlsChannel {
            sock,
            conn: std::sync::Mutex::new(conn.into()),
            read_timeout_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The server's side over `tcp`; the handshake runs now.
    pub(crate) fn accept(
        cfg: &Arc<ServerConfig>,
        mut tcp: TcpStream,
    ) -> Result<TlsChannel, TlsError> {
        let mut conn = ServerConnection::new(cfg.clone())?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        tcp.set_nonblocking(true)?;
        Ok(TlsChannel {
            sock: tcp,
            conn: std::sync::Mutex::new(conn.into()),
            read_timeout_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Makes reads fail with `TimedOut` after `t` of silence.
    pub(crate) fn set_read_timeout(&self, t: Option<std::time::Duration>) {
        let ms = t.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        self.read_timeout_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, rustls::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every pending record, blocking as needed.
    fn flush_records(&self, conn: &mut rustls::Connection) -> std::io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        while conn.wants_write() {
            match conn.write_tls(&mut &self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLOUT)];
                    match poll(&mut fds, PollTimeout::NONE) {
                        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Decrypted bytes into `buf`: `Some(n)` (0 at the end of the
    /// session), `None` when none are ready.
    fn take_plain(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        use std::io::Read;
        let mut conn = self.lock();
        match conn.reader().read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Nothing decrypted yet: read what the socket has, if any.
                match conn.read_tls(&mut &self.sock) {
                    Ok(0) => Ok(Some(0)),
                    Ok(_) => {
                        conn.process_new_packets()
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                        self.flush_records(&mut conn)?;
                        match conn.reader().read(buf) {
                            Ok(n) => Ok(Some(n)),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Some(0)),
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }
}

impl mproc_transport::ByteStream for TlsChannel {
    fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        loop {
            // The socket is non-blocking, so this never waits under the lock
            // for the peer.
            if let Some(n) = self.take_plain(buf)? {
                return Ok(n);
            }
            let timeout = match self
                .read_timeout_ms
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                0 => PollTimeout::NONE,
                ms => PollTimeout::try_from(std::time::Duration::from_millis(ms))
                    .unwrap_or(PollTimeout::MAX),
            };
            let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Err(std::io::ErrorKind::TimedOut.into()),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        self.take_plain(buf)
    }

    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::Write;
        let mut conn = self.lock();
        let n = conn.writer().write(buf)?;
        self.flush_records(&mut conn)?;
        Ok(n)
    }

    fn wait_writable(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn shutdown(&self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}
