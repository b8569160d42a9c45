//! The report as data and its two forms: a `.tar.gz` of one file per
//! section, which a user attaches to an issue as it is, and the same
//! sections as text under `== name ==` headers for `--stdout`. Pure apart
//! from the one file written; the sections are redacted before they get
//! here.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// One file of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The file name in the archive, `status.json`.
    pub name: &'static str,
    pub text: String,
}

/// A section that could not be read, and why: what a user without root
/// (or without an engine) sends is still worth reading if it says what
/// is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub name: &'static str,
    pub reason: String,
}

pub const MISSING: &str = "missing.txt";

/// `missing.txt`: one line a section, or a line saying nothing is missing
/// (an empty file would read as a failure to write it).
pub fn missing_text(missing: &[Missing]) -> String {
    if missing.is_empty() {
        return "every section was read\n".into();
    }
    let mut o = String::new();
    for m in missing {
        let _ = writeln!(o, "{}: {}", m.name, m.reason.trim().replace('\n', " | "));
    }
    o
}

/// The sections and `missing.txt` last, as both forms hold them.
pub fn with_missing(sections: &[Section], missing: &[Missing]) -> Vec<Section> {
    let mut all = sections.to_vec();
    all.push(Section {
        name: MISSING,
        text: missing_text(missing),
    });
    all
}

/// `--stdout`: each section under its header, a blank line between.
pub fn render_text(sections: &[Section]) -> String {
    let mut o = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            o.push('\n');
        }
        let _ = writeln!(o, "== {} ==", s.name);
        o.push_str(&s.text);
        if !s.text.ends_with('\n') {
            o.push('\n');
        }
    }
    o
}

/// Writes the archive to `path`, readable by its owner only (it holds the
/// machine's network layout even when redacted). Entries sit in a folder
/// named like the archive, so unpacking two reports never mixes them.
pub fn write_archive(
    path: &Path,
    sections: &[Section],
    mtime: u64,
    owner: Option<(u32, u32)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // A new file only, never through a symlink: run as root in a folder a
    // user can write, an existing name (or a link planted at it) must not
    // make root overwrite what it points at.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)?;
    // Under sudo, the user who asked gets it (root's 0600 file could not be
    // attached); by the descriptor, so no path is followed again.
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    let dir = folder_name(path);
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for s in sections {
        let mut h = tar::Header::new_gnu();
        h.set_size(s.text.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, format!("{dir}/{}", s.name), s.text.as_bytes())?;
    }
    let mut file = tar.into_inner()?.finish()?;
    file.flush()?;
    file.sync_all()
}

fn folder_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".tgz"))
        .unwrap_or(&name);
    if stem.is_empty() {
        "netconnect-bugreport".into()
    } else {
        stem.to_owned()
    }
}

/// `netconnect-bugreport-20261208T010626Z.tar.gz`: sorts by time, and has
/// no `:` (which macOS's Finder shows as `/`).
pub fn file_name(unix: u64) -> String {
    format!("netconnect-bugreport-{}.tar.gz", compact_utc(unix))
}

/// Where the archive goes: `--output` as given, inside it if it is a
/// folder, else the current directory.
pub fn archive_path(output: Option<&Path>, unix: u64) -> PathBuf {
    match output {
        Some(p) if p.is_dir() => p.join(file_name(unix)),
        Some(p) => p.to_owned(),
        None => PathBuf::from(file_name(unix)),
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm):
/// the one date computation the report needs is not worth a date crate.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn parts(unix: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (y, m, d) = civil((unix / 86_400) as i64);
    let s = unix % 86_400;
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// `20261208T010626Z`.
pub fn compact_utc(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = parts(unix);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// `2026-12-08T01:06:26`: the prefix of tracing's timestamps (RFC 3339,
/// UTC), which compare as strings.
pub fn rfc3339_utc(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = parts(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")
}

/// The leading timestamp of a log line, human (`2026-12-08T01:06:26.1Z
/// INFO ...`) or JSON (`{"timestamp":"2026-...`) format.
fn line_time(line: &str) -> Option<&str> {
    let t = line
        .strip_prefix("{\"timestamp\":\"")
        .unwrap_or(line.trim_start());
    let t = t.get(..19)?;
    let b = t.as_bytes();
    (b[4] == b'-' && b[10] == b'T' && b[13] == b':' && b[0].is_ascii_digit()).then_some(t)
}

/// The end of a log file: the lines since `since` (an [`rfc3339_utc`]),
/// at most `max` of them. Lines without a time (a panic's backtrace)
/// go with the line before; a log with no times at all keeps its last
/// `max` lines.
pub fn tail_recent(text: &str, since: &str, max: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| line_time(l).is_some_and(|t| t >= since));
    let any_time = lines.iter().any(|l| line_time(l).is_some());
    let from = match first {
        Some(i) => i,
        None if any_time => lines.len(),
        None => 0,
    };
    let kept = &lines[from..];
    let kept = &kept[kept.len().saturating_sub(max)..];
    let mut o = kept.join("\n");
    if !o.is_empty() {
        o.push('\n');
    }
    o
}

/// The last `max` lines.
pub fn tail_lines(text: &str, max: usize) -> String {
    tail_recent(text, "", max)
}

/// Only the named top-level fields of a JSON object:
/// what the engine's answers say about the VM, not who owns it (`Name`,
/// the host name, is left out by not being asked for).
pub fn select(v: &serde_json::Value, fields: &[&str]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for f in fields {
        if let Some(x) = v.get(*f) {
            if !x.is_null() {
                out.insert((*f).to_owned(), x.clone());
            }
        }
    }
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn sections() -> Vec<Section> {
        vec![
            Section {
                name: "version.txt",
                text: "netconnect 0.1.0 (x86_64-linux)\n".into(),
            },
            Section {
                name: "os.txt",
                text: "Ubuntu 24.04.1 LTS\nLinux 6.8.0-45-generic".into(),
            },
        ]
    }

    fn missing() -> Vec<Missing> {
        vec![
            Missing {
                name: "status.json",
                reason: "permission denied on /var/run/netconnect.sock; the control socket is root-only: use sudo".into(),
            },
            Missing {
                name: "engine.json",
                reason: "no Docker engine answered".into(),
            },
        ]
    }

    #[test]
    fn archive_holds_each_section_and_names_what_was_missing() {
        let dir = std::env::temp_dir().join(format!("nc-bugreport-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = archive_path(Some(&dir), 1_796_691_986);
        assert_eq!(
            path.file_name().unwrap(),
            "netconnect-bugreport-20261208T010626Z.tar.gz"
        );
        write_archive(
            &path,
            &with_missing(&sections(), &missing()),
            1_796_691_986,
            None,
        )
        .unwrap();

        let gz = flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap());
        let mut ar = tar::Archive::new(gz);
        let mut found = Vec::new();
        let mut missing_txt = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name.ends_with("/missing.txt") {
                e.read_to_string(&mut missing_txt).unwrap();
            }
            found.push(name);
        }
        assert_eq!(
            found,
            [
                "netconnect-bugreport-20261208T010626Z/version.txt",
                "netconnect-bugreport-20261208T010626Z/os.txt",
                "netconnect-bugreport-20261208T010626Z/missing.txt",
            ]
        );
        assert!(
            missing_txt.starts_with("status.json: permission denied on /var/run/netconnect.sock")
        );
        assert!(missing_txt.contains("\nengine.json: no Docker engine answered\n"));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn archive_into_a_folder_that_is_not_there_fails() {
        let path = Path::new("/nonexistent-netconnect-dir/report.tar.gz");
        assert!(write_archive(path, &sections(), 0, None).is_err());
    }

    /// Root writes only a new file: an existing one, or a symlink planted
    /// at the name (as a user could in a folder they own), is refused and
    /// what it points at is left as it was.
    #[test]
    fn an_existing_file_or_a_symlink_at_the_name_is_never_written_through() {
        let dir = std::env::temp_dir().join(format!("nc-bugreport-link-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let link = dir.join("netconnect-bugreport-x.tar.gz");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_archive(&link, &sections(), 0, None).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(write_archive(&target, &sections(), 0, None).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stdout_puts_each_section_under_its_header() {
        let text = render_text(&with_missing(&sections(), &[]));
        assert_eq!(
            text,
            "== version.txt ==\nnetconnect 0.1.0 (x86_64-linux)\n\
             \n== os.txt ==\nUbuntu 24.04.1 LTS\nLinux 6.8.0-45-generic\n\
             \n== missing.txt ==\nevery section was read\n"
        );
    }

    #[test]
    fn utc_times() {
        assert_eq!(compact_utc(0), "19700101T000000Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(rfc3339_utc(1_796_691_986), "2026-12-08T01:06:26");
    }

    #[test]
    fn log_tail_keeps_the_recent_lines() {
        let log = "2026-12-08T00:10:00.1Z  INFO old\n\
                   2026-12-08T00:40:00.1Z  WARN recent\n\
                   thread 'main' panicked\n\
                   {\"timestamp\":\"2026-12-08T00:50:00.2Z\",\"level\":\"INFO\"}\n";
        assert_eq!(
            tail_recent(log, "2026-12-08T00:36:00", 2000),
            "2026-12-08T00:40:00.1Z  WARN recent\nthread 'main' panicked\n\
             {\"timestamp\":\"2026-12-08T00:50:00.2Z\",\"level\":\"INFO\"}\n"
        );
        assert_eq!(tail_recent(log, "2026-12-08T01:00:00", 2000), "");
        assert_eq!(tail_recent("a\nb\nc\n", "2026", 2), "b\nc\n");
    }

    #[test]
    fn engine_fields_are_chosen_and_the_host_name_is_not() {
        let info = serde_json::json!({
            "Name": "ana-macbook", "ServerVersion": "28.1.1", "NCPU": 8,
            "OperatingSystem": "Docker Desktop", "CgroupVersion": null,
        });
        let picked = select(
            &info,
            &["ServerVersion", "OperatingSystem", "NCPU", "CgroupVersion"],
        );
        assert_eq!(
            picked,
            serde_json::json!({"ServerVersion": "28.1.1", "OperatingSystem": "Docker Desktop", "NCPU": 8})
        );
    }
}
