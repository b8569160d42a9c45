//! WireGuard keys: made by `wg genkey`/`wg pubkey`, the private one kept in
//! memory and a 0600 file only, and converted between base64 (`wg`) and hex
//! (UAPI).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::names::TempDir;
use crate::prereqs::require_prereqs;
use crate::process::{cmd, run_ok, run_timeout_input, CMD_TIMEOUT};

/// A WireGuard key pair. The private key lives only in memory and in a 0600
/// file (`key_file`), never on a command line. `Debug` does not show it.
pub struct KeyPair {
    private_b64: String,
    pub public: String,
    pub key_file: PathBuf,
    _dir: TempDir,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// `wg genkey`
pub fn wg_genkey() -> String {
    require_prereqs();
    run_ok(Command::new("wg").arg("genkey")).trim().to_string()
}

/// `wg pubkey` (private key on stdin).
pub fn wg_pubkey(private_b64: &str) -> String {
    let out = run_timeout_input(
        &mut cmd(&["wg", "pubkey"]),
        Some(format!("{private_b64}\n").as_bytes()),
        CMD_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "wg pubkey failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes `content` to a new file with mode 0600.
pub fn write_private_file(path: &Path, content: &str) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(content.as_bytes()).unwrap();
    f.write_all(b"\n").unwrap();
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        let private_b64 = wg_genkey();
        let public = wg_pubkey(&private_b64);
        let dir = TempDir::new("key");
        let key_file = dir.join("private.key");
        write_private_file(&key_file, &private_b64);
        KeyPair {
            private_b64,
            public,
            key_file,
            _dir: dir,
        }
    }

    /// Private key as the lowercase hex used by the UAPI.
    pub fn private_hex(&self) -> String {
        b64_to_hex(&self.private_b64)
    }

    pub fn public_hex(&self) -> String {
        b64_to_hex(&self.public)
    }

    pub fn key_file_str(&self) -> &str {
        self.key_file.to_str().unwrap()
    }
}

/// Base64 WireGuard key → 64 lowercase hex chars (UAPI form).
pub fn b64_to_hex(b64: &str) -> String {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_else(|e| panic!("bad base64 key: {e}"));
    assert_eq!(raw.len(), 32, "key is not 32 bytes");
    hex::encode(raw)
}

/// UAPI hex key → base64 (as printed by `wg`).
pub fn hex_to_b64(h: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(hex::decode(h).expect("bad hex key"))
}
