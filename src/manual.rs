//! Shell completions and man pages, generated from the same clap definition
//! as the parser, so they cannot drift from the real flags.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// `netconnect completions SHELL`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = without_hidden_commands(Cli::command());
    clap_complete::generate(shell, &mut cmd, "netconnect", out);
}

/// `cmd` less its hidden subcommands. clap_complete offers hidden
/// subcommands (it filters hidden flags, not commands), and a user who
/// tabs into `helper-cleanup` meets a command that only makes sense inside
/// the VM. clap has no way to remove a subcommand, so the tree is rebuilt
/// from its visible parts; flags, help and version are carried over.
fn without_hidden_commands(cmd: clap::Command) -> clap::Command {
    let mut out = clap::Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().cloned())
        .subcommand_required(cmd.is_subcommand_required_set())
        .hide(cmd.is_hide_set());
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_owned());
    }
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out = out.subcommand(without_hidden_commands(sub.clone()));
    }
    out
}

/// `netconnect man`: the page netconnect(8) as roff (`man -l <(netconnect man)`).
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .render(out)
}

/// `netconnect man --dir DIR`: netconnect.8 and one page per command
/// (netconnect-status.8, ...), for packaging. Returns the files written.
pub fn man_pages(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = vec![clap_mangen::Man::new(cmd.clone())
        .section("8")
        .generate_to(dir)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        out.push(
            clap_mangen::Man::new(sub.clone())
                .section("8")
                .generate_to(dir)?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_scripts_know_the_subcommands_and_flags() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut buf = Vec::new();
            completions(shell, &mut buf);
            let s = String::from_utf8(buf).unwrap();
            for word in [
                "status",
                "doctor",
                "down",
                "completions",
                "json",
                "control-socket",
            ] {
                assert!(s.contains(word), "{shell:?} completion lacks {word}");
            }
            // How each shell spells an offered command: bash's case arms
            // and `opts`, zsh's `'name:about'` and `(name)`, fish's `-a`.
            for name in ["helper", "helper-cleanup", "helper-check", "man"] {
                let offered_by_bash = s
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("opts=\""))
                    .any(|opts| opts.trim_end_matches('"').split(' ').any(|w| w == name));
                assert!(!offered_by_bash, "{shell:?} completion offers {name}");
                for spelled in [
                    format!(",{name})"),
                    format!("'{name}:"),
                    format!("({name})"),
                    format!("-a \"{name}\""),
                ] {
                    assert!(
                        !s.contains(&spelled),
                        "{shell:?} completion offers the internal command {name} ({spelled:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn man_page_has_the_usual_sections() {
        let mut buf = Vec::new();
        man(&mut buf).unwrap();
        let s = String::from_utf8(buf).unwrap();
        assert!(s.contains(".TH netconnect 8"), "{s}");
        for section in [".SH NAME", ".SH SYNOPSIS", ".SH DESCRIPTION", ".SH OPTIONS"] {
            assert!(s.contains(section), "man page lacks {section}");
        }
        for word in ["status", "doctor", "down", "control\\-socket"] {
            assert!(s.contains(word), "man page lacks {word}");
        }
        assert!(
            !s.contains("helper\\-cleanup"),
            "internal command in the man page"
        );
    }

    #[test]
    fn one_page_per_command() {
        let dir = std::env::temp_dir().join(format!("nc-man-{}", std::process::id()));
        let files = man_pages(&dir).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "netconnect.8",
            "netconnect-status.8",
            "netconnect-down.8",
            "netconnect-doctor.8",
        ] {
            assert!(names.contains(&want.to_string()), "{names:?} lacks {want}");
        }
        let status = std::fs::read_to_string(dir.join("netconnect-status.8")).unwrap();
        assert!(
            status.contains(".SH SYNOPSIS") && status.contains("\\-\\-json"),
            "{status}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
