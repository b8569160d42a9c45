//! The release, checked as users get it: what `scripts/release.sh` writes.
//!
//! - the macOS binary is one fat Mach-O with exactly an arm64 and an x86_64
//!   slice, each an executable for macOS 11 or newer (read with `object`);
//! - each helper image archive loads into Docker as an image of its
//!   architecture under the tag `up` looks for, and holds a static Linux
//!   binary of that architecture, and Debian's iptables of that
//!   architecture with every library it needs;
//! - SHA256SUMS matches the files; each tarball holds exactly what the
//!   Homebrew formula installs, where `up` looks for the helper archive;
//! - the generated formula is the committed one with each sha256 set to the
//!   checksum of the file its url names.
//!
//! The release comes from `NETCONNECT_DIST` when set (CI makes it once with
//! `scripts/release.sh` in its release stage and points here), else from
//! running `scripts/release.sh target/release-test-dist` now (warm, the
//! builds are cached). Under CI=true a missing prerequisite fails; outside
//! CI it skips with what to install.

// A release is made and checked on Linux; on macOS this builds to nothing.
#![cfg(target_os = "linux")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use object::macho;
use object::read::macho::{FatArch, MachHeader, MachOFatFile32, MachOFile64};
use object::{Architecture, Endianness, Object};
use sha2::{Digest, Sha256};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Mac architecture (tarball name) -> its Docker VM's architecture.
const MACS: [(&str, &str); 2] = [("arm64", "arm64"), ("x86_64", "amd64")];
/// The lock every Docker test of this repository holds
/// (tests/common/docker/session.rs): the tag netconnect-helper:<version> is
/// shared with packaging_e2e.rs, and a dockerd restart test stops the
/// engine while it holds it.
const DOCKER_LOCK: &str = "/run/netconnect-docker-e2e.lock";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn sh(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = sh(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256_hex(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hex::encode(Sha256::digest(data))
}

/// What scripts/release.sh needs that may be missing here.
fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    let venv =
        std::env::var("NETCONNECT_ZIG_VENV").unwrap_or_else(|_| "/opt/netconnect-zig".into());
    if !Path::new(&venv).join("bin/cargo-zigbuild").is_file() {
        missing.push(format!("cargo-zigbuild in {venv}"));
    }
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for t in [
        "aarch64-apple-darwin",
        "x86_64-apple-darwin",
        "aarch64-unknown-linux-gnu",
    ] {
        if !targets.lines().any(|l| l == t) {
            missing.push(format!("Rust target {t}"));
        }
    }
    if !Command::new("aarch64-linux-gnu-gcc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("aarch64-linux-gnu-gcc".into());
    }
    if !Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("a Docker engine that answers `docker info`".into());
    }
    missing
}

/// The release directory, or None (after saying why) when this machine
/// cannot make one and this is not CI.
fn dist() -> Option<&'static Path> {
    static DIST: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIST.get_or_init(|| {
        if let Some(d) = std::env::var_os("NETCONNECT_DIST").filter(|d| !d.is_empty()) {
            let d = PathBuf::from(d);
            assert!(
                d.join("SHA256SUMS").is_file(),
                "NETCONNECT_DIST={} holds no SHA256SUMS: run `bash scripts/release.sh {}` first",
                d.display(),
                d.display()
            );
            return Some(d);
        }
        let missing = missing_prerequisites();
        if !missing.is_empty() {
            let msg = format!(
                "the release cannot be built here: missing {}; run `sudo bash scripts/setup.sh` \
                 and start dockerd",
                missing.join(", ")
            );
            assert!(!in_ci(), "{msg} (CI=true: no skipping)");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let d = Path::new(ROOT).join("target/release-test-dist");
        let t0 = Instant::now();
        let out = {
            let _lock = DockerLock::acquire();
            sh(Command::new("bash")
                .arg(Path::new(ROOT).join("scripts/release.sh"))
                .arg(&d)
                .env_remove("NETCONNECT_DIST"))
        };
        assert!(
            out.status.success(),
            "scripts/release.sh failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("MEASURE: scripts/release.sh took {:?}", t0.elapsed());
        Some(d)
    })
    .as_deref()
}

/// flock(2) on the shared Docker test lock, waited for.
struct DockerLock {
    _file: File,
}

impl DockerLock {
    fn acquire() -> DockerLock {
        extern "C" {
            fn flock(fd: i32, operation: i32) -> i32;
        }
        const LOCK_EX: i32 = 2;
        const LOCK_NB: i32 = 4;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(DOCKER_LOCK)
            .unwrap_or_else(|e| panic!("open {DOCKER_LOCK}: {e} (these tests run as root)"));
        let deadline = Instant::now() + Duration::from_secs(25 * 60);
        // SAFETY: flock on a descriptor we own.
        while unsafe { flock(file.as_raw_fd(), LOCK_EX | LOCK_NB) } != 0 {
            assert!(
                Instant::now() < deadline,
                "waited 25 min for {DOCKER_LOCK}: another Docker test holds it"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        DockerLock { _file: file }
    }
}

/// A tarball's files, unpacked into a fresh directory (removed on drop).
struct Unpacked(PathBuf);

impl Unpacked {
    fn new(archive: &Path, what: &str) -> Unpacked {
        let dir = std::env::temp_dir().join(format!(
            "netconnect-release-test-{}-{what}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        ok(Command::new("tar")
            .arg("-xzf")
            .arg(archive)
            .arg("-C")
            .arg(&dir));
        Unpacked(dir)
    }

    /// Every regular file, relative to the directory.
    fn files(&self) -> BTreeSet<String> {
        fn walk(base: &Path, p: &Path, out: &mut BTreeSet<String>) {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.insert(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.0, &self.0, &mut out);
        out
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tarball(dist: &Path, mac: &str) -> PathBuf {
    dist.join(format!("netconnect-{VERSION}-macos-{mac}.tar.gz"))
}

fn helper_archive(dist: &Path, vm: &str) -> PathBuf {
    dist.join(format!("netconnect-helper-{VERSION}-linux-{vm}.tar.gz"))
}

#[test]
fn release_sha256sums_lists_every_artifact_with_its_checksum() {
    let Some(dist) = dist() else { return };
    let sums = std::fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
    let listed: BTreeMap<String, String> = sums
        .lines()
        .map(|l| {
            let (sum, name) = l
                .split_once("  ")
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (name.to_string(), sum.to_string())
        })
        .collect();
    let mut want: BTreeSet<String> = BTreeSet::new();
    for (mac, vm) in MACS {
        want.insert(format!("netconnect-{VERSION}-macos-{mac}.tar.gz"));
        want.insert(format!("netconnect-helper-{VERSION}-linux-{vm}.tar.gz"));
    }
    assert_eq!(listed.keys().cloned().collect::<BTreeSet<_>>(), want);
    let on_disk: BTreeSet<String> = std::fs::read_dir(dist)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS" && n != "netconnect.rb")
        .collect();
    assert_eq!(
        on_disk,
        want,
        "files in {} not in SHA256SUMS",
        dist.display()
    );
    for (name, sum) in &listed {
        assert_eq!(&sha256_hex(&dist.join(name)), sum, "{name}");
    }
}

/// The minimum macOS of one Mach-O slice: LC_BUILD_VERSION (what current
/// linkers write) or LC_VERSION_MIN_MACOSX (older ones).
fn min_macos(slice: &[u8]) -> macho::Version {
    let file = MachOFile64::<Endianness>::parse(slice).expect("a 64-bit Mach-O slice");
    let endian = file.endian();
    assert_eq!(
        file.macho_header().filetype(endian),
        macho::MH_EXECUTE,
        "not an executable"
    );
    let mut found = None;
    let mut commands = file.macho_load_commands().unwrap();
    while let Some(cmd) = commands.next().unwrap() {
        if let Some((bv, _tools)) = cmd.build_version(endian).unwrap() {
            assert_eq!(
                bv.platform.get(endian),
                macho::PLATFORM_MACOS,
                "not for macOS"
            );
            found = Some(bv.minos.get(endian));
        } else if cmd.cmd() == macho::LC_VERSION_MIN_MACOSX {
            if let object::read::macho::LoadCommandVariant::VersionMin(v) = cmd.variant().unwrap() {
                found = Some(v.version.get(endian));
            }
        }
    }
    found.expect("neither LC_BUILD_VERSION nor LC_VERSION_MIN_MACOSX")
}

#[test]
fn release_macos_binary_is_fat_with_arm64_and_x86_64_for_macos_11() {
    let Some(dist) = dist() else { return };
    let mut binaries = Vec::new();
    for (mac, _) in MACS {
        let t = Unpacked::new(&tarball(dist, mac), mac);
        let bin = t.0.join(format!("netconnect-{VERSION}/bin/netconnect"));
        let mode = std::fs::metadata(&bin).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{} is not executable", bin.display());
        binaries.push(std::fs::read(&bin).unwrap());
    }
    assert!(
        binaries[0] == binaries[1],
        "the two tarballs hold different binaries"
    );
    let data = &binaries[0][..];
    let fat = MachOFatFile32::parse(data).expect("not a fat (universal) Mach-O");
    let mut slices: Vec<(Architecture, String)> = fat
        .arches()
        .iter()
        .map(|arch| {
            let slice = arch.data(data).unwrap();
            let file = MachOFile64::<Endianness>::parse(slice).unwrap();
            assert_eq!(
                file.architecture(),
                arch.architecture(),
                "fat header and slice disagree"
            );
            (arch.architecture(), min_macos(slice).to_string())
        })
        .collect();
    slices.sort_by_key(|(a, _)| format!("{a:?}"));
    assert_eq!(
        slices,
        [
            (Architecture::Aarch64, "11.0.0".to_string()),
            (Architecture::X86_64, "11.0.0".to_string()),
        ],
        "want exactly an arm64 and an x86_64 slice, each for macOS 11.0"
    );
}

/// The Homebrew formula's `def install` lines: (source in the tarball,
/// glob allowed).
fn formula_installs(formula: &str) -> Vec<String> {
    let body: Vec<&str> = formula
        .lines()
        .skip_while(|l| l.trim() != "def install")
        .skip(1)
        .take_while(|l| l.trim() != "end")
        .filter(|l| l.contains(".install "))
        .collect();
    assert!(!body.is_empty(), "no install lines in the formula");
    body.iter()
        .map(|l| {
            l.split('"')
                .nth(1)
                .unwrap_or_else(|| panic!("no path in {l:?}"))
                .to_string()
        })
        .collect()
}

#[test]
fn release_tarballs_hold_what_the_formula_installs_where_up_looks() {
    let Some(dist) = dist() else { return };
    let formula =
        std::fs::read_to_string(Path::new(ROOT).join("packaging/homebrew/netconnect.rb")).unwrap();
    let installs = formula_installs(&formula);
    for (mac, vm) in MACS {
        let t = Unpacked::new(&tarball(dist, mac), &format!("layout-{mac}"));
        let top = format!("netconnect-{VERSION}/");
        let files = t.files();
        assert!(
            files.iter().all(|f| f.starts_with(&top)),
            "{mac}: not all under {top}: {files:?}"
        );
        // Homebrew unpacks into the lone top directory.
        let inside: BTreeSet<String> = files.iter().map(|f| f[top.len()..].to_string()).collect();
        let helper = format!(
            "share/netconnect/{}",
            netconnect::docker::vmside::image::archive_name(vm)
        );
        for want in [
            "bin/netconnect",
            helper.as_str(),
            "share/man/man8/netconnect.8",
            "share/man/man8/netconnect-up.8",
            "etc/bash_completion.d/netconnect",
            "share/zsh/site-functions/_netconnect",
            "share/fish/vendor_completions.d/netconnect.fish",
        ] {
            assert!(inside.contains(want), "{mac}: no {want} in {inside:?}");
        }
        // Every file is installed by the formula, every install finds files.
        for pattern in &installs {
            let p = glob::Pattern::new(pattern).unwrap();
            assert!(
                inside.iter().any(|f| p.matches(f)),
                "{mac}: the formula installs {pattern}, the tarball has none"
            );
        }
        for f in &inside {
            assert!(
                installs
                    .iter()
                    .any(|i| glob::Pattern::new(i).unwrap().matches(f)),
                "{mac}: {f} is in the tarball but the formula does not install it"
            );
        }
        // Only the helper of this Mac's VM, the very archive released alone.
        let helpers: Vec<&String> = inside
            .iter()
            .filter(|f| f.starts_with("share/netconnect/"))
            .collect();
        assert_eq!(helpers, [&helper], "{mac}");
        let root = t.0.join(&top);
        assert_eq!(
            sha256_hex(&root.join(&helper)),
            sha256_hex(&helper_archive(dist, vm)),
            "{mac}: {helper} differs from the released archive"
        );
        // `up` of the unpacked binary, on that VM, picks it; on the other
        // VM it finds none (and says which architecture is missing).
        let exe = root.join("bin/netconnect");
        let candidates = netconnect::docker::vmside::image::default_archives(&exe);
        assert_eq!(
            netconnect::docker::vmside::image::choose_archive(Some(vm), &candidates, Path::is_file),
            Ok(root.join(&helper))
        );
        let other = MACS.iter().map(|m| m.1).find(|a| *a != vm).unwrap();
        let e = netconnect::docker::vmside::image::choose_archive(
            Some(other),
            &candidates,
            Path::is_file,
        )
        .unwrap_err();
        assert!(e.to_string().contains(&format!("linux/{other}")), "{e}");
        // Man pages are roff, completions name the command.
        let man = std::fs::read_to_string(root.join("share/man/man8/netconnect.8")).unwrap();
        assert!(man.contains(".TH netconnect 8"), "{man}");
        let zsh =
            std::fs::read_to_string(root.join("share/zsh/site-functions/_netconnect")).unwrap();
        assert!(zsh.starts_with("#compdef netconnect"), "{zsh:.80}");
    }
}

#[test]
fn release_formula_is_the_committed_one_with_the_artifacts_checksums() {
    let Some(dist) = dist() else { return };
    let template =
        std::fs::read_to_string(Path::new(ROOT).join("packaging/homebrew/netconnect.rb")).unwrap();
    let generated = dist.join("netconnect.rb");
    let formula = std::fs::read_to_string(&generated).unwrap();
    let out = sh(Command::new("ruby").arg("-c").arg(&generated));
    assert!(
        out.status.success(),
        "ruby -c {}: {}",
        generated.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Line for line the committed formula, but for the sha256 values.
    let (t, g): (Vec<&str>, Vec<&str>) = (template.lines().collect(), formula.lines().collect());
    assert_eq!(t.len(), g.len(), "the generated formula has other lines");
    let strip = |l: &str| {
        let mut l = l.to_string();
        if l.trim_start().starts_with("sha256 \"") {
            l.truncate(l.find('"').unwrap());
        }
        l
    };
    for (a, b) in t.iter().zip(&g) {
        assert_eq!(strip(a), strip(b), "a line other than a sha256 changed");
    }
    // Each sha256 is the checksum of the file its url names, per architecture.
    let mut block = None;
    let mut url = None;
    let mut seen = Vec::new();
    for l in formula.lines().map(str::trim) {
        if l == "on_arm do" || l == "on_intel do" {
            block = Some(l.split_whitespace().next().unwrap().to_string());
        }
        if let Some(u) = l.strip_prefix("url \"") {
            url = Some(u.split('"').next().unwrap().to_string());
        }
        if let Some(s) = l.strip_prefix("sha256 \"") {
            let sum = s.split('"').next().unwrap();
            let url = url.take().expect("a sha256 with no url above it");
            let file = url.rsplit('/').next().unwrap();
            assert!(
                url.contains(&format!("/releases/download/v{VERSION}/")),
                "{url}"
            );
            let path = dist.join(file);
            assert!(
                path.is_file(),
                "the formula downloads {file}, not in the release"
            );
            assert_eq!(sum, sha256_hex(&path), "sha256 of {file}");
            seen.push((block.clone().unwrap_or_default(), file.to_string()));
        }
    }
    assert_eq!(
        seen,
        [
            (
                "on_arm".to_string(),
                format!("netconnect-{VERSION}-macos-arm64.tar.gz")
            ),
            (
                "on_intel".to_string(),
                format!("netconnect-{VERSION}-macos-x86_64.tar.gz")
            ),
        ]
    );
}

/// The image a `docker save` archive holds: its tags, and the file
/// `/usr/bin/netconnect` from its layers.
fn archive_contents(archive: &Path, what: &str) -> (Vec<String>, Vec<u8>) {
    let t = Unpacked::new(archive, &format!("image-{what}"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.0.join("manifest.json")).unwrap()).unwrap();
    let image = &manifest[0];
    let tags = image["RepoTags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    let rootfs = t.0.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in image["Layers"].as_array().expect("no Layers") {
        ok(Command::new("tar")
            .arg("-xf")
            .arg(t.0.join(layer.as_str().unwrap()))
            .arg("-C")
            .arg(&rootfs));
    }
    let bin = std::fs::read(rootfs.join("usr/bin/netconnect")).expect("no /usr/bin/netconnect");
    check_iptables(&rootfs, what);
    (tags, bin)
}

/// Debian's iptables in a helper image's root (`helper-image/iptables-rootfs.sh`),
/// checked without running it (an arm64 image cannot run here): both
/// multi binaries of the image's architecture, the names the helper runs
/// (`src/helper/firewall.rs`) linked to them, the extensions, and every
/// library of their ELF NEEDED lists, followed to the end, plus the loader
/// each names, present in the image. `readelf` reads any architecture.
fn check_iptables(rootfs: &Path, vm: &str) {
    let (triplet, machine) = match vm {
        "arm64" => ("aarch64-linux-gnu", Architecture::Aarch64),
        "amd64" => ("x86_64-linux-gnu", Architecture::X86_64),
        other => panic!("no helper architecture {other}"),
    };
    for fam in ["iptables", "ip6tables"] {
        for backend in ["legacy", "nft"] {
            for suffix in ["", "-save"] {
                let name = format!("{fam}-{backend}{suffix}");
                let target = std::fs::read_link(rootfs.join("usr/sbin").join(&name))
                    .unwrap_or_else(|e| panic!("{vm}: /usr/sbin/{name}: {e}"));
                assert_eq!(
                    target,
                    Path::new(&format!("xtables-{backend}-multi")),
                    "{vm}: /usr/sbin/{name}"
                );
            }
        }
    }
    let ext_dir = rootfs.join(format!("usr/lib/{triplet}/xtables"));
    let mut queue: Vec<PathBuf> = ["xtables-legacy-multi", "xtables-nft-multi"]
        .iter()
        .map(|b| rootfs.join("usr/sbin").join(b))
        .collect();
    let exts: Vec<PathBuf> = std::fs::read_dir(&ext_dir)
        .unwrap_or_else(|e| panic!("{vm}: {}: {e}", ext_dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    for want in [
        "libxt_comment.so",
        "libxt_conntrack.so",
        "libxt_standard.so",
    ] {
        assert!(
            exts.iter().any(|e| e.ends_with(want)),
            "{vm}: no {want} in {}",
            ext_dir.display()
        );
    }
    queue.extend(exts);
    let readelf = |args: &[&str], f: &Path| ok(Command::new("readelf").args(args).arg(f));
    let mut seen = BTreeSet::new();
    while let Some(file) = queue.pop() {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let elf = object::File::parse(&bytes[..]).expect("not an object file");
        assert_eq!(elf.architecture(), machine, "{vm}: {}", file.display());
        for line in readelf(&["-d"], &file).lines() {
            let Some(lib) = line
                .split_once("(NEEDED)")
                .and_then(|(_, r)| r.split_once('[')?.1.split_once(']'))
                .map(|(l, _)| l.to_string())
            else {
                continue;
            };
            if !seen.insert(lib.clone()) {
                continue;
            }
            let found = [format!("lib/{triplet}"), format!("usr/lib/{triplet}")]
                .iter()
                .map(|d| rootfs.join(d).join(&lib))
                .find(|p| p.is_file());
            let found = found.unwrap_or_else(|| {
                panic!(
                    "{vm}: {} needs {lib}, which the image lacks",
                    file.display()
                )
            });
            queue.push(found);
        }
        for line in readelf(&["-l"], &file).lines() {
            if let Some(interp) = line
                .split_once("Requesting program interpreter: ")
                .and_then(|(_, r)| r.strip_suffix(']'))
            {
                // Absolute links resolve inside the image, not here.
                let mut p = rootfs.join(interp.trim_start_matches('/'));
                if let Ok(t) = std::fs::read_link(&p) {
                    p = rootfs.join(t.to_string_lossy().trim_start_matches('/'));
                }
                assert!(p.is_file(), "{vm}: the loader {interp} is not in the image");
            }
        }
    }
    for lib in [
        "libc.so.6",
        "libxtables.so.12",
        "libnftnl.so.11",
        "libip4tc.so.2",
    ] {
        assert!(seen.contains(lib), "{vm}: nothing needs {lib}? {seen:?}");
    }
}

/// Loads an archive under the shared tag and puts the tag back as it was
/// (the engine's own image for its architecture, or none) when dropped.
struct Loaded {
    tag: String,
    before: Option<String>,
    loaded: String,
}

fn image_id(tag: &str) -> Option<String> {
    let out = sh(Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", tag]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if self.before.as_deref() == Some(&self.loaded) {
            return;
        }
        match &self.before {
            Some(id) => {
                let _ = sh(Command::new("docker").args(["tag", id, &self.tag]));
            }
            None => {
                let _ = sh(Command::new("docker").args(["rmi", &self.tag]));
            }
        }
        let _ = sh(Command::new("docker").args(["rmi", &self.loaded]));
    }
}

#[test]
fn docker_release_helper_archives_load_as_images_of_their_architecture() {
    let Some(dist) = dist() else { return };
    let tag = format!("netconnect-helper:{VERSION}");
    let mut ids = Vec::new();
    for (vm, machine) in [
        ("arm64", Architecture::Aarch64),
        ("amd64", Architecture::X86_64),
    ] {
        let archive = helper_archive(dist, vm);
        // What is inside, without an engine: the tag `up` looks for and a
        // static Linux binary of that architecture (the image's
        // Architecture field alone is only what `docker build` was told).
        let (tags, bin) = archive_contents(&archive, vm);
        assert_eq!(
            tags,
            std::slice::from_ref(&tag),
            "{vm}: tags in the archive"
        );
        let elf = object::File::parse(&bin[..]).expect("not an object file");
        assert_eq!(elf.format(), object::BinaryFormat::Elf, "{vm}");
        assert_eq!(elf.architecture(), machine, "{vm}: the helper's binary");
        // Static (static-pie on x86_64 keeps a .dynamic for its own
        // relocations): no program interpreter, nothing imported.
        assert!(
            elf.section_by_name(".interp").is_none() && elf.imports().unwrap().next().is_none(),
            "{vm}: the helper's binary is not static (the image has no libc)"
        );

        let _lock = DockerLock::acquire();
        let before = image_id(&tag);
        let out = ok(Command::new("docker").arg("load").arg("-i").arg(&archive));
        let loaded = Loaded {
            before,
            loaded: image_id(&tag).expect("no image under the tag after docker load"),
            tag: tag.clone(),
        };
        assert!(out.contains(&format!("Loaded image: {tag}")), "{out}");
        let inspect = ok(Command::new("docker").args([
            "image",
            "inspect",
            "--format",
            "{{.Os}}/{{.Architecture}} {{json .Config.Entrypoint}}",
            &loaded.loaded,
        ]));
        assert_eq!(
            inspect.trim(),
            format!("linux/{vm} [\"/usr/bin/netconnect\"]"),
            "{vm}: docker image inspect"
        );
        ids.push(loaded.loaded.clone());
    }
    assert_ne!(ids[0], ids[1], "both archives hold the same image");
}
