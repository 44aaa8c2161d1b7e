//! HTTPS on the API's listeners (HIPAA 45 CFR 164.312(e)(1): transmission security inside the
//! cluster too).
//!
//! With `CADUCEUS_TLS_CERT_FILE` and `CADUCEUS_TLS_KEY_FILE` set ([`from_env`]), `serve` speaks
//! only TLS (1.2 and 1.3, rustls with the ring provider, HTTP/1.1 by ALPN) on its public *and* its
//! admin address; a plain-HTTP request there fails its handshake. Without them it serves plain
//! HTTP and says so in its log (local runs and tests; the operator always sets both, from the
//! Secret `<platform>-api-internal-tls` it issues and renews).
//!
//! The certificate and key are read once, at start. A renewed certificate reaches the API by a
//! rolling restart: the operator puts a checksum of the certificate and key on the pod template
//! (`caduceus.io/api-tls-checksum`), and the rolling update (`maxUnavailable: 0`, graceful
//! draining on SIGTERM) replaces the pods without dropping requests.
//!
//! Handshakes run in their own tasks ([`TlsListener`]): a slow or silent client never holds up
//! the accept loop, and one that has not finished its handshake after [`HANDSHAKE_TIMEOUT`] is
//! dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use caduceus_contract::{key_files, settings};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client must have completed its TLS handshake this long after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most per listener; further connections wait in the kernel's
/// accept queue until one finishes.
const MAX_HANDSHAKES: usize = 256;

/// The TLS settings: both files, or neither (`None`: plain HTTP). A problem names the variable
/// and the file, never key material. `env` reads a variable (the configuration's source).
pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Option<Arc<ServerConfig>>, String> {
    let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    match (get(settings::TLS_CERT_FILE), get(settings::TLS_KEY_FILE)) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => load(Path::new(cert.trim()), Path::new(key.trim())).map(Some),
        (Some(_), None) => Err(format!(
            "{} is set but {} is not: set both (HTTPS) or neither (plain HTTP)",
            settings::TLS_CERT_FILE,
            settings::TLS_KEY_FILE
        )),
        (None, Some(_)) => Err(format!(
            "{} is set but {} is not: set both (HTTPS) or neither (plain HTTP)",
            settings::TLS_KEY_FILE,
            settings::TLS_CERT_FILE
        )),
    }
}

/// Reads the certificate chain and the key (which must not be readable by other accounts,
/// [`key_files::read_key_file`]) into a server configuration.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| {
        format!(
            "{}: cannot read {}: {e}",
            settings::TLS_CERT_FILE,
            cert.display()
        )
    })?;
    let key_pem = key_files::read_key_file(key).map_err(|e| {
        format!(
            "{}: cannot read {}: {e}",
            settings::TLS_KEY_FILE,
            key.display()
        )
    })?;
    server_config(&cert_pem, key_pem.as_bytes()).map_err(|m| m.to_string())
}

/// Why a certificate and key do not make a server configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsConfigError {
    #[error("CADUCEUS_TLS_CERT_FILE holds no PEM certificate")]
    NoCertificate,
    #[error("CADUCEUS_TLS_KEY_FILE holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey,
    #[error("the certificate and key of CADUCEUS_TLS_CERT_FILE / CADUCEUS_TLS_KEY_FILE do not make a TLS server: {0}")]
    Rejected(String),
}

/// A rustls server configuration from a PEM chain (leaf first) and a PEM key: TLS 1.2 and 1.3,
/// no client certificates, HTTP/1.1 by ALPN.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| TlsConfigError::NoCertificate)?;
    if chain.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsConfigError::NoKey)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rejected(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsConfigError::Rejected(e.to_string()))?;
    // axum serves HTTP/1.1 only (no `http2` feature).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections come out TLS-established: one task accepts, each
/// handshake runs in a task of its own (at most [`MAX_HANDSHAKES`] at once, each within
/// [`HANDSHAKE_TIMEOUT`]). Failed handshakes (plain HTTP, an untrusting client) are logged at
/// debug level and dropped.
pub struct TlsListener {
    established: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local_addr = tcp.local_addr()?;
        let (tx, established) = mpsc::channel(MAX_HANDSHAKES);
        let tls = TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                };
                set_nodelay(&stream);
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    // Held until the connection is handed over (or dropped).
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(conn)) => {
                            // Err: the server stopped accepting (shutdown).
                            let _ = tx.send((conn, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            established,
            local_addr,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.established.recv().await {
            Some(conn) => conn,
            // The accept task ended: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// As axum's accept loop: connection errors are the peer's business; anything else (out of
/// file descriptors) is logged and retried after a second.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// TCP_NODELAY on every accepted connection: with Nagle's algorithm a response written in more
/// than one piece waits for the client's delayed ACK (up to 40 ms).
fn set_nodelay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Serves `router` on `listener` (HTTPS with `tls`, else plain HTTP) until `shutdown`
/// completes, then drains the connections in flight. Handlers see the peer's address as
/// `ConnectInfo<SocketAddr>` either way.
pub async fn serve_router(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        // `tap_io` only for axum's `ConnectInfo<SocketAddr>` of a listener's address
        // (TCP_NODELAY is already set before the handshake).
        Some(config) => {
            axum::serve(
                TlsListener::new(listener, config)?.tap_io(|_| {}),
                make_service,
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        None => {
            axum::serve(listener.tap_io(|tcp| set_nodelay(tcp)), make_service)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, String>);

    impl MapEnv {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn issue(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_certificate_and_its_key_make_a_server_for_http_1_1() {
        let (cert, key) = issue("localhost");
        let config = server_config(cert.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn missing_or_mismatched_pem_is_refused_without_echoing_it() {
        let (cert, key) = issue("localhost");
        let (_, other_key) = issue("localhost");
        assert_eq!(
            server_config(b"not pem", key.as_bytes()).unwrap_err(),
            TlsConfigError::NoCertificate
        );
        assert_eq!(
            server_config(cert.as_bytes(), cert.as_bytes()).unwrap_err(),
            TlsConfigError::NoKey
        );
        let mismatch = server_config(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(
            matches!(mismatch, TlsConfigError::Rejected(_)),
            "{mismatch}"
        );
        assert!(!mismatch.to_string().contains("PRIVATE KEY"));
    }

    #[test]
    fn both_files_or_neither() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = issue("localhost");
        let cert_path = dir.path().join("tls.crt");
        let key_path = dir.path().join("tls.key");
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        let env = |pairs: &[(&'static str, &std::path::Path)]| {
            MapEnv(
                pairs
                    .iter()
                    .map(|(k, v)| (*k, v.display().to_string()))
                    .collect(),
            )
        };
        let with = |e: &MapEnv| from_env(|n| e.get(n));
        assert!(with(&env(&[])).unwrap().is_none(), "plain HTTP");
        let err = with(&env(&[(settings::TLS_CERT_FILE, &cert_path)])).unwrap_err();
        assert!(err.to_string().contains("CADUCEUS_TLS_KEY_FILE"), "{err}");
        let err = with(&env(&[(settings::TLS_KEY_FILE, &key_path)])).unwrap_err();
        assert!(err.to_string().contains("CADUCEUS_TLS_CERT_FILE"), "{err}");

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let both = [
                (settings::TLS_CERT_FILE, cert_path.as_path()),
                (settings::TLS_KEY_FILE, key_path.as_path()),
            ];
            for (mode, ok) in [(0o400, true), (0o440, true), (0o600, true), (0o644, false)] {
                std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(mode)).unwrap();
                let r = with(&env(&both));
                assert_eq!(r.is_ok(), ok, "key mode {mode:o}");
                if let Err(e) = r {
                    let e = e.to_string();
                    assert!(
                        e.contains("CADUCEUS_TLS_KEY_FILE") && e.contains("0644"),
                        "{e}"
                    );
                }
            }
        }
        let missing = dir.path().join("absent.crt");
        let err = with(&env(&[
            (settings::TLS_CERT_FILE, &missing),
            (settings::TLS_KEY_FILE, &key_path),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("absent.crt"), "{err}");
    }
}
