//! HTTPS on the API's listeners: the real public and admin routers served by
//! `tls::serve_router` (what `serve` runs) on TCP ports, with a server certificate for `api.test`
//! signed by a test CA (rcgen). A real HTTPS client (reqwest with rustls) that trusts only that CA
//! reaches both ports and the self-report says `api_tls`; a plain-HTTP request, a client trusting
//! another CA and one asking for a name the certificate does not carry are refused; a client
//! that connects and never starts its handshake holds up nobody.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use caduceus_api::testing::{test_config, TestApp};
use caduceus_api::tls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use sqlx::PgPool;
use tokio::net::TcpListener;

/// A CA and a server certificate it signed for `host`: (CA PEM, certificate PEM, key PEM).
fn issue(host: &str) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "caduceus test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let mut server = CertificateParams::new(vec![host.to_string()]).unwrap();
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// An HTTPS client that trusts only `ca_pem` and resolves `api.test` to `addr`.
fn client(ca_pem: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .resolve("api.test", addr)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[sqlx::test]
async fn the_api_serves_https_only_with_its_certificate(pool: PgPool) {
    let (ca, cert, key) = issue("api.test");
    let server_tls = tls::server_config(cert.as_bytes(), key.as_bytes()).unwrap();
    let mut config = test_config();
    config.tls = Some(Arc::clone(&server_tls));
    let app = TestApp::with_config(pool, config).await;

    let ((public, public_addr), (admin, admin_addr)) = (listener().await, listener().await);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let servers = tokio::spawn(futures::future::join(
        tls::serve_router(
            public,
            Some(Arc::clone(&server_tls)),
            app.router.clone(),
            until_stopped(stopped.clone()),
        ),
        tls::serve_router(
            admin,
            Some(server_tls),
            app.admin.clone(),
            until_stopped(stopped),
        ),
    ));

    // A client that connects and never says anything.
    let _silent = tokio::net::TcpStream::connect(public_addr).await.unwrap();

    // The public port over HTTPS, verified against the CA for the name `api.test`.
    let live = client(&ca, public_addr)
        .get(format!(
            "https://api.test:{}/health/live",
            public_addr.port()
        ))
        .send()
        .await
        .expect("HTTPS with the issued CA");
    assert_eq!(live.status(), 200);
    assert!(live.headers().contains_key("x-request-id"));

    // The admin port too; the self-report says so.
    let report: serde_json::Value = client(&ca, admin_addr)
        .get(format!(
            "https://api.test:{}/internal/compliance",
            admin_addr.port()
        ))
        .send()
        .await
        .expect("admin port over HTTPS")
        .json()
        .await
        .unwrap();
    assert_eq!(report["api_tls"], true, "{report}");

    // Plain HTTP on either port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for addr in [public_addr, admin_addr] {
        let r = plain.get(format!("http://{addr}/health/live")).send().await;
        assert!(
            r.is_err(),
            "plain HTTP on {addr} answered {:?}",
            r.map(|r| r.status())
        );
    }

    // Another CA, or a name the certificate does not carry: refused by the client.
    let (other_ca, _, _) = issue("api.test");
    let r = client(&other_ca, public_addr)
        .get(format!(
            "https://api.test:{}/health/live",
            public_addr.port()
        ))
        .send()
        .await;
    assert!(
        r.is_err(),
        "a certificate from an untrusted CA was accepted"
    );
    let r = client(&ca, public_addr)
        .get(format!(
            "https://127.0.0.1:{}/health/live",
            public_addr.port()
        ))
        .send()
        .await;
    assert!(r.is_err(), "the certificate does not name 127.0.0.1");

    // Draining stops both listeners.
    stop.send(true).unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(10), servers)
        .await
        .expect("servers stop")
        .unwrap();
    a.unwrap();
    b.unwrap();
}

#[test]
fn a_key_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let (_, cert, key) = issue("api.test");
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let err = tls::load(&cert_path, &key_path).unwrap_err().to_string();
    assert!(
        err.contains("CADUCEUS_TLS_KEY_FILE") && err.contains("0444"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o440)).unwrap();
    assert!(tls::load(&cert_path, &key_path).is_ok());
}
