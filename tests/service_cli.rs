//! `netconnect service` from the outside, on Linux: the real subcommands
//! refuse in one line (they manage a macOS LaunchDaemon), and `--dry-run`
//! prints the plan that would run on a Mac, changing nothing.

use std::process::Command;

fn netconnect(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_netconnect"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[cfg(target_os = "linux")]
#[test]
fn service_subcommands_are_macos_only_in_one_line() {
    for args in [
        &["service", "install"][..],
        &["service", "uninstall"],
        &["service", "status"],
    ] {
        let (ok, out, err) = netconnect(args);
        assert!(!ok, "{args:?} exited 0");
        assert_eq!(out, "", "{args:?} printed to stdout");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
        assert!(
            err.starts_with("netconnect: error: `netconnect service` manages a macOS LaunchDaemon")
                && err.contains("--dry-run"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let (ok, out, err) = netconnect(&[
        "service",
        "install",
        "--dry-run",
        "--binary",
        "/opt/homebrew/bin/netconnect",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "# netconnect service install (dry run: nothing is changed)",
            "/bin/launchctl bootout system/dev.netconnect.daemon  # may fail: nothing loaded",
            "write /Library/LaunchDaemons/dev.netconnect.daemon.plist (0644):",
        ]
    );
    assert!(out
        .contains("\t\t<string>/opt/homebrew/bin/netconnect</string>\n\t\t<string>up</string>\n"));
    assert_eq!(
        lines.last(),
        Some(&"/bin/launchctl bootstrap system /Library/LaunchDaemons/dev.netconnect.daemon.plist")
    );
    assert!(!std::path::Path::new("/Library/LaunchDaemons/dev.netconnect.daemon.plist").exists());

    let (ok, out, _) = netconnect(&["service", "uninstall", "--dry-run"]);
    assert!(ok);
    assert_eq!(
        out,
        "# netconnect service uninstall (dry run: nothing is changed)\n\
         /bin/launchctl bootout system/dev.netconnect.daemon  # may fail: nothing loaded\n\
         rm -f /Library/LaunchDaemons/dev.netconnect.daemon.plist\n"
    );
}
