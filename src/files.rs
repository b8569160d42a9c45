//! Reading files that someone else may control (a user's Docker config and
//! contexts, read by root at boot; our own configuration file) as data, not
//! as a trusted resource: opened without blocking, so a FIFO put in a
//! file's place cannot hang a boot-time daemon; checked on the open
//! descriptor to be a regular file, so a link to `/dev/zero` or a device is
//! refused rather than read forever; and read up to a bound.

use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The most any of our small text files (JSON, TOML) may hold.
pub const MAX_TEXT: u64 = 1 << 20;

/// `path` opened for reading without blocking, and its metadata as of the
/// open descriptor. Fails with `InvalidData` unless it is a regular file.
pub fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// The text of an opened file, refusing one larger than `max` bytes.
pub fn read_text(file: File, meta: &Metadata, max: u64) -> io::Result<String> {
    if meta.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} bytes is more than the {max} a file of ours may hold",
                meta.len()
            ),
        ));
    }
    let mut text = String::new();
    // The file may grow after the check: read one byte past the bound at most.
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the file grew past its bound while read",
        ));
    }
    Ok(text)
}

/// [`open_regular`] then [`read_text`] up to [`MAX_TEXT`].
pub fn read_small_text(path: &Path) -> io::Result<String> {
    let (file, meta) = open_regular(path)?;
    read_text(file, &meta, MAX_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("nc-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.json");
        std::fs::write(&f, "{}").unwrap();
        assert_eq!(read_small_text(&f).unwrap(), "{}");
        // A link to a device that never ends.
        let z = dir.join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &z).unwrap();
        assert_eq!(
            read_small_text(&z).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let t0 = std::time::Instant::now();
        assert_eq!(
            read_small_text(&fifo).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
        // Too large.
        let big = dir.join("big.json");
        std::fs::write(&big, vec![b' '; MAX_TEXT as usize + 1]).unwrap();
        assert_eq!(
            read_small_text(&big).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
