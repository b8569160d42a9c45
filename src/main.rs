use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use netconnect::cli::{Cli, Command};
use netconnect::config::{self, LogFormat};
use netconnect::settings;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sub = matches.subcommand().map(|(_, m)| m.clone());

    // The file matters to the commands that run or inspect the tunnel.
    let reads_config = matches!(
        cli.command,
        Command::Up(_) | Command::Status(_) | Command::Doctor(_) | Command::Down(_)
    );
    let explicit = settings::given(&matches, "config");
    let loaded = if reads_config {
        match config::load(&cli.config, explicit) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("netconnect: error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        config::Loaded::default()
    };
    let file = &loaded.config;
    let format = if settings::given(&matches, "log_format") {
        cli.log_format
    } else {
        file.log.format.unwrap_or(cli.log_format)
    };
    // Commands that print a report keep the log to warnings unless asked.
    let reporting = matches!(
        cli.command,
        Command::Status(_) | Command::Doctor(_) | Command::Down(_) | Command::Bugreport(_)
    );
    // The first `up` at a terminal shows its stages as they happen.
    if matches!(cli.command, Command::Up(_))
        && format == LogFormat::Human
        && !cli.quiet
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        netconnect::progress::enable();
    }
    init_logging(
        cli.verbose,
        cli.quiet,
        reporting,
        file.log.level.as_deref(),
        format,
    );

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("netconnect: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let socket = cli.control_socket.clone();
    let result = runtime.block_on(async {
        let sub = sub.as_ref().expect("a subcommand is required");
        match cli.command {
            Command::Device(args) => netconnect::device_cmd::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Up(args) => {
                let settings = settings::up(&args, sub, file);
                let ctx = netconnect::up::UpContext {
                    control_socket: socket,
                    config_path: cli.config.clone(),
                    config_explicit: explicit,
                    loaded: loaded.clone(),
                };
                netconnect::up::run(settings, ctx)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Status(args) => {
                let target = settings::target(&args.target, sub, file);
                netconnect::status::run(args.json, target, &socket, file).await
            }
            Command::Doctor(args) => {
                let target = settings::target(&args, sub, file);
                netconnect::doctor::run(target, &socket, file).await
            }
            Command::Down(args) => {
                let target = settings::target(&args, sub, file);
                netconnect::down::run(target, &socket, file)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Completions { shell } => {
                netconnect::manual::completions(shell, &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man { dir: None } => netconnect::manual::man(&mut std::io::stdout())
                .map(|()| ExitCode::SUCCESS)
                .map_err(Into::into),
            Command::Man { dir: Some(dir) } => netconnect::manual::man_pages(&dir)
                .map(|files| {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::SUCCESS
                })
                .map_err(Into::into),
            Command::Helper(args) => netconnect::helper::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::HelperCleanup(args) => netconnect::helper::cleanup::cleanup(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::HelperCheck(args) => netconnect::helper::cleanup::check(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::HelperRoutes(args) => netconnect::helper::cleanup::routes(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Service(args) => netconnect::service::run(args)
                .await
                .map(|()| ExitCode::SUCCESS),
            Command::Bugreport(args) => {
                netconnect::bugreport::run(args, sub, &cli.config, &socket).await
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::debug!(error = ?e, "failed");
            eprintln!("netconnect: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, as `{:#}` prints them, but without
/// a cause that the text already says: many of our errors show their
/// source in their own message ("cannot read X: {source}"), and the same
/// words twice read like two failures.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

/// Precedence: NETCONNECT_LOG, then -v/-q, then the file's `log.level`.
fn init_logging(
    verbose: u8,
    quiet: bool,
    reporting: bool,
    file_level: Option<&str>,
    format: LogFormat,
) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (_, 1) => "netconnect=debug,info",
        (_, 2..) => "netconnect=trace,boringtun=debug,info",
        (_, 0) if reporting => "warn",
        (_, 0) => "info",
    };
    let file_level = file_level.filter(|_| verbose == 0 && !quiet && !reporting);
    let given = std::env::var("NETCONNECT_LOG")
        .ok()
        .filter(|l| EnvFilter::try_new(l).is_ok())
        .or_else(|| {
            file_level
                .filter(|l| EnvFilter::try_new(l).is_ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| default.to_owned());
    let filter = EnvFilter::new(quiet_dependencies(&given));
    let layer = tracing_subscriber::fmt::layer().with_writer(netconnect::progress::LogWriter);
    let drawn = tracing_subscriber::filter::filter_fn(netconnect::progress::log_filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(layer.json().with_current_span(false).with_filter(drawn))
            .init(),
        LogFormat::Human => registry
            .with(
                layer
                    .with_ansi(
                        std::io::IsTerminal::is_terminal(&std::io::stderr())
                            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
                    )
                    .with_filter(drawn),
            )
            .init(),
    }
}

/// hickory's server logs every question at info: at a few hundred
/// lookups a minute that would drown what the log is for. Its warnings
/// stay; a filter that names hickory itself is taken as written.
fn quiet_dependencies(filter: &str) -> String {
    if filter.contains("hickory") {
        filter.to_owned()
    } else {
        format!("{filter},hickory_server=warn")
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn hickory_says_only_warnings_unless_asked() {
        assert_eq!(
            super::quiet_dependencies("info"),
            "info,hickory_server=warn"
        );
        assert_eq!(
            super::quiet_dependencies("netconnect=debug,info"),
            "netconnect=debug,info,hickory_server=warn"
        );
        assert_eq!(
            super::quiet_dependencies("hickory_server=debug"),
            "hickory_server=debug"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read /x: {source}")]
    struct Read {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_said_is_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Read { source: io() });
        assert_eq!(
            format!("{e:#}"),
            "cannot read /x: no such file: no such file"
        );
        assert_eq!(one_line(&e), "cannot read /x: no such file");
        // A cause the message does not say is kept, as {:#} keeps it.
        let e = anyhow::Error::new(io()).context("loading the config");
        assert_eq!(one_line(&e), "loading the config: no such file");
    }
}
