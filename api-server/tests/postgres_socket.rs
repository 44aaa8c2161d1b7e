//! The API's Postgres sockets have Nagle's algorithm off (`TCP_NODELAY`) and TCP keepalive on. sqlx 0.9.0 stopped
//! setting it; `vendor/sqlx-core` puts it back (see vendor/README.md). Without it, a query larger
//! than one TLS record waits 40 ms for the server's delayed ACK. This test fails if a sqlx upgrade
//! or the removal of the patch loses the option again.

use std::os::fd::BorrowedFd;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn postgres_sockets_disable_nagle() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/test.sh sets it)");
    let opts = PgConnectOptions::from_str(&url).expect("DATABASE_URL parses");
    let mut conn = PgConnection::connect_with(&opts).await.expect("connect");
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .expect("query");

    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(fd) = entry
            .expect("fd entry")
            .file_name()
            .to_string_lossy()
            .parse::<i32>()
        else {
            continue;
        };
        // SAFETY: the descriptor is only inspected while `conn` (which owns the Postgres
        // socket) is alive; descriptors that are not sockets just fail the calls below.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let Ok(peer) = sock.peer_addr() else { continue };
        let Some(peer) = peer.as_socket() else {
            continue;
        };
        if peer.port() != opts.get_port() {
            continue;
        }
        assert!(
            sock.tcp_nodelay().expect("TCP_NODELAY readable"),
            "the Postgres socket to {peer} has Nagle's algorithm on"
        );
        // TCP keepalive (vendor/sqlx-core too): a server gone without a FIN is noticed after
        // 30 s idle + 3 probes 10 s apart, not never
        assert!(
            sock.keepalive().expect("SO_KEEPALIVE readable"),
            "no keepalive to {peer}"
        );
        assert_eq!(
            sock.tcp_keepalive_time().expect("TCP_KEEPIDLE readable"),
            std::time::Duration::from_secs(30)
        );
        assert_eq!(
            sock.tcp_keepalive_interval()
                .expect("TCP_KEEPINTVL readable"),
            std::time::Duration::from_secs(10)
        );
        assert_eq!(
            sock.tcp_keepalive_retries().expect("TCP_KEEPCNT readable"),
            3
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "found no TCP socket to port {} (DATABASE_URL must point at Postgres over TCP)",
        opts.get_port()
    );
    conn.close().await.expect("close");
}
