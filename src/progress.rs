//! What the first `netconnect up` shows a person at a terminal while it
//! gets ready: a line per stage as it completes (Docker, tunnel, helper
//! image, helper, handshake), a spinner or a byte count while a stage
//! waits, and one line when traffic can flow.
//!
//! Only on a terminal, with human logs, without `-q`, and only until that
//! last line: a launchd log file, JSON logs or a restart later in the
//! daemon's life get log events instead. The events that tell the same
//! story carry the target [`TARGET`]; the log layer leaves them out while
//! progress is drawn ([`log_filter`]), so nothing is said twice.
//!
//! Logs that arrive while a spinner is drawn are written above it
//! ([`LogWriter`] clears the live lines, writes, redraws), so a warning
//! about a slow engine never lands in the middle of a spinner's line.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The log target of the events that progress replaces on a terminal.
pub const TARGET: &str = "netconnect::progress";

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: OnceLock<MultiProgress> = OnceLock::new();

/// Draw progress on stderr from now on. The caller has checked that
/// stderr is a terminal and that the user wants human output.
pub fn enable() {
    LIVE.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
    ON.store(true, Ordering::SeqCst);
}

/// Stop drawing: the daemon is ready, and what happens next is for the log.
pub fn finish() {
    ON.store(false, Ordering::SeqCst);
}

pub fn is_on() -> bool {
    ON.load(Ordering::SeqCst)
}

fn live() -> Option<&'static MultiProgress> {
    LIVE.get().filter(|_| is_on())
}

/// The per-layer filter for the terminal's log: drops [`TARGET`] events
/// while progress tells them, and the data plane's one info event
/// ("listening", which the tunnel line says; `netconnect device` logs it
/// under its own target).
pub fn log_filter(meta: &tracing::Metadata<'_>) -> bool {
    let told = meta.target() == TARGET
        || (meta.target().starts_with("netconnect::tunnel")
            && *meta.level() == tracing::Level::INFO);
    !(told && is_on())
}

/// A finished stage's line: `✔ what`.
pub fn line(what: impl AsRef<str>) {
    if let Some(m) = live() {
        let _ = m.println(format!("✔ {}", what.as_ref()));
    }
}

/// A stage in progress: a spinner with `what` until [`Step::done`]. Without
/// a terminal it is inert.
pub fn step(what: impl Into<Cow<'static, str>>) -> Step {
    let bar = live().map(|m| {
        let bar = m.add(ProgressBar::new_spinner());
        bar.set_style(spinner_style());
        bar.set_message(what);
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    Step {
        bar,
        started: Instant::now(),
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
        .expect("a valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} {bytes}/{total_bytes} {wide_bar} {eta}")
        .expect("a valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

#[derive(Debug)]
pub struct Step {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Step {
    /// From now on the stage moves through `total` bytes.
    pub fn bytes(&self, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_style(bytes_style());
        }
    }

    /// Moves the byte count on, from a task that outlives the borrow (a
    /// body stream handed to the Docker client).
    pub fn advancer(&self) -> impl Fn(u64) + Send + Sync + 'static {
        let bar = self.bar.clone();
        move |n| {
            if let Some(b) = &bar {
                b.inc(n);
            }
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Replace the spinner with `✔ what`.
    pub fn done(mut self, what: impl AsRef<str>) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            line(what);
        }
    }
}

impl Drop for Step {
    /// A stage given up (an error, a shutdown) leaves no spinner behind;
    /// the error says what happened.
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// "0.4 s", "12 s": how long a stage took, for a person.
pub fn took(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// stderr for the log, which writes above the live progress lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The fmt layer hands over each event whole, so one event is
        // written in one piece.
        match live() {
            Some(m) => m.suspend(|| io::stderr().write_all(buf))?,
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_for_a_person() {
        assert_eq!(took(Duration::from_millis(430)), "0.4 s");
        assert_eq!(took(Duration::from_millis(9_960)), "10.0 s");
        assert_eq!(took(Duration::from_secs(74)), "74 s");
    }

    #[test]
    fn without_a_terminal_nothing_is_drawn() {
        // Tests never enable progress: their stderr is not a terminal.
        assert!(!is_on());
        let s = step("loading");
        assert!(s.bar.is_none());
        s.done("loaded");
    }
}
