//! The Homebrew formula (`packaging/homebrew/netconnect.rb`) can only really
//! run on a Mac; here we check what can be checked: Ruby accepts it, and its
//! `service do` block starts netconnect the way `netconnect service install`
//! does (same arguments, kept alive, started at load, one log file for
//! stdout and stderr, as root). The formula's Homebrew paths (`opt_bin`,
//! `var`) differ from the plist's by prefix only, so the comparison is by
//! program name, arguments and log file name.

use std::path::Path;
use std::process::Command;

const FORMULA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/homebrew/netconnect.rb"
);

#[test]
fn formula_is_valid_ruby() {
    let out = Command::new("ruby")
        .args(["-c", FORMULA])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ruby ({e}): install it with `apt-get install -y ruby` (scripts/setup.sh does)")
        });
    assert!(
        out.status.success(),
        "ruby -c {FORMULA}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Syntax OK");
}

/// The lines of the `service do ... end` block.
fn service_block(formula: &str) -> Vec<&str> {
    let mut lines = formula.lines().skip_while(|l| l.trim() != "service do");
    let open = lines.next().expect("no `service do` block in the formula");
    let indent = open.len() - open.trim_start().len();
    lines
        .take_while(|l| !(l.trim() == "end" && l.len() - l.trim_start().len() == indent))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The value after `key ` in the block.
fn value<'a>(block: &[&'a str], key: &str) -> Option<&'a str> {
    block
        .iter()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
}

/// `opt_bin/"netconnect"` -> `netconnect`; `var/"log/netconnect.log"` -> `netconnect.log`.
fn file_name(ruby_path: &str) -> String {
    let quoted = ruby_path.split('"').nth(1).unwrap_or(ruby_path);
    Path::new(quoted)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn formula_service_and_launchd_plist_agree() {
    let formula = std::fs::read_to_string(FORMULA).unwrap();
    let block = service_block(&formula);

    // run [opt_bin/"netconnect", "up"]
    let run = value(&block, "run").expect("no `run` in the service block");
    let items: Vec<&str> = run
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(items[0], r#"opt_bin/"netconnect""#, "{run}");
    let brew_args: Vec<String> = items[1..]
        .iter()
        .map(|a| a.trim_matches('"').to_string())
        .collect();

    let xml = netconnect::service::plist_xml(Path::new("/usr/local/bin/netconnect")).unwrap();
    let plist = plist::Value::from_reader_xml(xml.as_bytes()).unwrap();
    let dict = plist.as_dictionary().unwrap();
    let plist_args: Vec<String> = dict["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap().to_string())
        .collect();

    assert_eq!(
        file_name(items[0]),
        file_name(&plist_args[0]),
        "different programs"
    );
    assert_eq!(brew_args, plist_args[1..], "different arguments");
    assert_eq!(brew_args, netconnect::service::SERVICE_ARGS);

    assert_eq!(value(&block, "keep_alive"), Some("true"));
    assert_eq!(dict["KeepAlive"].as_boolean(), Some(true));
    // brew services starts at load unless told otherwise; so does the plist.
    assert_eq!(value(&block, "run_at_load"), None);
    assert_eq!(dict["RunAtLoad"].as_boolean(), Some(true));
    // Both are system daemons: routes and utun need root.
    assert_eq!(value(&block, "require_root"), Some("true"));

    let out = value(&block, "log_path").expect("no log_path");
    let err = value(&block, "error_log_path").expect("no error_log_path");
    assert_eq!(out, err, "the formula splits stdout and stderr");
    let (p_out, p_err) = (
        dict["StandardOutPath"].as_string().unwrap(),
        dict["StandardErrorPath"].as_string().unwrap(),
    );
    assert_eq!(p_out, p_err, "the plist splits stdout and stderr");
    assert_eq!(file_name(out), file_name(p_out), "different log files");
}

#[test]
fn formula_tells_the_one_command_and_installs_the_release_per_architecture() {
    let formula = std::fs::read_to_string(FORMULA).unwrap();
    assert!(formula.contains("sudo brew services start netconnect"));
    // Nothing is compiled on the Mac: the release tarball is installed.
    assert!(
        !formula.contains("depends_on \"rust\""),
        "the formula builds from source"
    );
    assert!(!formula.contains("cargo"), "the formula builds from source");
    assert!(
        formula.contains("depends_on macos: :big_sur"),
        "macOS 11 is the minimum"
    );
    // One tarball per Mac architecture (they differ by the helper archive
    // of the VM), with a url and a sha256 each; scripts/release.sh fills
    // the sha256 in (tests/release.rs checks them against the artifacts).
    let version = env!("CARGO_PKG_VERSION");
    for (block, mac) in [("on_arm do", "arm64"), ("on_intel do", "x86_64")] {
        let body: Vec<&str> = formula
            .lines()
            .skip_while(|l| l.trim() != block)
            .skip(1)
            .take_while(|l| l.trim() != "end")
            .map(str::trim)
            .collect();
        assert_eq!(body.len(), 2, "{block}: {body:?}");
        assert_eq!(
            body[0],
            format!(
                "url \"https://github.com/netconnect-dev/netconnect/releases/download/v{version}/\
                 netconnect-{version}-macos-{mac}.tar.gz\""
            )
        );
        assert!(body[1].starts_with("sha256 \"") && body[1].len() == "sha256 \"\"".len() + 64);
    }
    // Where `up` looks for the helper archive: ../share/netconnect/ from
    // bin/ (pkgshare), under the name for the VM's architecture.
    assert!(formula.contains(r#"bin.install "bin/netconnect""#));
    assert!(formula.contains(r#"pkgshare.install Dir["share/netconnect/*.tar.gz"]"#));
    let arm = netconnect::docker::vmside::image::archive_name("arm64");
    assert_eq!(
        arm.replace("arm64", "#{vm_arch}"),
        "netconnect-helper-linux-#{vm_arch}.tar.gz"
    );
    assert!(formula
        .contains(r#"assert_path_exists pkgshare/"netconnect-helper-linux-#{vm_arch}.tar.gz""#));
    assert!(formula.contains(r#"vm_arch = Hardware::CPU.arm? ? "arm64" : "amd64""#));
}
