//! Making sure the engine has the helper image without a registry: when it
//! is missing, load it from an archive shipped with netconnect (`docker
//! save`, gzip allowed; Homebrew puts it in the formula's pkgshare), so a
//! first start works behind a firewall or a proxy. The image holds a Linux
//! binary, so the archive must match the engine's architecture: a release
//! ships one per architecture (`netconnect-helper-linux-arm64.tar.gz` for
//! Apple Silicon's VM, `-amd64` for Intel's) and `up` picks by the
//! engine's `/version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::ImportImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use tracing::{debug, info};

use super::container::HelperError;
use crate::docker::client::timed;
use crate::progress;

/// The archive's file name when it is not marked with an architecture:
/// installs made before there was one per architecture, and a hand-copied
/// archive. Used whatever the engine's architecture.
pub const ARCHIVE_NAME: &str = "netconnect-helper.tar.gz";
/// The architectures a release ships a helper for, in Docker's words.
pub const ARCHES: [&str; 2] = ["arm64", "amd64"];
/// Loading tens of megabytes into a busy engine takes longer than an API call.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// The file name of the archive for a linux/`arch` engine.
pub fn archive_name(arch: &str) -> String {
    format!("netconnect-helper-linux-{arch}.tar.gz")
}

/// Docker's architecture in the words of `ARCHES`: `/version` reports Go's
/// names (`amd64`, `arm64`), `/info` the kernel's (`x86_64`, `aarch64`).
pub fn normalize_arch(arch: &str) -> Option<&'static str> {
    match arch.trim().to_ascii_lowercase().as_str() {
        "amd64" | "x86_64" | "x86-64" => Some("amd64"),
        "arm64" | "aarch64" | "arm64/v8" => Some("arm64"),
        _ => None,
    }
}

/// The architecture an archive's name marks it for; `None` for any other
/// name (usable whatever the engine runs).
fn marked_arch(archive: &Path) -> Option<&'static str> {
    let name = archive.file_name()?.to_str()?;
    ARCHES.into_iter().find(|a| name == archive_name(a))
}

/// Why no archive fits the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoArchive {
    #[error(
        "no helper image archive for linux/{arch}, the engine's architecture (looked in {})",
        if looked_in.is_empty() { "no place".to_string() } else {
            looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        }
    )]
    Missing {
        arch: String,
        looked_in: Vec<PathBuf>,
    },
}

/// The archive to load into an engine of architecture `engine_arch` (as the
/// engine reports it; `None` when it did not): the first of `candidates`
/// that `exists` and is not marked for another architecture. Pure, so the
/// choice is tested without an engine or files.
pub fn choose_archive(
    engine_arch: Option<&str>,
    candidates: &[PathBuf],
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, NoArchive> {
    let arch = engine_arch.and_then(normalize_arch);
    let fits: Vec<PathBuf> = candidates
        .iter()
        .filter(|c| marked_arch(c).is_none_or(|a| Some(a) == arch))
        .cloned()
        .collect();
    match fits.iter().find(|c| exists(c)) {
        Some(c) => Ok(c.clone()),
        None => Err(NoArchive::Missing {
            arch: match (arch, engine_arch) {
                (Some(a), _) => a.to_string(),
                (None, Some(raw)) => raw.to_string(),
                (None, None) => "unknown".to_string(),
            },
            looked_in: fits,
        }),
    }
}

/// Where to look for the archive when no `--helper-archive` is given, for
/// a binary at `exe`: `<prefix>/share/netconnect/` for `<prefix>/bin/netconnect`
/// (Homebrew's pkgshare, and any `make install`-style layout), then next to
/// the binary (an unpacked release tarball); in each, the per-architecture
/// names before the unmarked one.
pub fn default_archives(exe: &Path) -> Vec<PathBuf> {
    let Some(bin) = exe.parent() else {
        return Vec::new();
    };
    let mut dirs = Vec::new();
    if let Some(prefix) = bin.parent() {
        dirs.push(prefix.join("share/netconnect"));
    }
    dirs.push(bin.to_owned());
    let mut out = Vec::new();
    for dir in dirs {
        out.extend(ARCHES.map(|a| dir.join(archive_name(a))));
        out.push(dir.join(ARCHIVE_NAME));
    }
    out
}

/// The archives to try: the one the user named, else the defaults.
pub fn archives(flag: Option<&Path>) -> Vec<PathBuf> {
    match flag {
        Some(p) => vec![p.to_owned()],
        None => std::env::current_exe()
            .map(|e| default_archives(&e))
            .unwrap_or_default(),
    }
}

/// The engine's architecture from `/version` (`Arch`), `/info`
/// (`Architecture`) if that says nothing.
async fn engine_arch(docker: &Docker) -> Result<Option<String>, HelperError> {
    let version = timed(docker.version()).await?;
    if let Some(a) = version.arch.filter(|a| !a.is_empty()) {
        return Ok(Some(a));
    }
    let info = timed(docker.info()).await?;
    Ok(info.architecture.filter(|a| !a.is_empty()))
}

async fn present(docker: &Docker, image: &str) -> Result<bool, HelperError> {
    match timed(docker.inspect_image(image)).await {
        Ok(_) => Ok(true),
        Err(crate::docker::DockerError::Api(BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        })) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether the file starts with gzip's magic; the file is left at its start.
async fn is_gzip(file: &mut tokio::fs::File) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut magic = [0u8; 2];
    let mut n = 0;
    while n < 2 {
        let got = file.read(&mut magic[n..]).await?;
        if got == 0 {
            break;
        }
        n += got;
    }
    file.seek(std::io::SeekFrom::Start(0)).await?;
    Ok(n == 2 && magic == [0x1f, 0x8b])
}

/// Ok when `image` is in the engine, loading the first existing archive
/// if it was not.
pub async fn ensure(docker: &Docker, image: &str, archives: &[PathBuf]) -> Result<(), HelperError> {
    if present(docker, image).await? {
        return Ok(());
    }
    let arch = engine_arch(docker).await?;
    debug!(
        arch = arch.as_deref().unwrap_or("unknown"),
        "engine architecture"
    );
    let archive = match choose_archive(arch.as_deref(), archives, Path::is_file) {
        Ok(a) => a,
        Err(NoArchive::Missing { arch, looked_in }) => {
            return Err(HelperError::NoImage {
                image: format!("{image} for linux/{arch}"),
                looked_in,
            })
        }
    };
    let archive = &archive;
    info!(
        target: progress::TARGET,
        image,
        archive = %archive.display(),
        "helper image missing; loading it from the archive"
    );
    let load_err = |reason: String| HelperError::Load {
        archive: archive.clone(),
        reason,
    };
    let step = progress::step(format!(
        "Loading the helper image {image} from {}",
        archive.display()
    ));
    // Streamed from the file, not read whole: the count of the file's bytes
    // read is the progress a person sees. A gzipped archive is unpacked on
    // the way: Podman's load refuses it compressed, and a plain tar is
    // what every engine takes.
    let mut file = tokio::fs::File::open(archive)
        .await
        .map_err(|e| load_err(e.to_string()))?;
    if let Ok(meta) = file.metadata().await {
        step.bytes(meta.len());
    }
    let gzipped = is_gzip(&mut file)
        .await
        .map_err(|e| load_err(e.to_string()))?;
    let advance = step.advancer();
    let counted = tokio::io::BufReader::new(tokio_util::io::InspectReader::new(
        file,
        move |chunk: &[u8]| advance(chunk.len() as u64),
    ));
    let reader: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> = if gzipped {
        Box::pin(async_compression::tokio::bufread::GzipDecoder::new(counted))
    } else {
        Box::pin(counted)
    };
    let body = tokio_util::io::ReaderStream::new(reader);
    let load = async {
        let mut progress = docker.import_image(
            ImportImageOptionsBuilder::default().quiet(true).build(),
            bollard::body_try_stream(body),
            None,
        );
        while let Some(item) = progress.next().await {
            item.map_err(|e| load_err(e.to_string()))?;
        }
        Ok::<_, HelperError>(())
    };
    tokio::time::timeout(LOAD_TIMEOUT, load)
        .await
        .map_err(|_| load_err(format!("not loaded within {}s", LOAD_TIMEOUT.as_secs())))??;
    if !present(docker, image).await? {
        return Err(load_err(format!("it does not contain {image}")));
    }
    info!(target: progress::TARGET, image, "helper image loaded");
    let took = progress::took(step.elapsed());
    step.done(format!("Helper image {image} loaded ({took})"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gzip_is_known_by_its_magic_and_the_file_stays_at_its_start() {
        use tokio::io::AsyncReadExt as _;
        let dir = std::env::temp_dir().join(format!("nc-gz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes, want) in [
            ("a.tar.gz", &[0x1f, 0x8b, 8, 0][..], true),
            ("a.tar", &b"manifest.json\0"[..], false),
            ("one", &[0x1f][..], false),
            ("empty", &[][..], false),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            let mut f = tokio::fs::File::open(&p).await.unwrap();
            assert_eq!(is_gzip(&mut f).await.unwrap(), want, "{name}");
            let mut back = Vec::new();
            f.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, bytes, "{name}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn archive_next_to_homebrew_and_plain_binaries() {
        let cellar = "/opt/homebrew/Cellar/netconnect/0.1.0";
        let want: Vec<PathBuf> = [
            "share/netconnect/netconnect-helper-linux-arm64.tar.gz",
            "share/netconnect/netconnect-helper-linux-amd64.tar.gz",
            "share/netconnect/netconnect-helper.tar.gz",
            "bin/netconnect-helper-linux-arm64.tar.gz",
            "bin/netconnect-helper-linux-amd64.tar.gz",
            "bin/netconnect-helper.tar.gz",
        ]
        .iter()
        .map(|p| Path::new(cellar).join(p))
        .collect();
        assert_eq!(
            default_archives(&Path::new(cellar).join("bin/netconnect")),
            want
        );
        assert_eq!(
            archives(Some(Path::new("/tmp/h.tar.gz"))),
            [PathBuf::from("/tmp/h.tar.gz")]
        );
    }

    #[test]
    fn docker_names_both_ways_for_each_architecture() {
        for (reported, want) in [
            ("amd64", Some("amd64")),   // /version Arch
            ("x86_64", Some("amd64")),  // /info Architecture
            ("arm64", Some("arm64")),   // /version on Apple Silicon
            ("aarch64", Some("arm64")), // /info on Apple Silicon
            ("AARCH64\n", Some("arm64")),
            ("s390x", None),
            ("riscv64", None),
            ("", None),
        ] {
            assert_eq!(normalize_arch(reported), want, "{reported:?}");
        }
    }

    #[test]
    fn the_archive_follows_the_engines_architecture() {
        let prefix = Path::new("/usr/local");
        let all = default_archives(&prefix.join("bin/netconnect"));
        let share = |name: &str| prefix.join("share/netconnect").join(name);
        let bin = |name: &str| prefix.join("bin").join(name);
        let both = [
            share("netconnect-helper-linux-arm64.tar.gz"),
            share("netconnect-helper-linux-amd64.tar.gz"),
        ];
        let on = |files: &[PathBuf]| {
            let files = files.to_vec();
            move |p: &Path| files.iter().any(|f| f == p)
        };
        // (reported arch, files present, chosen)
        let cases: Vec<(Option<&str>, Vec<PathBuf>, PathBuf)> = vec![
            (Some("arm64"), both.to_vec(), both[0].clone()),
            (Some("aarch64"), both.to_vec(), both[0].clone()),
            (Some("amd64"), both.to_vec(), both[1].clone()),
            (Some("x86_64"), both.to_vec(), both[1].clone()),
            // An unmarked archive (an older install) still serves.
            (
                Some("arm64"),
                vec![share(ARCHIVE_NAME), bin(ARCHIVE_NAME)],
                share(ARCHIVE_NAME),
            ),
            (None, vec![share(ARCHIVE_NAME)], share(ARCHIVE_NAME)),
            // The marked one wins over the unmarked one in the same place.
            (
                Some("amd64"),
                vec![share(ARCHIVE_NAME), both[1].clone()],
                both[1].clone(),
            ),
            // pkgshare before the binary's directory.
            (
                Some("arm64"),
                vec![bin("netconnect-helper-linux-arm64.tar.gz"), both[0].clone()],
                both[0].clone(),
            ),
            (
                Some("arm64"),
                vec![bin("netconnect-helper-linux-arm64.tar.gz")],
                bin("netconnect-helper-linux-arm64.tar.gz"),
            ),
        ];
        for (arch, present, want) in cases {
            assert_eq!(
                choose_archive(arch, &all, on(&present)),
                Ok(want),
                "{arch:?} with {present:?}"
            );
        }
    }

    #[test]
    fn no_archive_of_the_engines_architecture_is_an_error_naming_it() {
        let prefix = Path::new("/usr/local");
        let all = default_archives(&prefix.join("bin/netconnect"));
        let amd64_only = prefix.join("share/netconnect/netconnect-helper-linux-amd64.tar.gz");
        let e = choose_archive(Some("aarch64"), &all, |p| p == amd64_only).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no helper image archive for linux/arm64, the engine's architecture (looked in \
             /usr/local/share/netconnect/netconnect-helper-linux-arm64.tar.gz, \
             /usr/local/share/netconnect/netconnect-helper.tar.gz, \
             /usr/local/bin/netconnect-helper-linux-arm64.tar.gz, \
             /usr/local/bin/netconnect-helper.tar.gz)"
        );
        // An engine netconnect ships no helper for finds only unmarked archives.
        let e = choose_archive(Some("s390x"), &all, |_| false).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no helper image archive for linux/s390x, the engine's"),
            "{e}"
        );
        let NoArchive::Missing { looked_in, .. } = e;
        assert!(
            looked_in.iter().all(|p| p.ends_with(ARCHIVE_NAME)),
            "{looked_in:?}"
        );
        // An archive the user named for another architecture is not loaded.
        let arm = PathBuf::from("/tmp/netconnect-helper-linux-arm64.tar.gz");
        assert!(choose_archive(Some("amd64"), std::slice::from_ref(&arm), |_| true).is_err());
        assert_eq!(
            choose_archive(Some("arm64"), std::slice::from_ref(&arm), |_| true),
            Ok(arm)
        );
    }

    #[test]
    fn missing_image_error_says_where_it_looked_and_what_to_run() {
        let e = HelperError::NoImage {
            image: "netconnect-helper:0.1.0".into(),
            looked_in: vec!["/usr/local/share/netconnect/netconnect-helper.tar.gz".into()],
        };
        assert_eq!(
            e.to_string(),
            "helper image netconnect-helper:0.1.0 is missing from the engine and no archive was \
             found (looked in /usr/local/share/netconnect/netconnect-helper.tar.gz); build and load \
             it with `helper-image/build.sh` from the source tree, or pass --helper-archive FILE \
             (made by `packaging/build-helper-image.sh`)"
        );
    }
}
