//! The encrypted archive format.
//!
//! ```text
//! header: magic "CADUBKUP" (8) | format version u8 (=1) | algorithm u8 (=1: AES-256-GCM STREAM-BE32)
//!         | plaintext chunk size u32 BE | nonce prefix (7) | key id length u8 | key id (ASCII)
//! body:   chunk_0 .. chunk_n, each AES-256-GCM(plaintext chunk) || 16-byte tag
//! ```
//!
//! Chunks use the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) as implemented by
//! the `aead` crate's `StreamBE32`: the nonce is `prefix || counter (u32 BE) || last-flag`, so
//! reordering, dropping, duplicating chunks or truncating the archive at any point fails
//! authentication. Every chunk carries the whole header as associated data, so the header (key id,
//! chunk size, version) cannot be altered either. All chunks but the last hold exactly `chunk size`
//! plaintext bytes; the last holds 0..=chunk size.

use aes_gcm::aead::stream::{DecryptorBE32, EncryptorBE32};
use aes_gcm::aead::KeyInit;
use aes_gcm::Aes256Gcm;
use rand::RngCore;

use crate::key::BackupKey;

pub const MAGIC: &[u8; 8] = b"CADUBKUP";
pub const FORMAT_VERSION: u8 = 1;
pub const ALG_AES256GCM_STREAM_BE32: u8 = 1;
/// Plaintext bytes per chunk written by this version.
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
/// Largest chunk size a reader accepts (bounds the reader's memory against a hostile header).
pub const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
pub const TAG_LEN: usize = 16;
const NONCE_PREFIX_LEN: usize = 7;
const FIXED_HEADER_LEN: usize = 8 + 1 + 1 + 4 + NONCE_PREFIX_LEN + 1;

/// Errors of the archive format. Messages never contain key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("not a Caduceus backup archive (bad magic)")]
    BadMagic,
    #[error("unsupported archive format version {0}")]
    UnsupportedVersion(u8),
    #[error("unsupported archive encryption algorithm {0}")]
    UnsupportedAlgorithm(u8),
    #[error("malformed archive header: {0}")]
    BadHeader(&'static str),
    #[error(
        "wrong key: the archive was encrypted with key {archive} but the key file holds {key}"
    )]
    KeyMismatch { archive: String, key: String },
    #[error("archive failed authentication at chunk {chunk}: it was tampered with, reordered or truncated, or the key is wrong")]
    Authentication { chunk: u64 },
    #[error("archive is truncated")]
    Truncated,
    #[error("archive is too long (more than 2^32 chunks)")]
    TooLong,
}

/// Parsed archive header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub chunk_size: u32,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub key_id: String,
}

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_HEADER_LEN + self.key_id.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.push(ALG_AES256GCM_STREAM_BE32);
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        // Key ids are validated to be 15 ASCII bytes; u8 length is ample.
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out
    }

    /// Parse a header from the start of `buf`. `Ok(None)` means more bytes are needed.
    pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, CryptoError> {
        let magic_len = buf.len().min(MAGIC.len());
        if buf[..magic_len] != MAGIC[..magic_len] {
            return Err(CryptoError::BadMagic);
        }
        if buf.len() < FIXED_HEADER_LEN {
            return Ok(None);
        }
        if buf[8] != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(buf[8]));
        }
        if buf[9] != ALG_AES256GCM_STREAM_BE32 {
            return Err(CryptoError::UnsupportedAlgorithm(buf[9]));
        }
        let chunk_size = u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]);
        if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
            return Err(CryptoError::BadHeader("chunk size out of range"));
        }
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        nonce_prefix.copy_from_slice(&buf[14..14 + NONCE_PREFIX_LEN]);
        let id_len = usize::from(buf[FIXED_HEADER_LEN - 1]);
        let total = FIXED_HEADER_LEN + id_len;
        if buf.len() < total {
            return Ok(None);
        }
        let key_id = std::str::from_utf8(&buf[FIXED_HEADER_LEN..total])
            .map_err(|_| CryptoError::BadHeader("key id is not UTF-8"))?;
        if !crate::key::valid_key_id(key_id) {
            return Err(CryptoError::BadHeader("invalid key id"));
        }
        Ok(Some((
            Header {
                chunk_size,
                nonce_prefix,
                key_id: key_id.to_string(),
            },
            total,
        )))
    }
}

fn cipher(key: &BackupKey) -> Aes256Gcm {
    Aes256Gcm::new(key.bytes().into())
}

/// Encrypts a plaintext stream chunk by chunk, in place.
pub struct StreamEncryptor {
    inner: EncryptorBE32<Aes256Gcm>,
    header: Vec<u8>,
    chunk_size: usize,
}

impl StreamEncryptor {
    /// A new encryptor with a random nonce prefix.
    pub fn new(key: &BackupKey, chunk_size: u32) -> Self {
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        rand::rng().fill_bytes(&mut nonce_prefix);
        let header = Header {
            chunk_size: chunk_size.clamp(1, MAX_CHUNK_SIZE),
            nonce_prefix,
            key_id: key.key_id().to_string(),
        };
        let inner = EncryptorBE32::from_aead(cipher(key), (&nonce_prefix).into());
        Self {
            inner,
            chunk_size: header.chunk_size as usize,
            header: header.encode(),
        }
    }

    /// The encoded header: the first bytes of the archive.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Plaintext bytes per (non-final) chunk.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Encrypt a full, non-final chunk in place (appends the tag).
    pub fn encrypt_chunk(&mut self, buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        if buf.len() != self.chunk_size {
            return Err(CryptoError::BadHeader("non-final chunk must be full"));
        }
        self.inner
            .encrypt_next_in_place(&self.header, buf)
            .map_err(|_| CryptoError::TooLong)
    }

    /// Encrypt the final chunk (0..=chunk size bytes) in place and end the stream.
    pub fn encrypt_last(self, buf: &mut Vec<u8>) -> Result<(), CryptoError> {
        if buf.len() > self.chunk_size {
            return Err(CryptoError::BadHeader("final chunk larger than chunk size"));
        }
        self.inner
            .encrypt_last_in_place(&self.header, buf)
            .map_err(|_| CryptoError::TooLong)
    }
}

enum DecState {
    Header,
    Body {
        inner: Box<DecryptorBE32<Aes256Gcm>>,
        header: Vec<u8>,
        ct_chunk: usize,
    },
    Done,
}

/// Decrypts an archive pushed in arbitrary pieces; plaintext is released only after its chunk
/// authenticated. Memory use is bounded by about two ciphertext chunks plus the pushed piece.
pub struct StreamDecryptor {
    cipher: Option<Aes256Gcm>,
    key_id: String,
    state: DecState,
    buf: Vec<u8>,
    scratch: Vec<u8>,
    chunk: u64,
}

impl StreamDecryptor {
    pub fn new(key: &BackupKey) -> Self {
        Self {
            cipher: Some(cipher(key)),
            key_id: key.key_id().to_string(),
            state: DecState::Header,
            buf: Vec::new(),
            scratch: Vec::new(),
            chunk: 0,
        }
    }

    /// Feed ciphertext; authenticated plaintext is appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.buf.extend_from_slice(data);
        if let DecState::Header = self.state {
            let Some((header, len)) = Header::parse(&self.buf)? else {
                return Ok(());
            };
            if header.key_id != self.key_id {
                return Err(CryptoError::KeyMismatch {
                    archive: header.key_id,
                    key: self.key_id.clone(),
                });
            }
            let cipher = self
                .cipher
                .take()
                .ok_or(CryptoError::BadHeader("header seen twice"))?;
            let inner = Box::new(DecryptorBE32::from_aead(
                cipher,
                (&header.nonce_prefix).into(),
            ));
            let header_bytes = self.buf[..len].to_vec();
            self.buf.drain(..len);
            self.state = DecState::Body {
                inner,
                header: header_bytes,
                ct_chunk: header.chunk_size as usize + TAG_LEN,
            };
        }
        match &mut self.state {
            DecState::Body {
                inner,
                header,
                ct_chunk,
            } => {
                let ct_chunk = *ct_chunk;
                let mut offset = 0;
                // Strictly more than one chunk buffered: the first one cannot be the last.
                while self.buf.len() - offset > ct_chunk {
                    self.scratch.clear();
                    self.scratch
                        .extend_from_slice(&self.buf[offset..offset + ct_chunk]);
                    inner
                        .decrypt_next_in_place(header, &mut self.scratch)
                        .map_err(|_| CryptoError::Authentication { chunk: self.chunk })?;
                    out.extend_from_slice(&self.scratch);
                    offset += ct_chunk;
                    self.chunk += 1;
                }
                self.buf.drain(..offset);
                Ok(())
            }
            DecState::Done => Err(CryptoError::BadHeader("data after end of archive")),
            DecState::Header => Ok(()),
        }
    }

    /// End of input: authenticate the final chunk and append its plaintext to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        match std::mem::replace(&mut self.state, DecState::Done) {
            // Input ended inside (or before) the header.
            DecState::Header => Err(CryptoError::Truncated),
            DecState::Body { inner, header, .. } => {
                if self.buf.len() < TAG_LEN {
                    return Err(CryptoError::Truncated);
                }
                let mut piece = std::mem::take(&mut self.buf);
                inner
                    .decrypt_last_in_place(&header, &mut piece)
                    .map_err(|_| CryptoError::Authentication { chunk: self.chunk })?;
                out.extend_from_slice(&piece);
                Ok(())
            }
            DecState::Done => Err(CryptoError::BadHeader("archive finished twice")),
        }
    }
}

/// Encrypt a whole buffer (tests and small payloads).
pub fn encrypt_all(
    key: &BackupKey,
    chunk_size: u32,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut enc = StreamEncryptor::new(key, chunk_size);
    let mut out = enc.header().to_vec();
    let cs = enc.chunk_size();
    let mut chunks = plaintext.chunks(cs).peekable();
    let mut last = Vec::new();
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            last = chunk.to_vec();
            break;
        }
        let mut buf = chunk.to_vec();
        enc.encrypt_chunk(&mut buf)?;
        out.extend_from_slice(&buf);
    }
    enc.encrypt_last(&mut last)?;
    out.extend_from_slice(&last);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decrypt_in_pieces(
        key: &BackupKey,
        data: &[u8],
        piece: usize,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut dec = StreamDecryptor::new(key);
        let mut out = Vec::new();
        for p in data.chunks(piece.max(1)) {
            dec.push(p, &mut out)?;
        }
        dec.finish(&mut out)?;
        Ok(out)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn round_trips_every_boundary_case() {
        let key = BackupKey::generate();
        for len in [0usize, 1, 63, 64, 65, 127, 128, 129, 1000] {
            let plain = sample(len);
            let ct = encrypt_all(&key, 64, &plain).expect("encrypt");
            assert_eq!(
                ct.len(),
                37 + len + TAG_LEN * len.div_ceil(64).max(1),
                "len {len}"
            );
            for piece in [1usize, 7, 64, 80, 4096] {
                assert_eq!(
                    decrypt_in_pieces(&key, &ct, piece).expect("decrypt"),
                    plain,
                    "len {len} piece {piece}"
                );
            }
        }
    }

    #[test]
    fn ciphertext_differs_between_runs_and_from_plaintext() {
        let key = BackupKey::generate();
        let plain = sample(500);
        let a = encrypt_all(&key, 64, &plain).expect("encrypt");
        let b = encrypt_all(&key, 64, &plain).expect("encrypt");
        assert_ne!(a, b, "nonce prefix must be random");
        assert!(!a.windows(32).any(|w| w == &plain[..32]));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let key = BackupKey::generate();
        let ct = encrypt_all(&key, 64, &sample(300)).expect("encrypt");
        let header_len = Header::parse(&ct).expect("parse").expect("complete").1;
        for pos in [
            0,
            9,
            12,
            15,
            header_len - 1,
            header_len,
            header_len + 70,
            ct.len() - 1,
        ] {
            let mut bad = ct.clone();
            bad[pos] ^= 0x01;
            assert!(
                decrypt_in_pieces(&key, &bad, 50).is_err(),
                "flip at {pos} not detected"
            );
        }
    }

    #[test]
    fn truncation_is_detected_at_every_length() {
        let key = BackupKey::generate();
        let ct = encrypt_all(&key, 64, &sample(256)).expect("encrypt");
        for cut in 0..ct.len() {
            assert!(
                decrypt_in_pieces(&key, &ct[..cut], 33).is_err(),
                "truncation to {cut} bytes not detected"
            );
        }
    }

    #[test]
    fn truncation_at_a_chunk_boundary_is_an_authentication_error() {
        let key = BackupKey::generate();
        let ct = encrypt_all(&key, 64, &sample(256)).expect("encrypt");
        let header_len = Header::parse(&ct).expect("parse").expect("complete").1;
        let cut = header_len + 2 * (64 + TAG_LEN);
        assert_eq!(
            decrypt_in_pieces(&key, &ct[..cut], 1000),
            Err(CryptoError::Authentication { chunk: 1 })
        );
    }

    #[test]
    fn reordered_and_appended_chunks_are_detected() {
        let key = BackupKey::generate();
        let ct = encrypt_all(&key, 64, &sample(300)).expect("encrypt");
        let h = Header::parse(&ct).expect("parse").expect("complete").1;
        let c = 64 + TAG_LEN;
        let mut swapped = ct[..h].to_vec();
        swapped.extend_from_slice(&ct[h + c..h + 2 * c]);
        swapped.extend_from_slice(&ct[h..h + c]);
        swapped.extend_from_slice(&ct[h + 2 * c..]);
        assert!(decrypt_in_pieces(&key, &swapped, 100).is_err());
        let mut appended = ct.clone();
        appended.extend_from_slice(&ct[h..h + c]);
        assert!(decrypt_in_pieces(&key, &appended, 100).is_err());
    }

    #[test]
    fn wrong_key_is_refused() {
        let key = BackupKey::generate();
        let other = BackupKey::generate();
        let ct = encrypt_all(&key, 64, &sample(100)).expect("encrypt");
        let err = decrypt_in_pieces(&other, &ct, 100).expect_err("must fail");
        assert!(matches!(err, CryptoError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains(key.key_id()));
        // Same key id, different key bytes: authentication fails.
        let json = key.to_json();
        let forged = json.replace(
            &serde_json::from_str::<serde_json::Value>(&json).expect("json")["key"]
                .as_str()
                .expect("key")
                .to_string(),
            &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]),
        );
        let same_id = BackupKey::from_json(&forged).expect("parse");
        assert_eq!(
            decrypt_in_pieces(&same_id, &ct, 100),
            Err(CryptoError::Authentication { chunk: 0 })
        );
    }

    #[test]
    fn garbage_is_not_an_archive() {
        let key = BackupKey::generate();
        assert_eq!(
            decrypt_in_pieces(&key, b"PGDMP\x01\x0e", 3),
            Err(CryptoError::BadMagic)
        );
        assert_eq!(decrypt_in_pieces(&key, b"", 3), Err(CryptoError::Truncated));
        let mut ct = encrypt_all(&key, 64, b"x").expect("encrypt");
        ct[8] = 9;
        assert_eq!(
            decrypt_in_pieces(&key, &ct, 3),
            Err(CryptoError::UnsupportedVersion(9))
        );
    }
}
