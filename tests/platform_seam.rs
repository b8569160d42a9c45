//! The platform seam, checked on the source: what differs by OS lives in
//! `src/platform/` (and the VM-side `src/helper/`, Linux by nature), and
//! the data plane picks its per-OS file at a `mod` line. Anywhere else a
//! `target_os` condition is a macOS build waiting to break, since no Mac
//! runs our tests; and the daemon and operator commands reach netlink or
//! the `route`/`ifconfig` commands only through `platform`.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            (rel, fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// `target_os` outside `platform/` and `helper/` only as a data-plane file
/// choice: `#[cfg(target_os = …)]` directly above `#[path = "…"]`.
#[test]
fn target_os_appears_only_at_the_seam() {
    let mut stray = Vec::new();
    let mut seen_platform = false;
    for (path, text) in sources() {
        if path.starts_with("src/platform/") {
            seen_platform |= text.contains("target_os");
            continue;
        }
        if path.starts_with("src/helper/") {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if !l.contains("target_os") {
                continue;
            }
            let mod_line = path.starts_with("src/tunnel/")
                && l.trim_start().starts_with("#[cfg(target_os")
                && lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("#[path"));
            if !mod_line {
                stray.push(format!("{path}:{}: {}", i + 1, l.trim()));
            }
        }
    }
    assert!(seen_platform, "src/platform/ should hold the per-OS choice");
    assert!(
        stray.is_empty(),
        "per-OS code outside src/platform/:\n{}",
        stray.join("\n")
    );
}

/// The daemon, the operator commands and `main` go through `platform` for
/// interfaces and routes, never to netlink or the macOS commands directly.
#[test]
fn host_commands_use_the_platform_boundary() {
    let users = [
        "src/main.rs",
        "src/doctor.rs",
        "src/down.rs",
        "src/status.rs",
        "src/up/",
    ];
    let forbidden = [
        "rtnetlink",
        "netlink_",
        "platform::netlink",
        "NetlinkRouter",
        "MacRouter",
        "\"route\"",
        "\"ifconfig\"",
    ];
    let mut found = Vec::new();
    for (path, text) in sources() {
        if !users.iter().any(|u| path.starts_with(u)) {
            continue;
        }
        for (i, l) in text.lines().enumerate() {
            for f in forbidden {
                if l.contains(f) {
                    found.push(format!("{path}:{}: {}", i + 1, l.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "OS calls past the platform boundary:\n{}",
        found.join("\n")
    );
}
