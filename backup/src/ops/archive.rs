//! Reading a backup back: its authenticated manifest, and its archive decrypted into a child's
//! stdin (shared by `verify` and `restore`).

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::tool::widen_pipe;
use super::{io, Error};
use crate::auth::{Authenticity, MacKey};
use crate::crypto::{CryptoError, StreamDecryptor};
use crate::key::BackupKey;
use crate::manifest::Manifest;
use crate::store::{Store, StoreError};

/// The manifest of `name` (or `latest`), refused unless authenticated under `key`
/// ([`crate::auth`]); manifests without a MAC (before manifest MACs) only with
/// `allow_unauthenticated`. Returns it and whether its MAC verified.
pub async fn authenticated_manifest(
    store: &Store,
    key: &BackupKey,
    name: &str,
    allow_unauthenticated: bool,
) -> Result<(Manifest, bool), Error> {
    let mac_key = MacKey::derive(key);
    let manifest = if name == "latest" {
        let listed = store.list().await?;
        if let Some(newest) = listed.first() {
            if newest.key_id != key.key_id() {
                return Err(CryptoError::KeyMismatch {
                    archive: newest.key_id.clone(),
                    key: key.key_id().to_string(),
                }
                .into());
            }
        }
        let pointer = store.pointer().await?;
        mac_key
            .resolve_latest(&listed, pointer.as_ref(), allow_unauthenticated)?
            .cloned()
            .ok_or(StoreError::Empty)?
    } else {
        store.manifest(name).await?
    };
    // A backup of another key is reported as such (rather than as a failed MAC).
    if manifest.key_id != key.key_id() {
        return Err(CryptoError::KeyMismatch {
            archive: manifest.key_id.clone(),
            key: key.key_id().to_string(),
        }
        .into());
    }
    mac_key.accept_named(&manifest, allow_unauthenticated)?;
    let authenticated = mac_key.check_manifest(&manifest) == Authenticity::Authentic;
    Ok((manifest, authenticated))
}

/// Where decrypted plaintext goes: a child's stdin, written by a blocking thread.
///
/// `pg_restore` reads its input 4 KiB at a time. Fed from the async runtime, every read that
/// frees pipe space woke the writer through epoll and a runtime thread for another small
/// write (tens of thousands of wake-ups per 100 MB, measurable next to a CPU-bound restore on
/// two cores). A blocking `write_all` of a whole chunk instead waits for space inside the
/// kernel. `tolerate_close` lets the child stop reading early (`pg_restore --list` reads only
/// the table of contents); decryption still runs to the end.
pub(super) struct Sink {
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    writer: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Sink {
    pub(super) fn new(
        stdin: tokio::process::ChildStdin,
        tolerate_close: bool,
    ) -> Result<Self, Error> {
        let fd = stdin
            .into_owned_fd()
            .map_err(io("taking pg_restore's stdin"))?;
        rustix::io::ioctl_fionbio(&fd, false)
            .map_err(|e| io("making pg_restore's stdin blocking")(e.into()))?;
        widen_pipe(&fd);
        let mut file = std::fs::File::from(fd);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        let writer = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            while let Some(buf) = rx.blocking_recv() {
                match file.write_all(&buf) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && tolerate_close => {
                        // Keep accepting (and discarding) so decryption can finish.
                        while rx.blocking_recv().is_some() {}
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(()) // `file` closes here: end of input for the child
        });
        Ok(Self {
            tx: Some(tx),
            writer,
        })
    }

    async fn write(&mut self, data: Vec<u8>) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        if tx.send(data).await.is_err() {
            // The writer stopped early; `finish` reports why.
            self.tx = None;
            return self.finish().await;
        }
        Ok(())
    }

    /// Closes the child's stdin and reports the writer's outcome.
    async fn finish(&mut self) -> Result<(), Error> {
        self.tx = None;
        match (&mut self.writer).await {
            Ok(Ok(())) => Ok(()),
            // The child's exit status explains why; reported by the caller.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Error::Io {
                what: "feeding pg_restore (it stopped reading)",
                source: e,
            }),
            Ok(Err(e)) => Err(io("feeding pg_restore")(e)),
            Err(join) => Err(io("feeding pg_restore")(std::io::Error::other(
                join.to_string(),
            ))),
        }
    }
}

/// Download, authenticate and decrypt an archive, checking size and SHA-256 against its manifest.
pub(super) async fn decrypt_archive(
    store: &Store,
    manifest: &Manifest,
    key: &BackupKey,
    mut sink: Sink,
) -> Result<(), Error> {
    if manifest.key_id != key.key_id() {
        return Err(CryptoError::KeyMismatch {
            archive: manifest.key_id.clone(),
            key: key.key_id().to_string(),
        }
        .into());
    }
    let (actual, mut stream) = store.download(manifest).await?;
    if actual != manifest.size {
        return Err(Error::SizeMismatch {
            expected: manifest.size,
            actual,
        });
    }
    let mut dec = StreamDecryptor::new(key);
    let mut hasher = Sha256::new();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        hasher.update(&piece);
        let mut plain = Vec::with_capacity(piece.len());
        dec.push(&piece, &mut plain)?;
        sink.write(plain).await?;
    }
    let mut plain = Vec::new();
    dec.finish(&mut plain)?;
    sink.write(plain).await?;
    if hex::encode(hasher.finalize()) != manifest.sha256 {
        return Err(Error::ChecksumMismatch);
    }
    sink.finish().await
}
