//! The one place that runs other programs (`ifconfig`, `route`, `netstat`,
//! `launchctl`). Everything that changes the system on macOS is first a
//! [`Cmd`] value made by a pure function, so a golden test can compare the
//! exact command lines; a [`Runner`] then executes them. The real runner
//! sets `LC_ALL=C` (the parsers read English column names), bounds each
//! command in time, and its errors carry the command line and stderr.

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// A program and its arguments, never through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
}

impl Cmd {
    pub fn new<I, S>(program: &str, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// The command line as a user would type it (arguments with spaces or
/// shell metacharacters quoted), for errors, logs and `--dry-run`.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        Ok(())
    }
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:%=@,+".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{cmd}` could not be started: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("`{cmd}` did not finish within {}s", .after.as_secs())]
    Timeout { cmd: String, after: Duration },
}

/// Runs commands and returns their stdout. A trait so that plans can be
/// executed against a recording fake in tests.
pub trait Runner: Send + Sync {
    fn run(&self, cmd: &Cmd) -> impl Future<Output = Result<String, CommandError>> + Send;
}

/// No system command we run takes more than a moment; one that hangs (a
/// wedged `launchctl`) must become an error, not a stuck daemon.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs the real programs.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl Runner for SystemRunner {
    async fn run(&self, cmd: &Cmd) -> Result<String, CommandError> {
        let line = cmd.to_string();
        tracing::debug!(cmd = %line, "running");
        let child = tokio::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = match tokio::time::timeout(COMMAND_TIMEOUT, child).await {
            Err(_) => {
                return Err(CommandError::Timeout {
                    cmd: line,
                    after: COMMAND_TIMEOUT,
                })
            }
            Ok(Err(source)) => return Err(CommandError::Spawn { cmd: line, source }),
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(CommandError::Failed {
                cmd: line,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

/// Records every command and answers from a script: the first matching
/// rule (by command-line prefix) gives stdout or a failure's stderr.
#[cfg(test)]
#[derive(Default)]
pub struct RecordingRunner {
    pub ran: std::sync::Mutex<Vec<String>>,
    rules: Vec<(String, Result<String, String>)>,
}

#[cfg(test)]
impl RecordingRunner {
    pub fn new() -> Self {
        Self::default()
    }
    /// Commands starting with `prefix` print `stdout`.
    pub fn answer(mut self, prefix: &str, stdout: &str) -> Self {
        self.rules.push((prefix.into(), Ok(stdout.into())));
        self
    }
    /// Commands starting with `prefix` fail with `stderr`.
    pub fn fail(mut self, prefix: &str, stderr: &str) -> Self {
        self.rules.push((prefix.into(), Err(stderr.into())));
        self
    }
    pub fn ran(&self) -> Vec<String> {
        self.ran.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl Runner for RecordingRunner {
    async fn run(&self, cmd: &Cmd) -> Result<String, CommandError> {
        let line = cmd.to_string();
        self.ran.lock().unwrap().push(line.clone());
        match self
            .rules
            .iter()
            .find(|(p, _)| line.starts_with(p.as_str()))
        {
            Some((_, Ok(out))) => Ok(out.clone()),
            Some((_, Err(stderr))) => Err(CommandError::Failed {
                cmd: line,
                status: "exit status: 1".into(),
                stderr: stderr.clone(),
            }),
            None => Ok(String::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_quote_only_what_needs_it() {
        let c = Cmd::new(
            "route",
            [
                "-q",
                "-n",
                "add",
                "-inet6",
                "fe80::%utun3/64",
                "a b",
                "it's",
            ],
        );
        assert_eq!(
            c.to_string(),
            r"route -q -n add -inet6 fe80::%utun3/64 'a b' 'it'\''s'"
        );
    }

    #[tokio::test]
    async fn errors_carry_the_command_line_and_stderr() {
        let e = SystemRunner
            .run(&Cmd::new("sh", ["-c", "echo oops >&2; exit 3"]))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`sh -c 'echo oops >&2; exit 3'` failed (exit status: 3): oops"
        );
        let e = SystemRunner
            .run(&Cmd::new("/nonexistent/ifconfig", ["utun9"]))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("`/nonexistent/ifconfig utun9` could not be started:"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn output_is_in_the_c_locale() {
        let out = SystemRunner
            .run(&Cmd::new("sh", ["-c", "echo $LC_ALL"]))
            .await
            .unwrap();
        assert_eq!(out, "C\n");
    }
}
