//! GitHub's `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the raw body.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The webhook secret. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(s: impl Into<Vec<u8>>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The `X-Hub-Signature-256` value GitHub would send for `body`.
pub fn sign(secret: &Secret, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// True when `header` is the signature of `body`. The comparison takes the same time wherever the
/// first difference is.
pub fn verify(secret: &Secret, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published test vector ("Testing the webhook payload validation").
    #[test]
    fn github_documented_test_vector() {
        let secret = Secret::new("It's a Secret to Everybody");
        let want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(&secret, b"Hello, World!"), want);
        assert!(verify(&secret, b"Hello, World!", want));
    }

    #[test]
    fn wrong_secret_body_or_shape_fails() {
        let secret = Secret::new("It's a Secret to Everybody");
        let good = sign(&secret, b"Hello, World!");
        assert!(!verify(&Secret::new("other"), b"Hello, World!", &good));
        assert!(!verify(&secret, b"Hello, World?", &good));
        assert!(!verify(
            &secret,
            b"Hello, World!",
            good.trim_start_matches("sha256=")
        ));
        assert!(!verify(&secret, b"Hello, World!", "sha256=zz"));
        assert!(!verify(&secret, b"Hello, World!", ""));
    }

    #[test]
    fn secret_never_prints() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }
}
