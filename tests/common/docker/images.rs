//! The two images the Docker tests run: the helper, built from exactly the
//! sources under test, and a busybox web server; built when missing or
//! stale, old helper images removed.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::commands::docker_try;
use crate::cargo::{package_version, repo_root, target_tmpdir};
use crate::names::TempDir;
use crate::process::run_timeout;

pub const BUSYBOX_IMAGE: &str = "netconnect-test-busybox:1";
/// The stand-in Kubernetes node (`tests/images/node`), on top of busybox.
pub const NODE_IMAGE: &str = "netconnect-test-node:1";
/// Bound for building the helper image (a static release build).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// `netconnect-helper:<crate version>-e2e-<source fingerprint>`: the
/// helper built from exactly these sources. A tag per fingerprint, not
/// the release tag, so that work trees testing different sources on one
/// engine do not keep replacing each other's image (a 7-minute build).
pub fn helper_image() -> String {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        format!(
            "netconnect-helper:{}-e2e-{}",
            package_version(),
            &helper_fingerprint()[..12]
        )
    })
    .clone()
}

/// What the helper image is built from.
fn helper_fingerprint() -> String {
    static FP: OnceLock<String> = OnceLock::new();
    FP.get_or_init(|| {
        source_fingerprint(
            repo_root(),
            &["src", "Cargo.toml", "Cargo.lock", "helper-image"],
        )
    })
    .clone()
}

fn source_fingerprint(root: &Path, rels: &[&str]) -> String {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out);
                }
            }
        } else if p.is_file() {
            out.push(p.to_path_buf());
        }
    }
    let mut files = Vec::new();
    for r in rels {
        walk(&root.join(r), &mut files);
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(
            f.strip_prefix(root)
                .unwrap_or(&f)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update([0]);
        h.update(fs::read(&f).unwrap_or_default());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

fn image_id(tag: &str) -> Option<String> {
    docker_try(&["image", "inspect", "--format", "{{.Id}}", tag])
        .ok()
        .map(|s| s.trim().to_string())
}

/// Builds `tag` with `build` unless the stamp says the image was built
/// from exactly these sources (so the helper runs the code under test).
fn ensure_image(tag: &str, fingerprint: &str, build: impl FnOnce() -> Result<(), String>) {
    let tmpdir = target_tmpdir();
    let stamp = tmpdir.join(format!("docker-e2e-{}.stamp", tag.replace([':', '/'], "_")));
    let current = image_id(tag);
    if let Some(id) = &current {
        if fs::read_to_string(&stamp).ok().as_deref() == Some(&format!("{id} {fingerprint}")) {
            return;
        }
    }
    eprintln!(
        "docker e2e: building {tag} ({})",
        if current.is_some() {
            "sources changed or unstamped"
        } else {
            "missing"
        }
    );
    let t0 = Instant::now();
    if let Err(e) = build() {
        panic!("building test image {tag} failed: {e}");
    }
    let id = image_id(tag).unwrap_or_else(|| panic!("{tag} still missing after its build"));
    let _ = fs::create_dir_all(&tmpdir);
    let _ = fs::write(&stamp, format!("{id} {fingerprint}"));
    eprintln!("docker e2e: built {tag} in {:?}", t0.elapsed());
}

/// A static busybox on this machine (Debian: busybox-static).
fn static_busybox() -> Result<PathBuf, String> {
    for p in ["/bin/busybox", "/usr/bin/busybox"] {
        let Ok(b) = fs::read(p) else { continue };
        // ELF64: no PT_INTERP program header means statically linked.
        if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
            continue;
        }
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
        let phoff = u64::from_le_bytes(b[0x20..0x28].try_into().unwrap()) as usize;
        let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
        let dynamic = (0..phnum).any(|i| {
            let o = phoff + i * phentsize;
            o + 4 <= b.len() && u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) == 3
        });
        if !dynamic {
            return Ok(PathBuf::from(p));
        }
    }
    Err("no static busybox: apt-get install -y busybox-static".into())
}

/// The helper image (from `helper-image/build.sh`) and the busybox test
/// image (from `tests/images/busybox`), built when missing or stale.
/// Callers hold the lock; a process checks once.
pub fn ensure_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let root = repo_root();
        let fp = helper_fingerprint();
        ensure_image(&helper_image(), &fp, || {
            let out = run_timeout(
                Command::new("bash")
                    .arg(root.join("helper-image/build.sh"))
                    .arg(helper_image())
                    .current_dir(root),
                BUILD_TIMEOUT,
            )?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "helper-image/build.sh: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        });
        remove_stale_helper_images();
        let busybox = static_busybox().unwrap_or_else(|e| panic!("{e}"));
        let dockerfile = root.join("tests/images/busybox/Dockerfile");
        let mut h = Sha256::new();
        h.update(fs::read(&dockerfile).unwrap_or_else(|e| panic!("{}: {e}", dockerfile.display())));
        h.update(fs::read(&busybox).unwrap());
        let fp = hex::encode(h.finalize());
        ensure_image(BUSYBOX_IMAGE, &fp, || {
            let ctx = TempDir::new("busybox-ctx");
            fs::copy(&dockerfile, ctx.join("Dockerfile")).map_err(|e| e.to_string())?;
            fs::copy(&busybox, ctx.join("busybox")).map_err(|e| e.to_string())?;
            let out = run_timeout(
                Command::new("docker")
                    .args(["build", "--quiet", "-t", BUSYBOX_IMAGE])
                    .arg(ctx.path())
                    .env("DOCKER_BUILDKIT", "0"),
                Duration::from_secs(300),
            )?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        });
    });
}

/// The node image (after [`ensure_images`]), built when missing or stale:
/// busybox's image plus this machine's iptables and dnsmasq.
pub fn ensure_node_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        ensure_images();
        let root = repo_root();
        let dir = root.join("tests/images/node");
        let mut h = Sha256::new();
        for f in [
            dir.join("Dockerfile"),
            dir.join("rootfs.sh"),
            "/usr/sbin/xtables-nft-multi".into(),
            "/usr/sbin/dnsmasq".into(),
        ] {
            h.update(fs::read(&f).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (run scripts/setup.sh: iptables, dnsmasq-base)",
                    f.display()
                )
            }));
        }
        h.update(image_id(BUSYBOX_IMAGE).unwrap_or_default());
        let fp = hex::encode(h.finalize());
        ensure_image(NODE_IMAGE, &fp, || {
            let ctx = TempDir::new("node-ctx");
            fs::copy(dir.join("Dockerfile"), ctx.join("Dockerfile")).map_err(|e| e.to_string())?;
            let out = run_timeout(
                Command::new("bash")
                    .arg(dir.join("rootfs.sh"))
                    .arg(ctx.join("rootfs")),
                Duration::from_secs(120),
            )?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
            }
            let out = run_timeout(
                Command::new("docker")
                    .args(["build", "--quiet", "-t", NODE_IMAGE])
                    .arg(ctx.path())
                    .env("DOCKER_BUILDKIT", "0"),
                Duration::from_secs(300),
            )?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        });
    });
}

/// Where each run notes the e2e helper image it uses (the file's mtime).
const IMAGE_STAMPS: &str = "/var/tmp/netconnect-e2e-images";

/// Each change to the sources gets its own e2e helper image; without
/// this they pile up in the engine (a few MB each). An image goes when
/// it was built more than two hours ago and no run has noted using it
/// for two hours: every test process notes its own at start, and a run
/// (CI's limit is 90 min) outlives neither.
fn remove_stale_helper_images() {
    let stamp = |image: &str| Path::new(IMAGE_STAMPS).join(image.replace([':', '/'], "_"));
    let _ = fs::create_dir_all(IMAGE_STAMPS);
    let _ = File::create(stamp(&helper_image()));
    let used_lately = |image: &str| {
        fs::metadata(stamp(image))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(2 * 3600))
    };
    let Ok(listing) = docker_try(&[
        "images",
        "--filter",
        "reference=netconnect-helper:*-e2e-*",
        "--format",
        "{{.Repository}}:{{.Tag}}\t{{.CreatedSince}}",
    ]) else {
        return;
    };
    let current = helper_image();
    for line in listing.lines() {
        let Some((image, since)) = line.split_once('\t') else {
            continue;
        };
        if image != current
            && created_hours_ago(since).is_some_and(|h| h >= 2)
            && !used_lately(image)
        {
            let _ = docker_try(&["rmi", image]);
            let _ = fs::remove_file(stamp(image));
        }
    }
}

/// Docker's "CreatedSince" ("45 minutes ago", "3 hours ago", "2 days
/// ago", "About an hour ago") in whole hours.
fn created_hours_ago(since: &str) -> Option<u64> {
    let mut words = since.split_whitespace();
    let n = match words.next()? {
        "About" | "an" | "a" => 1,
        w => w.parse().ok()?,
    };
    let unit = words.find(|w| !matches!(*w, "an" | "a"))?;
    let hours = match unit.trim_end_matches('s') {
        "second" | "minute" => 0,
        "hour" => 1,
        "day" => 24,
        "week" => 24 * 7,
        "month" => 24 * 30,
        "year" => 24 * 365,
        _ => return None,
    };
    Some(n * hours)
}
