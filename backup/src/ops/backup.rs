//! `backup`: pg_dump → encrypt → upload → manifest.

use std::process::Stdio;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::tool::{finish_tool, spawn_tool, widen_pipe};
use super::{io, Error};
use crate::auth::MacKey;
use crate::crypto::{StreamEncryptor, DEFAULT_CHUNK_SIZE};
use crate::key::BackupKey;
use crate::manifest::{backup_name, rfc3339, Manifest, MANIFEST_VERSION};
use crate::pg::{self, PgError, PgTarget};
use crate::store::{Store, StoreError, MAX_PARTS_IN_FLIGHT};

/// Read until `buf` holds `n` bytes or the input ends.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
    buf.clear();
    buf.resize(n, 0);
    let mut filled = 0;
    while filled < n {
        let k = r.read(&mut buf[filled..]).await?;
        if k == 0 {
            break;
        }
        filled += k;
    }
    buf.truncate(filled);
    Ok(())
}

/// `backup`: pg_dump -Fc → encrypt → multipart upload → manifest. Returns the manifest.
pub async fn backup(
    store: &Store,
    target: &PgTarget,
    key: &BackupKey,
    now: DateTime<Utc>,
) -> Result<Manifest, Error> {
    let mut conn = target.connect().await?;
    let postgres_version = pg::server_version(&mut conn).await?;
    let schema_version = pg::schema_version(&mut conn).await?;
    // The audit chain head is read in the snapshot pg_dump dumps (exported from a transaction
    // kept open until the dump ends): the manifest's head is exactly the dump's.
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(PgError::from)?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await
        .map_err(PgError::from)?;
    let audit_head = pg::audit_head(&mut conn).await?;

    let name = backup_name(now);
    let mut cmd = Command::new("pg_dump");
    cmd.arg("--format=custom")
        .arg(format!("--snapshot={snapshot}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let (mut child, stderr) = spawn_tool("pg_dump", &mut cmd, Some(target))?;
    let Some(mut stdout) = child.stdout.take() else {
        return Err(Error::Invalid("pg_dump stdout not captured".into()));
    };
    widen_pipe(&stdout);

    let mut writer = store.upload_archive(&name).await?;
    let streamed = async {
        let mut enc = StreamEncryptor::new(key, DEFAULT_CHUNK_SIZE);
        let chunk = enc.chunk_size();
        let mut hasher = Sha256::new();
        let mut size = enc.header().len() as u64;
        hasher.update(enc.header());
        writer.write(enc.header());
        let mut cur = Vec::with_capacity(chunk + crate::crypto::TAG_LEN);
        let mut next = Vec::with_capacity(chunk + crate::crypto::TAG_LEN);
        fill(&mut stdout, &mut cur, chunk)
            .await
            .map_err(io("reading pg_dump output"))?;
        loop {
            let last = if cur.len() < chunk {
                true
            } else {
                fill(&mut stdout, &mut next, chunk)
                    .await
                    .map_err(io("reading pg_dump output"))?;
                next.is_empty()
            };
            if last {
                break;
            }
            enc.encrypt_chunk(&mut cur)?;
            hasher.update(&cur);
            size += cur.len() as u64;
            writer
                .wait_for_capacity(MAX_PARTS_IN_FLIGHT)
                .await
                .map_err(StoreError::from)?;
            writer.write(&cur);
            std::mem::swap(&mut cur, &mut next);
        }
        enc.encrypt_last(&mut cur)?;
        hasher.update(&cur);
        size += cur.len() as u64;
        writer.write(&cur);
        Ok::<_, Error>((size, hex::encode(hasher.finalize())))
    }
    .await;
    let (size, sha256) = match streamed {
        Ok(v) => v,
        Err(e) => {
            let _ = child.start_kill();
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    // The archive becomes visible only if pg_dump succeeded.
    let dumped = finish_tool("pg_dump", child, stderr).await;
    pg::close(conn).await; // ends the snapshot's transaction
    if let Err(e) = dumped {
        let _ = writer.abort().await;
        return Err(e);
    }
    writer.finish().await.map_err(StoreError::from)?;

    let mut manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        archive: Store::archive_object(&name),
        name,
        time: rfc3339(now),
        size,
        sha256,
        key_id: key.key_id().to_string(),
        postgres_version,
        schema_version,
        database: target.database().to_string(),
        audit_head,
        mac: None,
    };
    let mac_key = MacKey::derive(key);
    mac_key.sign_manifest(&mut manifest);
    store.put_manifest(&manifest).await?;
    store.put_pointer(&mac_key.pointer(&manifest)).await?;
    Ok(manifest)
}
