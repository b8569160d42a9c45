//! Names no other test (in this process or another) uses at the same time,
//! and temporary directories removed on drop.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) fn next_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut s = Vec::new();
    while n > 0 {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}

/// A fresh interface-name stem, unique across concurrently running processes
/// (full pid in base36) and calls: `nct<pid36>x<n36>`, at most 14 chars, so
/// appending one side letter (`a`/`b`) stays within IFNAMSIZ-1 = 15.
pub fn unique_ifname_stem() -> String {
    format!(
        "nct{}x{}",
        base36(std::process::id() as u64),
        base36(next_id())
    )
}

/// Returns a pair of unique interface names `(<stem>a, <stem>b)`.
pub fn unique_ifnames() -> (String, String) {
    let s = unique_ifname_stem();
    (format!("{s}a"), format!("{s}b"))
}

/// A temporary directory (mode 0700 unless widened), removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "netconnect-e2e-{}-{}-{tag}",
            std::process::id(),
            next_id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
