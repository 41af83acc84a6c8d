//! The key that seals what Hermes stores secret, and sealing with it.
//!
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): a random 192-bit nonce per value, so
//! values need no counter, and the value's place (its key in the store) as associated data, so a
//! sealed value copied to another place does not open there.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use crate::AccessError;

/// The file the key is kept in, in the data dir, when `HERMES_SECRET_KEY` is not set.
pub const KEY_FILE: &str = "secret.key";

/// The secret key. Its `Debug` prints `***`.
#[derive(Clone)]
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// A key of 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AccessError> {
        if bytes.len() != 32 {
            return Err(AccessError::Key(format!(
                "a key is 32 bytes, this one has {}",
                bytes.len()
            )));
        }
        Ok(Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(bytes)),
        })
    }

    /// A key written as 64 hex digits or as base64 (standard or URL-safe) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, AccessError> {
        let t = text.trim();
        let bytes = hex::decode(t)
            .ok()
            .or_else(|| STANDARD.decode(t).ok())
            .or_else(|| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')).ok())
            .ok_or_else(|| AccessError::Key("not 64 hex digits or base64 of 32 bytes".into()))?;
        Self::from_bytes(&bytes)
    }

    /// The key of `HERMES_SECRET_KEY` (`configured`) when set, else the key file of the data dir,
    /// made once (32 random bytes, mode 0600) when there is none.
    pub fn load(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> Result<(Self, KeySource), AccessError> {
        if let Some(text) = configured.filter(|t| !t.trim().is_empty()) {
            return Ok((Self::parse(text)?, KeySource::Configured));
        }
        let path = data_dir.join(KEY_FILE);
        let io = |e: std::io::Error| AccessError::Key(format!("{}: {e}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((Self::parse(&text)?, KeySource::File(path))),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            Err(_) => {}
        }
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(hex::encode(key).as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok((Self::from_bytes(&key)?, KeySource::Made(path)))
            }
            // Another process made it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).map_err(io)?;
                Ok((Self::parse(&text)?, KeySource::File(path)))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// `plaintext` sealed for the place `context`: base64 of nonce and ciphertext.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any message shorter than 256 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// What [`seal`](Self::seal) sealed for `context`; an error when it was sealed with another
    /// key, for another place, or changed since.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, AccessError> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|e| AccessError::Sealed(format!("not base64: {e}")))?;
        if bytes.len() < 24 + 16 {
            return Err(AccessError::Sealed("too short".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| AccessError::Sealed(format!("does not open for {context}")))
    }
}

/// Where the key came from, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    File(PathBuf),
    Made(PathBuf),
}

/// `n` random bytes as URL-safe base64: session ids, webhook secrets.
pub fn random_token(n: usize) -> String {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.extend_from_slice(&XChaCha20Poly1305::generate_key(&mut OsRng));
    }
    out.truncate(n);
    URL_SAFE_NO_PAD.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_with_its_key_in_its_place_and_unchanged() {
        let key = SecretKey::from_bytes(&[7; 32]).expect("key");
        let sealed = key.seal(b"webhook secret", "hook:42");
        assert_ne!(
            sealed,
            key.seal(b"webhook secret", "hook:42"),
            "fresh nonce"
        );
        assert!(!sealed.contains("webhook"));
        assert_eq!(
            key.open(&sealed, "hook:42").expect("opens"),
            b"webhook secret"
        );
        assert!(key.open(&sealed, "hook:43").is_err(), "another place");
        let other = SecretKey::from_bytes(&[8; 32]).expect("key");
        assert!(other.open(&sealed, "hook:42").is_err(), "another key");
        // Tampered: one bit of the ciphertext flipped.
        let mut bytes = STANDARD.decode(&sealed).expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(
            key.open(&STANDARD.encode(&bytes), "hook:42").is_err(),
            "tampered"
        );
        assert!(key.open("short", "hook:42").is_err());
    }

    #[test]
    fn the_key_is_configured_or_made_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, source) = SecretKey::load(None, dir.path()).expect("made");
        assert!(matches!(source, KeySource::Made(_)));
        let (b, source) = SecretKey::load(None, dir.path()).expect("read");
        assert!(matches!(source, KeySource::File(_)));
        assert_eq!(b.open(&a.seal(b"x", "c"), "c").expect("same key"), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let hex_key = "11".repeat(32);
        let (c, source) = SecretKey::load(Some(&hex_key), dir.path()).expect("configured");
        assert_eq!(source, KeySource::Configured);
        assert!(c.open(&a.seal(b"x", "c"), "c").is_err());
        assert!(SecretKey::parse("too short").is_err());
        assert_eq!(format!("{c:?}"), "SecretKey(***)");
        assert_eq!(random_token(32).len(), 43);
        assert_ne!(random_token(32), random_token(32));
    }
}
