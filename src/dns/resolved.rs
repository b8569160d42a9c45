//! A Linux host that runs systemd-resolved: per-link DNS on the tunnel
//! interface, so that questions under our domain, and only those, go to
//! our server (a "routing-only" domain, `~docker.internal`). The link's
//! settings are resolved's runtime state: they vanish with the interface,
//! and `revert` drops them while it is still up.
//!
//! Plans are `resolvectl` command lines made by pure functions
//! (golden-tested), run through [`crate::command`]. Nothing here needs
//! systemd to compile or to be tested.

use std::net::IpAddr;
use std::path::Path;

use crate::command::{Cmd, CommandError, Runner};

/// By absolute path, as every command root runs (no PATH chosen by someone
/// else); where Debian, Ubuntu, Fedora and Arch all install it.
pub const RESOLVECTL: &str = "/usr/bin/resolvectl";

/// resolved's varlink socket (systemd 246 and later), which nss-resolve
/// asks first.
pub const VARLINK_SOCKET: &str = "/run/systemd/resolve/io.systemd.Resolve";

/// Send `domain`'s questions on link `iface` to `nameserver`:`port`.
///
/// The routing domain comes first: a link with DNS servers and no
/// routing-only domain is a default route for every name (DefaultRoute
/// unset), so the other order would send all of the host's lookups to a
/// server that refuses all but ours until the second command ran.
///
/// The port is written only when it is not 53: `resolvectl` learned the
/// `ADDRESS:PORT` form in systemd 246, and a bare address still works with
/// the older ones in the common case.
pub fn set_plan(iface: &str, nameserver: IpAddr, port: u16, domain: &str) -> Vec<Cmd> {
    let server = server_arg(nameserver, port);
    vec![
        Cmd::new(
            RESOLVECTL,
            ["domain".to_owned(), iface.to_owned(), format!("~{domain}")],
        ),
        Cmd::new(RESOLVECTL, ["dns", iface, &server]),
    ]
}

/// The server as `resolvectl dns` takes it and shows it back.
fn server_arg(nameserver: IpAddr, port: u16) -> String {
    match (port, nameserver) {
        (53, a) => a.to_string(),
        (p, IpAddr::V4(a)) => format!("{a}:{p}"),
        (p, IpAddr::V6(a)) => format!("[{a}]:{p}"),
    }
}

/// Drop everything set on link `iface` (its DNS servers and domains). Fails
/// when the link is gone already, which took its settings with it.
pub fn revert_plan(iface: &str) -> Vec<Cmd> {
    vec![Cmd::new(RESOLVECTL, ["revert", iface])]
}

/// What resolved holds for link `iface`, to read back [`set_plan`]: its
/// DNS servers, then its domains.
pub fn view_plan(iface: &str) -> [Cmd; 2] {
    [
        Cmd::new(RESOLVECTL, ["dns", iface]),
        Cmd::new(RESOLVECTL, ["domain", iface]),
    ]
}

/// `Link 5 (nc0): 10.33.33.1 fd33::1` → the words after the colon.
pub fn parse_link_line(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Link ")?
                .split_once("): ")
                .map(|(_, v)| v)
        })
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The link's servers and domains as `resolvectl` shows them, against
/// [`set_plan`]'s: our server (as set_plan wrote it) and `~domain`.
pub fn check(
    iface: &str,
    nameserver: IpAddr,
    port: u16,
    domain: &str,
    dns_text: &str,
    domain_text: &str,
) -> Option<crate::readback::Disagreement> {
    let want_server = server_arg(nameserver, port);
    let servers = parse_link_line(dns_text);
    let domains = parse_link_line(domain_text);
    // resolved may show port 53 explicitly, as it was not written.
    let server_ok = servers
        .iter()
        .any(|s| *s == want_server || (port == 53 && *s == format!("{nameserver}:53")));
    let domain_ok = domains.iter().any(|d| *d == format!("~{domain}"));
    if server_ok && domain_ok {
        return None;
    }
    let shown = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(" ")
        }
    };
    Some(crate::readback::Disagreement {
        effect: format!("resolver systemd-resolved ({iface})"),
        asked: format!("DNS {want_server}, domain ~{domain}"),
        seen: format!("DNS {}, domain {}", shown(&servers), shown(&domains)),
    })
}

/// Whether systemd-resolved answers on this host. A live socket, not a
/// file: the socket file stays in `/run/systemd/resolve` after resolved
/// stopped, but nothing accepts on it then. (With a socket-activated
/// resolved, connecting starts it: it counts as running.)
pub fn running() -> bool {
    answers(Path::new(VARLINK_SOCKET))
}

fn answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Run a plan in order; the first failure stops it, and its error carries
/// the command line and `resolvectl`'s stderr.
pub async fn apply(plan: &[Cmd], runner: &impl Runner) -> Result<(), CommandError> {
    for cmd in plan {
        runner.run(cmd).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::RecordingRunner;

    fn argv(cmd: &Cmd) -> Vec<&str> {
        std::iter::once(cmd.program.as_str())
            .chain(cmd.args.iter().map(String::as_str))
            .collect()
    }

    /// `resolvectl dns nc0` and `resolvectl domain nc0` (systemd 252)
    /// after set_plan, and the cases where the link holds something else.
    #[test]
    fn the_link_is_read_back() {
        let v4: IpAddr = "10.33.33.1".parse().unwrap();
        let plan = view_plan("nc0");
        let argvs: Vec<_> = plan.iter().map(argv).collect();
        assert_eq!(
            argvs,
            [
                vec!["/usr/bin/resolvectl", "dns", "nc0"],
                vec!["/usr/bin/resolvectl", "domain", "nc0"],
            ]
        );
        let dns = "Link 5 (nc0): 10.33.33.1\n";
        let dom = "Link 5 (nc0): ~docker.internal\n";
        assert_eq!(parse_link_line(dns), ["10.33.33.1"]);
        assert_eq!(check("nc0", v4, 53, "docker.internal", dns, dom), None);
        assert_eq!(
            check(
                "nc0",
                v4,
                53,
                "docker.internal",
                "Link 5 (nc0): 10.33.33.1:53\n",
                dom
            ),
            None
        );
        let d = check("nc0", v4, 5353, "docker.internal", dns, "Link 5 (nc0):\n").unwrap();
        assert_eq!(
            d.to_string(),
            "resolver systemd-resolved (nc0): asked DNS 10.33.33.1:5353, domain ~docker.internal, the OS shows DNS 10.33.33.1, domain none"
        );
        assert!(
            parse_link_line("Failed to resolve interface \"nc9\": No such device\n").is_empty()
        );
    }

    #[test]
    fn set_plan_routes_only_our_domain_to_our_server() {
        let v4: IpAddr = "10.33.33.1".parse().unwrap();
        let v6: IpAddr = "fd33:33:33::1".parse().unwrap();
        let plan = set_plan("nc0", v4, 53, "docker.internal");
        let argvs: Vec<_> = plan.iter().map(argv).collect();
        assert_eq!(
            argvs,
            [
                vec!["/usr/bin/resolvectl", "domain", "nc0", "~docker.internal"],
                vec!["/usr/bin/resolvectl", "dns", "nc0", "10.33.33.1"],
            ]
        );
        // As a user would type it (and as `--dry-run` or an error shows it).
        assert_eq!(
            plan.iter().map(Cmd::to_string).collect::<Vec<_>>(),
            [
                "/usr/bin/resolvectl domain nc0 '~docker.internal'",
                "/usr/bin/resolvectl dns nc0 10.33.33.1",
            ]
        );
        // Another port: written out, IPv6 in brackets.
        let plan = set_plan("nc0", v4, 5353, "dev.test");
        let argvs: Vec<_> = plan.iter().map(argv).collect();
        assert_eq!(
            argvs,
            [
                vec!["/usr/bin/resolvectl", "domain", "nc0", "~dev.test"],
                vec!["/usr/bin/resolvectl", "dns", "nc0", "10.33.33.1:5353"],
            ]
        );
        assert_eq!(
            argv(&set_plan("nc0", v6, 5353, "docker.internal")[1]),
            ["/usr/bin/resolvectl", "dns", "nc0", "[fd33:33:33::1]:5353"]
        );
        assert_eq!(
            argv(&set_plan("nc0", v6, 53, "docker.internal")[1]),
            ["/usr/bin/resolvectl", "dns", "nc0", "fd33:33:33::1"]
        );
    }

    #[test]
    fn revert_plan_drops_the_links_settings() {
        assert_eq!(
            revert_plan("nc0").iter().map(argv).collect::<Vec<_>>(),
            [vec!["/usr/bin/resolvectl", "revert", "nc0"]]
        );
    }

    #[tokio::test]
    async fn apply_runs_in_order_and_stops_at_the_first_failure() {
        let runner = RecordingRunner::new();
        let plan = set_plan("nc0", "10.33.33.1".parse().unwrap(), 53, "docker.internal");
        apply(&plan, &runner).await.unwrap();
        assert_eq!(
            runner.ran(),
            [
                "/usr/bin/resolvectl domain nc0 '~docker.internal'",
                "/usr/bin/resolvectl dns nc0 10.33.33.1",
            ]
        );
        let runner = RecordingRunner::new().fail(
            "/usr/bin/resolvectl domain",
            "Failed to set domain configuration: Unit dbus-org.freedesktop.resolve1.service not found.",
        );
        let e = apply(&plan, &runner).await.unwrap_err();
        assert_eq!(runner.ran().len(), 1, "the dns command must not run");
        assert_eq!(
            e.to_string(),
            "`/usr/bin/resolvectl domain nc0 '~docker.internal'` failed (exit status: 1): \
             Failed to set domain configuration: Unit dbus-org.freedesktop.resolve1.service not found."
        );
    }

    /// A listening socket counts; the file a stopped resolved leaves behind,
    /// or none, does not.
    #[test]
    fn running_means_something_accepts_on_the_socket() {
        let dir = std::env::temp_dir().join(format!("nc-resolved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("io.systemd.Resolve");
        assert!(!answers(&sock));
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(answers(&sock));
        drop(listener);
        assert!(sock.exists(), "the stale socket file stays");
        assert!(!answers(&sock));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
