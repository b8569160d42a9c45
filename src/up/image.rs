//! Making sure the engine has the helper image without a registry: when it
//! is missing, load it from an archive shipped with netconnect (`docker
//! save`, gzip allowed; Homebrew puts it in the formula's pkgshare), so a
//! first start works behind a firewall or a proxy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::ImportImageOptionsBuilder;
use bollard::Docker;
use futures::{StreamExt, TryStreamExt};
use tracing::info;

use super::container::HelperError;
use crate::docker::client::timed;
use crate::progress;

/// The archive's file name where netconnect installs it.
pub const ARCHIVE_NAME: &str = "netconnect-helper.tar.gz";
/// Loading tens of megabytes into a busy engine takes longer than an API call.
const LOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where to look for the archive when no `--helper-archive` is given, for
/// a binary at `exe`: `<prefix>/share/netconnect/` for `<prefix>/bin/netconnect`
/// (Homebrew's pkgshare, and any `make install`-style layout), then next to
/// the binary (an unpacked release tarball).
pub fn default_archives(exe: &Path) -> Vec<PathBuf> {
    let Some(bin) = exe.parent() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Some(prefix) = bin.parent() {
        out.push(prefix.join("share/netconnect").join(ARCHIVE_NAME));
    }
    out.push(bin.join(ARCHIVE_NAME));
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

/// Ok when `image` is in the engine, loading the first existing archive
/// if it was not.
pub async fn ensure(docker: &Docker, image: &str, archives: &[PathBuf]) -> Result<(), HelperError> {
    if present(docker, image).await? {
        return Ok(());
    }
    let Some(archive) = archives.iter().find(|a| a.is_file()) else {
        return Err(HelperError::NoImage {
            image: image.to_owned(),
            looked_in: archives.to_vec(),
        });
    };
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
    // Streamed from the file, not read whole: the count of bytes handed to
    // the engine is the progress a person sees.
    let file = tokio::fs::File::open(archive)
        .await
        .map_err(|e| load_err(e.to_string()))?;
    if let Ok(meta) = file.metadata().await {
        step.bytes(meta.len());
    }
    let advance = step.advancer();
    let body = tokio_util::io::ReaderStream::new(file)
        .inspect_ok(move |chunk| advance(chunk.len() as u64));
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

    #[test]
    fn archive_next_to_homebrew_and_plain_binaries() {
        assert_eq!(
            default_archives(Path::new("/opt/homebrew/Cellar/netconnect/0.1.0/bin/netconnect")),
            [
                PathBuf::from(
                    "/opt/homebrew/Cellar/netconnect/0.1.0/share/netconnect/netconnect-helper.tar.gz"
                ),
                PathBuf::from("/opt/homebrew/Cellar/netconnect/0.1.0/bin/netconnect-helper.tar.gz"),
            ]
        );
        assert_eq!(
            archives(Some(Path::new("/tmp/h.tar.gz"))),
            [PathBuf::from("/tmp/h.tar.gz")]
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
