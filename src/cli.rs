//! The command line: clap's `Args`, and the one translation from flags to
//! [`Overrides`].
//!
//! No I/O here: the config file is named, not read, and the log format is chosen, not
//! installed. `main` does both, so parsing flags can be tested on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config::Overrides;

/// An edge proxy for Server-Sent Events.
///
/// Opens one upstream connection per event source and fans it out to every client,
/// keeps recent events so a client that reconnects with Last-Event-ID resumes with no
/// gap, and drains gracefully on SIGTERM. SIGHUP reloads the configuration.
#[derive(Clone, Debug, Parser)]
#[command(name = "sse-gateway", version, about)]
pub struct Args {
    /// YAML configuration file
    #[arg(short, long, value_name = "FILE", default_value = "gateway.yaml")]
    pub config: PathBuf,

    /// Serve plain HTTP on ADDR instead of the configured listeners (repeatable;
    /// 127.0.0.1:0 binds a free port)
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// Bind the admin listener (/healthz, /readyz, /metrics) on ADDR instead of admin.addr
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<SocketAddr>,

    /// Log format on stderr; the level comes from RUST_LOG (default info)
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Load and validate the configuration, print a summary and exit (0 if valid, 2 if not)
    #[arg(long)]
    pub check: bool,

    /// Worker threads; default one per CPU the process may run on (its affinity
    /// mask, so `taskset` and cgroup cpusets count). 1 runs everything on one thread
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines
    #[default]
    Text,
    /// One JSON object per line
    Json,
}

impl Args {
    /// How many worker threads to run, given the CPUs available to the process.
    pub fn workers(&self, available: usize) -> usize {
        self.workers.map_or(available.max(1), usize::from)
    }

    /// The flags that replace configured values, to be merged before validation.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            admin: self.admin,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap; clippy.toml may not say so yet

    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("sse-gateway").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn no_flags_give_the_documented_defaults() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.config, PathBuf::from("gateway.yaml"));
        assert!(args.listen.is_empty());
        assert_eq!(args.admin, None);
        assert_eq!(args.log_format, LogFormat::Text);
        assert!(!args.check);
        assert_eq!(args.workers(2), 2);
        assert_eq!(args.workers(0), 1);
        let overrides = args.overrides();
        assert!(overrides.listen.is_empty());
        assert_eq!(overrides.admin, None);
    }

    #[test]
    fn every_flag_is_parsed() {
        let args = parse(&[
            "-c",
            "deploy/gw.yaml",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:8080",
            "--admin",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--check",
            "--workers",
            "1",
        ])
        .unwrap();
        assert_eq!(args.workers(8), 1);
        assert_eq!(args.config, PathBuf::from("deploy/gw.yaml"));
        assert_eq!(
            args.listen,
            [
                "127.0.0.1:0".parse().unwrap(),
                "[::1]:8080".parse::<SocketAddr>().unwrap()
            ]
        );
        assert_eq!(args.admin, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(args.check);
    }

    #[test]
    fn long_config_flag_and_equals_syntax_work() {
        let args = parse(&["--config=other.yaml", "--log-format=text"]).unwrap();
        assert_eq!(args.config, PathBuf::from("other.yaml"));
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn overrides_carry_listen_and_admin() {
        let args = parse(&[
            "--listen",
            "0.0.0.0:1",
            "--listen",
            "0.0.0.0:2",
            "--admin",
            "127.0.0.1:3",
        ])
        .unwrap();
        let overrides = args.overrides();
        assert_eq!(
            overrides.listen,
            [
                "0.0.0.0:1".parse().unwrap(),
                "0.0.0.0:2".parse::<SocketAddr>().unwrap()
            ]
        );
        assert_eq!(overrides.admin, Some("127.0.0.1:3".parse().unwrap()));
    }

    #[test]
    fn listen_must_be_a_socket_address() {
        let err = parse(&["--listen", "localhost:8080"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        let err = parse(&["--admin", "9090"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn unknown_log_format_lists_the_choices() {
        let err = parse(&["--log-format", "xml"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(text.contains("text") && text.contains("json"), "{text}");
    }

    #[test]
    fn help_and_version_work_as_clap_users_expect() {
        let err = parse(&["--help"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayHelp);
        let help = err.to_string();
        for flag in ["--config", "--listen", "--admin", "--log-format", "--check"] {
            assert!(help.contains(flag), "help lacks {flag}:\n{help}");
        }
        assert!(help.contains("Server-Sent Events"), "{help}");
        let err = parse(&["--version"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DisplayVersion);
        assert!(err.to_string().starts_with("sse-gateway "));
    }

    #[test]
    fn unknown_flags_are_rejected() {
        let err = parse(&["--lisen", "127.0.0.1:0"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownArgument);
    }
}
