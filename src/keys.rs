//! WireGuard keys: 32-byte values that travel as base64 (what `wg genkey`
//! prints and users paste) or lowercase hex (what the UAPI socket speaks).
//!
//! A [`Key`] never prints itself: `Debug` shows only that it is redacted, so a
//! stray `?config` in a log line cannot leak a private or preshared key.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use zeroize::Zeroize;

/// Why a key could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a WireGuard key is 64 hex characters, got {0} characters")]
    HexLength(usize),
    #[error("a WireGuard key is 44 base64 characters ending in '=', got {0} characters")]
    Base64Length(usize),
    #[error("the key is not valid {0}")]
    Encoding(&'static str),
}

/// A 32-byte Curve25519 key or preshared key. Zeroed on drop.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    pub const LEN: usize = 32;

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The all-zero key, which the UAPI uses to mean "remove this key".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// A fresh private key from the OS RNG, clamped as X25519 wants it.
    pub fn generate_private() -> Self {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
        Key(secret.to_bytes())
    }

    /// The public key that belongs to this private key.
    pub fn public_key(&self) -> Key {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        Key(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }

    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        if s.len() != 64 {
            return Err(KeyError::HexLength(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::Encoding("hex"))?;
        Ok(Key(out))
    }

    pub fn from_base64(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.len() != 44 {
            return Err(KeyError::Base64Length(s.len()));
        }
        let mut out = [0u8; 32];
        match BASE64.decode_slice(s, &mut out) {
            Ok(32) => Ok(Key(out)),
            _ => Err(KeyError::Encoding("base64")),
        }
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

/// A public key is not secret, and logs want to name peers by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<&Key> for PublicKey {
    fn from(k: &Key) -> Self {
        PublicKey(*k.as_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 section 6.1 test vector: Alice's private and public key.
    const ALICE_PRIV: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUB: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    #[test]
    fn public_key_matches_rfc7748_vector() {
        let k = Key::from_hex(ALICE_PRIV).unwrap();
        assert_eq!(k.public_key().to_hex(), ALICE_PUB);
    }

    #[test]
    fn hex_and_base64_round_trip() {
        let k = Key::generate_private();
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
    }

    #[test]
    fn bad_encodings_are_rejected() {
        assert_eq!(Key::from_hex("abc"), Err(KeyError::HexLength(3)));
        assert_eq!(
            Key::from_hex(&"zz".repeat(32)),
            Err(KeyError::Encoding("hex"))
        );
        assert_eq!(Key::from_base64("abc"), Err(KeyError::Base64Length(3)));
        assert_eq!(
            Key::from_base64(&"!".repeat(44)),
            Err(KeyError::Encoding("base64"))
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = Key::from_hex(ALICE_PRIV).unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains("77076d"), "{shown}");
        assert!(!shown.contains(&k.to_base64()), "{shown}");
    }
}
