//! `/etc/resolver/<domain>`: how macOS sends the questions for one domain,
//! and only those, to one server (resolver(5)). `up` writes the file when
//! its server is listening and removes it when it stops; `doctor` reads it
//! back.
//!
//! The folder is root's and the file is read by the system's resolver, so
//! it is written the way root writes into a shared place: only a file whose
//! first line says netconnect wrote it is ever replaced or removed (another
//! tool, or the user, may own a resolver for the same domain); never
//! through a symlink; never in a folder another user can change; and
//! atomically, so the resolver never reads half a file.
//!
//! Plain file code, no macOS API: the same code runs on Linux, where tests
//! and the e2e suites point it at a folder of their own.

use std::fs::File;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Component, Path, PathBuf};

/// Where macOS looks for per-domain resolvers.
pub const MACOS_DIR: &str = "/etc/resolver";

/// How the first line of our file starts; what tells ours from anyone
/// else's.
const MARKER: &str = "# Written by netconnect for ";

/// The file's text. resolver(5) reads `#` lines as comments; `port` is
/// written even when it is 53 so that `doctor` reads back what `up` meant.
pub fn render(domain: &str, nameserver: IpAddr, port: u16) -> String {
    format!(
        "{MARKER}{domain}; removed when netconnect stops. Do not edit.\n\
         nameserver {nameserver}\n\
         port {port}\n"
    )
}

/// What is at a resolver file's path, for `doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileState {
    Missing,
    /// Ours, with what it says (`None` for a line that is missing or does
    /// not parse).
    Ours {
        nameserver: Option<IpAddr>,
        port: Option<u16>,
    },
    /// A file (or a symlink, a folder…) netconnect did not write.
    Foreign,
    /// It could not be read (or the domain names no file); the error's
    /// text.
    Unreadable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    #[error("{} exists and was not written by netconnect; move it away or set dns.domain to another domain", path.display())]
    Foreign { path: PathBuf },
    #[error("{}: {problem}; root writes the system's resolver files only where no other user can replace them: {fix}", path.display())]
    Untrusted {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("{domain:?} cannot name a file in the resolver folder; set dns.domain to a domain name such as docker.internal")]
    BadDomain { domain: String },
    #[error("cannot change {}: {source}{}", path.display(), root_hint(source))]
    Io { path: PathBuf, source: io::Error },
}

/// Whom a refusal most likely means: a user who ran `up` without sudo.
fn root_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        "; netconnect must run as root to configure the system's resolver"
    } else {
        ""
    }
}

/// One domain's resolver file in one folder.
#[derive(Debug, Clone)]
pub struct ResolverFile {
    dir: PathBuf,
    domain: String,
    path: PathBuf,
}

impl ResolverFile {
    /// Every file of ours in `dir`, whatever its zone: what a `up` that
    /// did not stop left (its domain's, and its clusters', label domains'
    /// and reverse zones'). Nothing when the folder cannot be read.
    pub fn all_ours(dir: &Path) -> Vec<ResolverFile> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<ResolverFile> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .map(|n| ResolverFile::new(dir, &n))
            .filter(|f| matches!(f.state(), FileState::Ours { .. }))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    pub fn new(dir: &Path, domain: &str) -> Self {
        ResolverFile {
            dir: dir.to_owned(),
            domain: domain.to_owned(),
            path: dir.join(domain),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write (or rewrite) our file for `nameserver` and `port`. Creates the
    /// folder (0755) if missing. Refuses a file netconnect did not write,
    /// and, as root, a folder that a user other than root can change.
    pub fn install(&self, nameserver: IpAddr, port: u16) -> Result<(), ResolverError> {
        self.check_domain()?;
        self.prepare_dir()?;
        match read_existing(&self.path) {
            Ok(Existing::Absent | Existing::Ours(_)) => {}
            Ok(Existing::Foreign) => return Err(self.foreign()),
            Err(e) => return Err(self.io(e)),
        }
        self.replace(&render(&self.domain, nameserver, port))
    }

    /// Remove the file if it is ours: `Ok(true)` removed, `Ok(false)`
    /// there was none. Someone else's is left alone: `Err(Foreign)`.
    pub fn remove(&self) -> Result<bool, ResolverError> {
        self.check_domain()?;
        match read_existing(&self.path).map_err(|e| self.io(e))? {
            Existing::Absent => Ok(false),
            Existing::Foreign => Err(self.foreign()),
            Existing::Ours(_) => match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(true),
                // Gone in between: what we wanted.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(self.io(e)),
            },
        }
    }

    /// What is there now, read back from the file.
    pub fn state(&self) -> FileState {
        if let Err(e) = self.check_domain() {
            return FileState::Unreadable(e.to_string());
        }
        match read_existing(&self.path) {
            Ok(Existing::Absent) => FileState::Missing,
            Ok(Existing::Foreign) => FileState::Foreign,
            Ok(Existing::Ours(text)) => {
                let (nameserver, port) = parse(&text);
                FileState::Ours { nameserver, port }
            }
            Err(e) => FileState::Unreadable(e.to_string()),
        }
    }

    /// The domain becomes a file name: one plain component, so that a
    /// configured `../x` can never reach outside the folder, and no dot
    /// first, so that it never collides with our temporary file.
    fn check_domain(&self) -> Result<(), ResolverError> {
        let mut parts = Path::new(&self.domain).components();
        let one_normal =
            matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none();
        if one_normal && !self.domain.starts_with('.') && !self.domain.contains('/') {
            Ok(())
        } else {
            Err(ResolverError::BadDomain {
                domain: self.domain.clone(),
            })
        }
    }

    /// Create the folder if missing; as root, refuse one another user can
    /// change (they could swap our file between our check and the rename).
    fn prepare_dir(&self) -> Result<(), ResolverError> {
        let meta = match std::fs::metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&self.dir)
                    .map_err(|e| self.dir_io(e))?;
                // The umask may have taken read or search bits that the
                // system's resolver needs.
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| self.dir_io(e))?;
                std::fs::metadata(&self.dir).map_err(|e| self.dir_io(e))?
            }
            Err(e) => return Err(self.dir_io(e)),
        };
        if nix::unistd::geteuid().is_root() {
            crate::config::trust(&self.dir, meta.uid(), meta.mode(), true).map_err(
                |(problem, fix)| ResolverError::Untrusted {
                    path: self.path.clone(),
                    problem,
                    fix,
                },
            )?;
        }
        Ok(())
    }

    /// A new file beside the old one, then renamed over it: a reader sees
    /// the old text or the new, never a part. `rename` replaces a symlink
    /// put at the path in between, never its target.
    fn replace(&self, text: &str) -> Result<(), ResolverError> {
        let tmp = self.dir.join(format!(".{}.netconnect-tmp", self.domain));
        let written = create_excl(&tmp)
            .and_then(|mut f| {
                f.write_all(text.as_bytes())?;
                // Explicitly: the umask could have taken the read bits the
                // resolver needs.
                f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(e));
        }
        Ok(())
    }

    fn foreign(&self) -> ResolverError {
        ResolverError::Foreign {
            path: self.path.clone(),
        }
    }

    fn io(&self, source: io::Error) -> ResolverError {
        ResolverError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn dir_io(&self, source: io::Error) -> ResolverError {
        ResolverError::Io {
            path: self.dir.clone(),
            source,
        }
    }
}

/// O_EXCL|O_NOFOLLOW: a file no one else has a descriptor to, and not
/// anything a link points at. A temporary file left by a crash is ours
/// (only root can write in a trusted folder): removed once, then retried.
fn create_excl(path: &Path) -> io::Result<File> {
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(path)?;
            open()
        }
        r => r,
    }
}

enum Existing {
    Absent,
    Ours(String),
    Foreign,
}

/// What is at `path`, without following a symlink there (a link is
/// someone else's: we never make one) and without blocking on a FIFO.
fn read_existing(path: &Path) -> io::Result<Existing> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Ok(Existing::Foreign),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(Existing::Foreign);
    }
    // Too large or not text: not a file we wrote.
    match crate::files::read_text(file, &meta, crate::files::MAX_TEXT) {
        Ok(text) if text.starts_with(MARKER) => Ok(Existing::Ours(text)),
        Ok(_) => Ok(Existing::Foreign),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Existing::Foreign),
        Err(e) => Err(e),
    }
}

/// The `nameserver` and `port` lines of a file, as resolver(5) reads them.
fn parse(text: &str) -> (Option<IpAddr>, Option<u16>) {
    let (mut nameserver, mut port) = (None, None);
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(a)) => nameserver = nameserver.or(a.parse().ok()),
            (Some("port"), Some(p)) => port = port.or(p.parse().ok()),
            _ => {}
        }
    }
    (nameserver, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const NS: &str = "10.33.33.1";

    fn ns() -> IpAddr {
        NS.parse().unwrap()
    }

    /// A fresh folder under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("nc-resolver-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_file_names_its_writer_then_the_server() {
        assert_eq!(
            render("docker.internal", ns(), 53),
            "# Written by netconnect for docker.internal; removed when netconnect stops. Do not edit.\n\
             nameserver 10.33.33.1\n\
             port 53\n"
        );
        assert_eq!(
            render("dev.test", "fd33:33:33::1".parse().unwrap(), 5353),
            "# Written by netconnect for dev.test; removed when netconnect stops. Do not edit.\n\
             nameserver fd33:33:33::1\n\
             port 5353\n"
        );
    }

    #[test]
    fn install_writes_a_file_that_reads_back_as_ours() {
        let d = TempDir::new("install");
        // A folder that does not exist yet is made, 0755.
        let dir = d.0.join("resolver");
        let f = ResolverFile::new(&dir, "docker.internal");
        assert_eq!(f.path(), dir.join("docker.internal"));
        assert_eq!(f.state(), FileState::Missing);
        f.install(ns(), 53).unwrap();
        assert_eq!(
            std::fs::read_to_string(f.path()).unwrap(),
            render("docker.internal", ns(), 53)
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(f.path()), 0o644);
        assert_eq!(
            f.state(),
            FileState::Ours {
                nameserver: Some(ns()),
                port: Some(53)
            }
        );
        // Only the file is left: no temporary beside it.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["docker.internal"]);
    }

    #[test]
    fn our_own_file_is_rewritten() {
        let d = TempDir::new("rewrite");
        let f = ResolverFile::new(&d.0, "docker.internal");
        f.install(ns(), 53).unwrap();
        let v6: IpAddr = "fd33:33:33::1".parse().unwrap();
        f.install(v6, 5353).unwrap();
        assert_eq!(
            f.state(),
            FileState::Ours {
                nameserver: Some(v6),
                port: Some(5353)
            }
        );
        // A temporary file a crash left is ours and does not stop us.
        std::fs::write(d.0.join(".docker.internal.netconnect-tmp"), "half").unwrap();
        f.install(ns(), 53).unwrap();
        assert_eq!(
            std::fs::read_to_string(f.path()).unwrap(),
            render("docker.internal", ns(), 53)
        );
        assert!(!d.0.join(".docker.internal.netconnect-tmp").exists());
    }

    #[test]
    fn a_file_someone_else_wrote_is_never_replaced_or_removed() {
        let d = TempDir::new("foreign");
        let f = ResolverFile::new(&d.0, "docker.internal");
        let theirs = "nameserver 192.168.1.53\n";
        std::fs::write(f.path(), theirs).unwrap();
        assert_eq!(f.state(), FileState::Foreign);
        let e = f.install(ns(), 53).unwrap_err();
        assert!(matches!(e, ResolverError::Foreign { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{} exists and was not written by netconnect; move it away or set dns.domain to another domain",
                f.path().display()
            )
        );
        assert!(matches!(
            f.remove().unwrap_err(),
            ResolverError::Foreign { .. }
        ));
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), theirs);
        // Our marker further down does not make it ours.
        let late = format!(
            "nameserver 1.1.1.1\n{}",
            render("docker.internal", ns(), 53)
        );
        std::fs::write(f.path(), &late).unwrap();
        assert!(f.install(ns(), 53).is_err());
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), late);
        // Nor is a folder at the path.
        std::fs::remove_file(f.path()).unwrap();
        std::fs::create_dir(f.path()).unwrap();
        assert_eq!(f.state(), FileState::Foreign);
        assert!(matches!(
            f.install(ns(), 53).unwrap_err(),
            ResolverError::Foreign { .. }
        ));
    }

    #[test]
    fn a_symlink_at_the_path_is_refused_and_its_target_untouched() {
        let d = TempDir::new("symlink");
        let f = ResolverFile::new(&d.0, "docker.internal");
        // Even a link to a file of ours: we never make links.
        let target = d.0.join("target");
        let ours = render("docker.internal", ns(), 53);
        std::fs::write(&target, &ours).unwrap();
        symlink(&target, f.path()).unwrap();
        assert_eq!(f.state(), FileState::Foreign);
        assert!(matches!(
            f.install("10.9.9.9".parse().unwrap(), 53).unwrap_err(),
            ResolverError::Foreign { .. }
        ));
        assert!(matches!(
            f.remove().unwrap_err(),
            ResolverError::Foreign { .. }
        ));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), ours);
        assert!(std::fs::symlink_metadata(f.path())
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn all_ours_finds_every_zone_we_wrote_and_nothing_else() {
        let dir = TempDir::new("all-ours");
        for d in ["docker.internal", "shop.test", "18.172.in-addr.arpa"] {
            ResolverFile::new(&dir.0, d).install(ns(), 53).unwrap();
        }
        std::fs::write(dir.0.join("corp.example"), "nameserver 10.0.0.1\n").unwrap();
        std::fs::create_dir(dir.0.join("a-folder")).unwrap();
        let found: Vec<String> = ResolverFile::all_ours(&dir.0)
            .iter()
            .map(|f| f.path().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            found,
            ["18.172.in-addr.arpa", "docker.internal", "shop.test"]
        );
        assert!(ResolverFile::all_ours(&dir.0.join("missing")).is_empty());
    }

    #[test]
    fn remove_takes_only_ours() {
        let d = TempDir::new("remove");
        let f = ResolverFile::new(&d.0, "docker.internal");
        assert!(matches!(f.remove(), Ok(false)));
        f.install(ns(), 53).unwrap();
        assert!(matches!(f.remove(), Ok(true)));
        assert!(!f.path().exists());
        assert_eq!(f.state(), FileState::Missing);
        assert!(matches!(f.remove(), Ok(false)));
        // Another domain's file in the same folder is not ours to take.
        let other = d.0.join("test");
        std::fs::write(&other, "nameserver 127.0.0.1\n").unwrap();
        f.install(ns(), 53).unwrap();
        assert!(matches!(f.remove(), Ok(true)));
        assert!(other.exists());
    }

    #[test]
    fn a_domain_never_names_a_file_outside_the_folder() {
        let d = TempDir::new("domain");
        let inner = d.0.join("resolver");
        for bad in ["../escape", "..", ".", "", "a/b", ".hidden", "/etc/passwd"] {
            let f = ResolverFile::new(&inner, bad);
            let e = f.install(ns(), 53).unwrap_err();
            assert!(
                matches!(e, ResolverError::BadDomain { .. }),
                "{bad:?}: {e:?}"
            );
            assert!(matches!(
                f.remove().unwrap_err(),
                ResolverError::BadDomain { .. }
            ));
        }
        assert!(!d.0.join("escape").exists());
        assert!(!inner.exists());
    }

    /// Tests run as root here, as `up` does; a folder anyone can write to
    /// (no sticky bit) would let them swap the file the system resolver
    /// reads.
    #[test]
    fn as_root_a_folder_others_can_change_is_refused() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test checks root's refusal and must run as root"
        );
        let d = TempDir::new("untrusted");
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o777)).unwrap();
        let f = ResolverFile::new(&d.0, "docker.internal");
        let e = f.install(ns(), 53).unwrap_err();
        assert!(matches!(e, ResolverError::Untrusted { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}: its folder {} is writable by group or others (mode 0777); root writes the \
                 system's resolver files only where no other user can replace them: sudo chmod go-w {}",
                f.path().display(),
                d.0.display(),
                d.0.display()
            )
        );
        assert!(!f.path().exists());
        // With the sticky bit, as /tmp, nobody else can replace root's file.
        std::fs::set_permissions(&d.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
        f.install(ns(), 53).unwrap();
    }

    #[test]
    fn state_reads_back_what_a_hand_edited_file_of_ours_says() {
        let d = TempDir::new("state");
        let f = ResolverFile::new(&d.0, "docker.internal");
        std::fs::write(
            f.path(),
            "# Written by netconnect for docker.internal; removed when netconnect stops. Do not edit.\n\
             nameserver not-an-address\n",
        )
        .unwrap();
        assert_eq!(
            f.state(),
            FileState::Ours {
                nameserver: None,
                port: None
            }
        );
    }
}
