//! The operator's cache certificates and Redis configuration on a REAL `redis-server`, and the
//! REAL `caduceus-api` connecting over `rediss://` with the server certificate verified.
//!
//! The CA and server certificate come from `caduceus_operator::desired::certs` with the cache's
//! [`redis_tls::SERVICE`] (the code that fills `<platform>-redis-tls`), SAN `localhost`. The
//! `redis-server` command line is the embedded Redis StatefulSet's as the operator builds it
//! (TLS only: `port 0`, `tls-port`, `tls-auth-clients no`, the `auth.conf` include with
//! `requirepass` from `<platform>-redis-credentials`), with the mount paths pointed at files in a
//! temporary directory, the port at a free one and `bind` at 127.0.0.1. Debian's `redis-server`
//! (what `scripts/services.sh` installs) is built with TLS. Then:
//! - the readiness probe's `redis-cli --tls --cacert` answers `PONG`; `redis-cli` without TLS
//!   gets no answer;
//! - `caduceus-api serve` with the operator's `rediss://` URL (host `localhost`) and
//!   `CADUCEUS_REDIS_CA_FILE` reaches Redis: its self-report says `cache.reachable` (the rate
//!   limiter's connection, redis-rs with rustls);
//! - another CA, a host the certificate does not name (`127.0.0.1`) and a plaintext `redis://`
//!   URL to the TLS port are refused (`reachable: false`: the rate limiter falls back to its
//!   per-pod limits); a `redis://` URL with `CADUCEUS_REDIS_CA_FILE` set does not start at all.
//!
//! Needs Postgres for `serve` (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`;
//! a fresh database is created and dropped) and the API binary (`cargo build -p caduceus-api`
//! first, or `CADUCEUS_API_BIN`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caduceus_operator::compliance::self_report::CacheReport;
use caduceus_operator::crd::HealthcarePlatform;
use caduceus_operator::desired::certs::{self, TlsMaterial};
use caduceus_operator::desired::{build_children, redis_tls, ExistingSecrets, SecretGenerator};
use caduceus_operator::validate::validate;
use support::api_process::{
    free_port, output_text, serve_command, wait_for_self_report, write_file,
};
use support::database::Database;

/// The embedded Redis as the operator builds it (container command, credentials Secret),
/// issued a certificate for `localhost` from the cache's CA; stopped on drop.
struct Redis {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// `redis-url` of `<platform>-redis-credentials`, host and port pointed at this server.
    url: String,
    password: String,
    tls_dir: PathBuf,
}

impl Redis {
    fn start(tls: &TlsMaterial) -> Self {
        let mut hp = HealthcarePlatform::new("demo", Default::default());
        hp.metadata.namespace = Some("clinic".into());
        let p = validate(&hp, "clinic").unwrap();
        let children = build_children(
            &p,
            &ExistingSecrets::default(),
            &mut SecretGenerator::random(),
        );
        let secret = |key: &str| {
            let data = children.redis_credentials.as_ref().unwrap().data.as_ref();
            String::from_utf8(data.unwrap()[key].0.clone()).unwrap()
        };
        let password = secret("password");
        let port = free_port();
        let url = secret("redis-url").replace(
            "@demo-redis.clinic.svc:6379/",
            &format!("@localhost:{port}/"),
        );
        assert!(url.starts_with("rediss://"), "the operator's URL is TLS");

        let dir = tempfile::tempdir().unwrap();
        let tls_dir = dir.path().join("tls");
        let auth_dir = dir.path().join("auth");
        let data_dir = dir.path().join("data");
        for d in [&tls_dir, &auth_dir, &data_dir] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(tls_dir.join(certs::SERVER_CERT_KEY), &tls.server_cert).unwrap();
        std::fs::write(tls_dir.join(certs::SERVER_KEY_KEY), &tls.server_key).unwrap();
        std::fs::write(tls_dir.join(certs::CA_CERT_KEY), &tls.ca_cert).unwrap();
        std::fs::write(auth_dir.join("auth.conf"), secret("auth.conf")).unwrap();

        // The StatefulSet's command, paths and port moved to this test's.
        let pod = children.redis.as_ref().unwrap().stateful_set.clone();
        let container = &pod.spec.unwrap().template.spec.unwrap().containers[0];
        let mut command = container.command.clone().unwrap();
        assert!(
            command.windows(2).any(|w| w == ["--port", "0"]),
            "no plaintext port: {command:?}"
        );
        for arg in &mut command {
            *arg = arg
                .replace(redis_tls::SERVER_TLS_DIR, tls_dir.to_str().unwrap())
                .replace("/etc/redis/auth", auth_dir.to_str().unwrap());
        }
        let mut i = 1;
        while i < command.len() {
            match command[i - 1].as_str() {
                "--tls-port" => command[i] = port.to_string(),
                "--dir" => command[i] = data_dir.to_str().unwrap().into(),
                "--bind" => command[i] = "127.0.0.1".into(),
                _ => {}
            }
            i += 1;
        }
        let child = Command::new(&command[0])
            .args(&command[1..])
            .stdout(std::fs::File::create(dir.path().join("redis.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (apt-get install redis-server)");
        let redis = Self {
            child,
            dir,
            port,
            url,
            password,
            tls_dir,
        };
        let start = Instant::now();
        while !redis.probe().0 {
            let log =
                std::fs::read_to_string(redis.dir.path().join("redis.log")).unwrap_or_default();
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "redis-server did not answer over TLS:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        redis
    }

    /// The readiness probe's command (`redis-cli --tls --cacert`), port moved to this server's.
    fn probe(&self) -> (bool, String) {
        let cli = caduceus_operator::desired::redis::cli(self.tls_dir.to_str().unwrap())
            .replace("-p 6379", &format!("-p {}", self.port));
        let out = Command::new("/bin/sh")
            .args(["-c", &format!("{cli} ping")])
            .env("REDISCLI_AUTH", &self.password)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).trim() == "PONG",
            output_text(&out),
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `caduceus-api serve` with `REDIS_URL=redis_url` and `CADUCEUS_REDIS_CA_FILE=ca`: the `cache`
/// part of its self-report once it serves it, or `Err(stderr)` when it exits.
async fn cache_report(
    db: &Database,
    redis_url: &str,
    ca: Option<&Path>,
) -> Result<CacheReport, String> {
    let (http_port, admin_port) = (free_port(), free_port());
    let mut cmd = serve_command(&db.app_url, db.keys.path(), http_port, admin_port);
    cmd.env("REDIS_URL", redis_url);
    if let Some(ca) = ca {
        cmd.env("CADUCEUS_REDIS_CA_FILE", ca);
    }
    let mut serve = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let result = wait_for_self_report(&mut serve, admin_port)
        .await
        .map(|r| r.cache.expect("the API reports its cache"));
    let _ = serve.kill();
    let _ = serve.wait();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reaches_redis_only_over_verified_tls() {
    let now = k8s_openapi::jiff::Timestamp::now();
    let localhost = ["localhost".to_string()];
    let tls = certs::issue(redis_tls::SERVICE, "demo", &localhost, now).unwrap();
    let redis = Redis::start(&tls);
    let files = tempfile::tempdir().unwrap();
    let ca = write_file(files.path(), "ca.crt", &tls.ca_cert);

    // The probe works; a client without TLS gets no answer from the only port.
    let (ok, out) = redis.probe();
    assert!(ok, "probe: {out}");
    let plain = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "ping"])
        .env("REDISCLI_AUTH", &redis.password)
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout).trim(),
        "PONG",
        "plaintext must be refused: {}",
        output_text(&plain)
    );

    let db = Database::create("caduceus_redis_tls");
    let reachable = CacheReport {
        configured: true,
        reachable: true,
    };
    let unreachable = CacheReport {
        configured: true,
        reachable: false,
    };

    // The operator's URL and CA: verified TLS.
    assert_eq!(
        cache_report(&db, &redis.url, Some(&ca)).await,
        Ok(reachable.clone())
    );
    // A bundle with a second CA (ca.crt during a CA renewal) is accepted too.
    let other = certs::issue(redis_tls::SERVICE, "demo", &localhost, now).unwrap();
    let bundle = write_file(
        files.path(),
        "bundle.crt",
        &format!("{}{}", other.ca_cert, tls.ca_cert),
    );
    assert_eq!(
        cache_report(&db, &redis.url, Some(&bundle)).await,
        Ok(reachable)
    );

    // Another CA: the handshake fails.
    let other_ca = write_file(files.path(), "other.crt", &other.ca_cert);
    assert_eq!(
        cache_report(&db, &redis.url, Some(&other_ca)).await,
        Ok(unreachable.clone())
    );
    // A host the certificate does not name.
    let by_ip = redis.url.replace("@localhost:", "@127.0.0.1:");
    assert_eq!(
        cache_report(&db, &by_ip, Some(&ca)).await,
        Ok(unreachable.clone())
    );
    // Plaintext to the TLS port.
    let plaintext = redis.url.replacen("rediss://", "redis://", 1);
    assert_eq!(cache_report(&db, &plaintext, None).await, Ok(unreachable));
    // A CA file with a plaintext URL is a configuration error, not a silent downgrade.
    let err = cache_report(&db, &plaintext, Some(&ca)).await.unwrap_err();
    assert!(
        err.contains("CADUCEUS_REDIS_CA_FILE") && err.contains("rediss://"),
        "{err}"
    );
    assert!(
        !err.contains(&redis.password),
        "no password in errors: {err}"
    );
}
