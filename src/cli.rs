//! Flags, in two stages (as ripgrep does): clap parses raw flags, then [`run`] validates them
//! into the objects that do the work. Exit codes are decided here and only here:
//! 0 everything read and no alert, 1 everything read and at least one alert, 2 an error
//! (bad rules, an unusable output, an unreadable or unsupported input or a damaged record).

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::alert::{AlertWriter, Format};
use crate::engine::Engine;
use crate::pipeline::{self, ReadReport};
use crate::rules::{LoadError, RuleSet};

/// Exit status: everything read, no alert.
pub const EXIT_CLEAN: u8 = 0;
/// Exit status: everything read, at least one alert.
pub const EXIT_ALERTS: u8 = 1;
/// Exit status: an error.
pub const EXIT_ERROR: u8 = 2;

/// Passive exfiltration detector for local-AI subnets.
#[derive(Debug, Parser)]
#[command(name = "exfilwatch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read capture files (.pcap, .pcapng; `-` for standard input) as one timeline and write
    /// alerts.
    Read(ReadArgs),
    /// Validate rule files and print what they compile to (no PATH: the embedded defaults).
    CheckRules {
        /// Rule files or directories of *.toml files.
        paths: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Rule file, or directory of *.toml files read in name order; repeatable. Default: the
    /// embedded rules/default.toml.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Alert format.
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    pub format: FormatArg,
    /// Append alerts to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub alerts: Option<PathBuf>,
    /// Do not print the summary on standard error.
    #[arg(long, short)]
    pub quiet: bool,
    /// Capture files, read in this order as one timeline.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Json,
    Text,
}

/// Parses the process arguments and runs; returns the exit status.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_CLEAN
                }
                _ => EXIT_ERROR,
            };
        }
    };
    run(cli)
}

/// Runs a parsed command line; returns the exit status.
pub fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Read(args) => read(args),
        Command::CheckRules { paths } => check_rules(&paths),
    }
}

fn eprint_err(msg: impl std::fmt::Display) {
    let _ = writeln!(io::stderr(), "exfilwatch: {msg}");
}

fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, LoadError> {
    RuleSet::load(paths)
}

fn check_rules(paths: &[PathBuf]) -> u8 {
    match load_rules(paths) {
        Ok(rs) => {
            let mut out = io::stdout().lock();
            match write!(out, "{rs}").and_then(|_| out.flush()) {
                Ok(()) => EXIT_CLEAN,
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_CLEAN,
                Err(e) => {
                    eprint_err(format_args!("writing to standard output: {e}"));
                    EXIT_ERROR
                }
            }
        }
        Err(e) => {
            eprint_err(e);
            EXIT_ERROR
        }
    }
}

fn open_output(path: Option<&PathBuf>) -> io::Result<Box<dyn Write + Send>> {
    const BUF: usize = 1 << 16;
    Ok(match path {
        Some(p) => {
            let f = OpenOptions::new().create(true).append(true).open(p)?;
            Box::new(BufWriter::with_capacity(BUF, f))
        }
        None => {
            // Our own buffer over fd 1, not Stdout's line buffering: one write per 64 KiB.
            let fd = io::stdout().as_fd().try_clone_to_owned()?;
            Box::new(BufWriter::with_capacity(BUF, std::fs::File::from(fd)))
        }
    })
}

fn read(args: ReadArgs) -> u8 {
    let rules = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(e) => {
            eprint_err(e);
            return EXIT_ERROR;
        }
    };
    let out = match open_output(args.alerts.as_ref()) {
        Ok(o) => o,
        Err(e) => {
            let name = args
                .alerts
                .as_ref()
                .map_or("standard output".to_string(), |p| p.display().to_string());
            eprint_err(format_args!("{name}: cannot open alert output: {e}"));
            return EXIT_ERROR;
        }
    };
    let format = match args.format {
        FormatArg::Json => Format::Json,
        FormatArg::Text => Format::Text,
    };
    let engine = Engine::new(rules, AlertWriter::new(format, out));
    let report = pipeline::read_files(&args.files, engine, |e| eprint_err(e));
    if let Some(e) = &report.output_error {
        let name = args
            .alerts
            .as_ref()
            .map_or("standard output".to_string(), |p| p.display().to_string());
        eprint_err(format_args!("{name}: writing alerts failed: {e}"));
    }
    if !args.quiet {
        let _ = io::stderr().write_all(summary(&args.files, &report).as_bytes());
    }
    if report.output_error.is_some() || !report.input_errors.is_empty() {
        EXIT_ERROR
    } else if report.engine.alerts() > 0 {
        EXIT_ALERTS
    } else {
        EXIT_CLEAN
    }
}

/// The human summary printed on standard error after a read.
pub fn summary(files: &[String], r: &ReadReport) -> String {
    let mut s = String::new();
    let secs = r.elapsed.as_secs_f64();
    let pps = if secs > 0.0 {
        r.packets as f64 / secs
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "exfilwatch: {} file(s), {} packets, {} bytes in {:.3} s ({:.0} packets/s)",
        files.len(),
        r.packets,
        r.bytes,
        secs,
        pps
    );
    let decoded: Vec<String> = r
        .decode
        .fields()
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        s,
        "  decode: {}",
        if decoded.is_empty() {
            "nothing decoded".to_string()
        } else {
            decoded.join(" ")
        }
    );
    let f = &r.engine.flows;
    let _ = writeln!(
        s,
        "  flows: created={} expired={} evicted={} closed={} reused={} peak={} orphan_fragments={}",
        f.created, f.expired, f.evicted, f.closed, f.reused, f.peak, f.orphan_fragments
    );
    let per_rule: Vec<String> = r
        .engine
        .rules
        .iter()
        .map(|(id, c)| {
            if c.suppressed > 0 {
                format!("{id}={} (suppressed {})", c.alerts, c.suppressed)
            } else {
                format!("{id}={}", c.alerts)
            }
        })
        .collect();
    let _ = writeln!(
        s,
        "  alerts: {} suppressed: {} [{}]",
        r.engine.alerts(),
        r.engine.suppressed(),
        per_rule.join(", ")
    );
    if !r.input_errors.is_empty() {
        let _ = writeln!(s, "  input errors: {}", r.input_errors.len());
    }
    if r.output_closed {
        let _ = writeln!(s, "  output closed by its reader: stopped early");
    }
    s
}
