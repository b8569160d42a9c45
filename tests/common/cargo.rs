//! What Cargo tells an integration test at compile time but not a library
//! it depends on (`CARGO_BIN_EXE_netconnect`, `CARGO_TARGET_TMPDIR`, the
//! package's directory and version), found here at run time instead, from
//! where Cargo puts a test executable: `<target>[/<triple>]/<profile>/deps/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The test executable; Cargo runs it where it built it.
fn current_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|e| panic!("the test executable's path: {e}"))
}

/// Path of the netconnect binary built by cargo for these tests: beside
/// the test executable's `deps/` (nextest also says it at run time).
pub fn netconnect_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CARGO_BIN_EXE_netconnect") {
            return p.to_string_lossy().into_owned();
        }
        let exe = current_exe();
        let bin = exe
            .ancestors()
            .nth(2)
            .map(|profile| profile.join("netconnect"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "no netconnect binary beside the deps/ of {}: run the tests with cargo",
                    exe.display()
                )
            });
        bin.to_string_lossy().into_owned()
    })
}

/// The repository: this crate is its `tests/common`.
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/common has two parents")
}

/// Cargo's `CARGO_TARGET_TMPDIR`, `<target>/tmp`: it exists once Cargo has
/// built an integration test.
pub(crate) fn target_tmpdir() -> PathBuf {
    let exe = current_exe();
    let mut above_profile = exe.ancestors().skip(3);
    let target = above_profile
        .clone()
        .find(|d| d.join("tmp").is_dir())
        .or_else(|| above_profile.next())
        .unwrap_or_else(|| panic!("{} is not in a Cargo target directory", exe.display()));
    target.join("tmp")
}

/// netconnect's version (`CARGO_PKG_VERSION` of the package under test).
pub(crate) fn package_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let manifest = repo_root().join("Cargo.toml");
        let text =
            fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        let doc: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
        doc.get("package")
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("{} has no package.version", manifest.display()))
            .to_string()
    })
}
