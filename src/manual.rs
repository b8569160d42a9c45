//! Shell completions and man pages, generated from the same clap definition
//! as the parser, so they cannot drift from the real flags.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;

/// `netconnect completions SHELL`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "netconnect", out);
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
