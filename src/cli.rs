//! Flags, in two stages (as ripgrep does): clap parses raw flags, then [`run`] validates them
//! into the objects that do the work. Exit codes are decided here and only here:
//! 0 everything read and no alert, 1 everything read and at least one alert, 2 an error
//! (bad rules, an unusable output, an unreadable or unsupported input or a damaged record).

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;

use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::alert::{AlertWriter, Format, Output};
use crate::engine::Engine;
use crate::flow::EndReason;
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
    /// Watch a live interface (a SPAN/mirror port) until SIGINT/SIGTERM; SIGHUP reopens the
    /// alert file.
    Live(LiveArgs),
    /// List capture devices and their addresses.
    Interfaces,
    /// Render the rules' policy section as default-deny firewall rules for the hosts of one zone.
    Firewall {
        /// Rule file or directory; repeatable. Default: the embedded rules.
        #[arg(long = "rules", value_name = "PATH")]
        rules: Vec<PathBuf>,
        /// Output dialect.
        #[arg(long, value_enum, default_value_t = FirewallFormatArg::Nftables)]
        format: FirewallFormatArg,
        /// The zone whose hosts the rules are for.
        #[arg(long, default_value = "ai")]
        zone: String,
    },
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
    /// Append one JSON flow record per ended flow to this file.
    #[arg(long, value_name = "PATH")]
    pub flows: Option<PathBuf>,
    /// After the alerts, print the analyst's report (top outside destinations per inside
    /// host, flows by policy verdict, alerts by rule) on standard error.
    #[arg(long)]
    pub report: bool,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub report_json: Option<PathBuf>,
    /// Capture files, read in this order as one timeline.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct LiveArgs {
    /// Interface to capture on.
    #[arg(short = 'i', long = "interface", value_name = "IFACE")]
    pub interface: String,
    /// libpcap filter expression applied in the kernel.
    #[arg(long, value_name = "EXPR")]
    pub bpf: Option<String>,
    /// Bytes kept of each packet (enough for every header we decode).
    #[arg(long, default_value_t = crate::capture::LiveConfig::DEFAULT_SNAPLEN, value_parser = clap::value_parser!(i32).range(64..=262144))]
    pub snaplen: i32,
    /// Do not put the interface in promiscuous mode.
    #[arg(long)]
    pub no_promisc: bool,
    /// Kernel capture buffer in MiB (default: libpcap's).
    #[arg(long, value_name = "MiB", value_parser = clap::value_parser!(u32).range(1..=2047))]
    pub buffer_size: Option<u32>,
    /// Capture and engine pairs: the kernel splits packets among them by flow (PACKET_FANOUT
    /// hash, as Suricata's cluster_flow), each tracks its own flows, alerts go to one output.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// After opening the capture and the alert output, switch to this user.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// How often to report statistics (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_name = "DUR", value_parser = parse_interval)]
    pub stats_interval: std::time::Duration,
    /// Rule file or directory; repeatable. Default: the embedded rules.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Append alerts to this file instead of standard output.
    #[arg(long, value_name = "PATH")]
    pub alerts: Option<PathBuf>,
    /// Alert format.
    #[arg(long, value_enum, default_value_t = FormatArg::Json)]
    pub format: FormatArg,
    /// Append one JSON flow record per ended flow to this file (reopened on SIGHUP too).
    #[arg(long, value_name = "PATH")]
    pub flows: Option<PathBuf>,
    /// With --flows: how often flows alive longer than this get an update record.
    #[arg(long, default_value = "5m", value_name = "DUR", value_parser = parse_interval)]
    pub flow_update_interval: std::time::Duration,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match crate::time::Duration::parse(s) {
        Some(d) if d.0 >= 100_000_000 => Ok(std::time::Duration::from_nanos(d.0 as u64)),
        _ => Err(format!(
            "bad interval {s:?}: a whole number and a unit (ms, s, m, h), at least 100ms"
        )),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallFormatArg {
    /// One `inet` table for IPv4 and IPv6 (`nft -f`).
    Nftables,
    /// iptables-restore input, the IPv4 half.
    Iptables,
    /// ip6tables-restore input, the IPv6 half.
    Ip6tables,
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
        Command::Live(args) => live(args),
        Command::Interfaces => list_interfaces(),
        Command::Firewall {
            rules,
            format,
            zone,
        } => firewall(&rules, format, &zone),
        Command::CheckRules { paths } => check_rules(&paths),
    }
}

fn eprint_err(msg: impl std::fmt::Display) {
    let _ = writeln!(io::stderr(), "exfilwatch: {msg}");
}

fn load_rules(paths: &[PathBuf]) -> Result<RuleSet, LoadError> {
    RuleSet::load(paths)
}

/// The rules, or `None` after reporting why not.
fn rules_or_report(paths: &[PathBuf]) -> Option<RuleSet> {
    load_rules(paths).map_err(eprint_err).ok()
}

/// Writes `text` to standard output; a closed pipe is not an error.
fn print_stdout(text: &str) -> u8 {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => EXIT_CLEAN,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_CLEAN,
        Err(e) => {
            eprint_err(format_args!("writing to standard output: {e}"));
            EXIT_ERROR
        }
    }
}

fn check_rules(paths: &[PathBuf]) -> u8 {
    match rules_or_report(paths) {
        Some(rs) => print_stdout(&rs.to_string()),
        None => EXIT_ERROR,
    }
}

fn open_output(path: Option<&PathBuf>) -> io::Result<Output> {
    match path {
        Some(p) => Output::append(p),
        None => Output::stdout(),
    }
}

/// The alert output, or `None` after reporting why it cannot be opened.
fn output_or_report(path: Option<&PathBuf>) -> Option<Output> {
    open_output(path)
        .map_err(|e| {
            let name = path.map_or("standard output".to_string(), |p| p.display().to_string());
            eprint_err(format_args!("{name}: cannot open alert output: {e}"));
        })
        .ok()
}

fn read(args: ReadArgs) -> u8 {
    let Some(rules) = rules_or_report(&args.rules) else {
        return EXIT_ERROR;
    };
    let Some(out) = output_or_report(args.alerts.as_ref()) else {
        return EXIT_ERROR;
    };
    let format = match args.format {
        FormatArg::Json => Format::Json,
        FormatArg::Text => Format::Text,
    };
    let mut engine = Engine::new(rules, AlertWriter::new(format, out));
    if let Some(p) = &args.flows {
        match Output::append(p) {
            Ok(o) => engine.set_flow_output(o),
            Err(e) => {
                eprint_err(format_args!(
                    "{}: cannot open flow output: {e}",
                    p.display()
                ));
                return EXIT_ERROR;
            }
        }
    }
    let want_report = args.report || args.report_json.is_some();
    if want_report {
        engine.collect_talkers();
    }
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
    let mut report_failed = false;
    if want_report {
        let r = crate::report::Report::build(&report, 10);
        if args.report {
            let _ = io::stderr().write_all(r.text().as_bytes());
        }
        if let Some(p) = &args.report_json {
            if let Err(e) = std::fs::write(p, r.json()) {
                eprint_err(format_args!(
                    "{}: writing the report failed: {e}",
                    p.display()
                ));
                report_failed = true;
            }
        }
    }
    if report.output_error.is_some() || !report.input_errors.is_empty() || report_failed {
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
    // Flows still open when the input ended (closed ones end by their FIN or RST).
    let open_at_end = r.engine.ended[EndReason::Shutdown.index()].1;
    let _ = writeln!(
        s,
        "  flows: created={} expired={} evicted={} closed={} reused={} peak={} orphan_fragments={} open_at_end={}",
        f.created, f.expired, f.evicted, f.closed, f.reused, f.peak, f.orphan_fragments, open_at_end
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
        "  alerts: {} suppressed: {} matched: {} [{}]",
        r.engine.alerts(),
        r.engine.suppressed(),
        r.engine.matched(),
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

fn list_interfaces() -> u8 {
    match crate::capture::interfaces() {
        Ok(list) => {
            let mut out = io::stdout().lock();
            for i in list {
                let mut flags = Vec::new();
                if i.up {
                    flags.push("up");
                }
                if i.running {
                    flags.push("running");
                }
                if i.loopback {
                    flags.push("loopback");
                }
                let _ = writeln!(
                    out,
                    "{}{} [{}]",
                    i.name,
                    i.description.map(|d| format!(" ({d})")).unwrap_or_default(),
                    flags.join(",")
                );
                for a in i.addresses {
                    let _ = writeln!(out, "    {a}");
                }
            }
            EXIT_CLEAN
        }
        Err(e) => {
            eprint_err(e);
            EXIT_ERROR
        }
    }
}

fn live(args: LiveArgs) -> u8 {
    use crate::capture::{LiveConfig, LiveSource};
    use crate::pipeline::live::{self, Control};
    let Some(rules) = rules_or_report(&args.rules) else {
        return EXIT_ERROR;
    };
    let user = match args
        .user
        .as_deref()
        .map(crate::privilege::lookup)
        .transpose()
    {
        Ok(u) => u,
        Err(e) => {
            eprint_err(e);
            return EXIT_ERROR;
        }
    };
    let cfg = LiveConfig {
        interface: args.interface.clone(),
        bpf: args.bpf.clone(),
        snaplen: args.snaplen,
        promisc: !args.no_promisc,
        buffer_bytes: args.buffer_size.map(|m| (m as i32) << 20),
        timeout_ms: 100,
    };
    // Open everything that needs privileges first: the captures, then the outputs.
    let mut srcs = Vec::new();
    // One fanout group per process (the kernel's group ids are per network namespace).
    let group = (std::process::id() & 0xffff) as u16;
    for i in 0..args.workers {
        let opened = LiveSource::open(&cfg).and_then(|mut s| {
            if args.workers > 1 {
                s.join_fanout(group, i > 0)?;
            }
            Ok(s)
        });
        match opened {
            Ok(s) => srcs.push(s),
            Err(e) => {
                eprint_err(e);
                return EXIT_ERROR;
            }
        }
    }
    let src = &srcs[0];
    if !crate::decode::linktype::is_supported(src.linktype()) {
        eprint_err(format_args!(
            "{}: unsupported link type {} ({})",
            args.interface,
            src.linktype(),
            crate::decode::linktype::name(src.linktype())
        ));
        return EXIT_ERROR;
    }
    let existed = args.alerts.as_ref().is_some_and(|p| p.exists());
    let Some(out) = output_or_report(args.alerts.as_ref()) else {
        return EXIT_ERROR;
    };
    let flows_existed = args.flows.as_ref().is_some_and(|p| p.exists());
    let flows_out = match args.flows.as_ref().map(|p| (p, Output::append(p))) {
        None => None,
        Some((_, Ok(o))) => Some(o),
        Some((p, Err(e))) => {
            eprint_err(format_args!(
                "{}: cannot open flow output: {e}",
                p.display()
            ));
            return EXIT_ERROR;
        }
    };
    if let Some(user) = &user {
        // Files we created as root go to the user, who must reopen them on SIGHUP.
        for (path, existed) in [(&args.alerts, existed), (&args.flows, flows_existed)] {
            if let (Some(p), false) = (path, existed) {
                if let Err(e) = crate::privilege::chown(p, user) {
                    eprint_err(format_args!("{}: chown to {}: {e}", p.display(), user.name));
                    return EXIT_ERROR;
                }
            }
        }
        if let Err(e) = crate::privilege::drop_to(user) {
            eprint_err(e);
            return EXIT_ERROR;
        }
    }
    let ctl = Control::default();
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &ctl.stop),
        (signal_hook::consts::SIGTERM, &ctl.stop),
        (signal_hook::consts::SIGHUP, &ctl.reopen),
    ] {
        // A second SIGINT/SIGTERM while stopping ends the process at once.
        if sig != signal_hook::consts::SIGHUP {
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(flag));
        }
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
            eprint_err(format_args!("installing signal handler: {e}"));
            return EXIT_ERROR;
        }
    }
    let format = match args.format {
        FormatArg::Json => Format::Json,
        FormatArg::Text => Format::Text,
    };
    let n = srcs.len();
    let mut outs = out.share(n).into_iter();
    let mut flow_outs = flows_out.map(|o| o.share(n).into_iter());
    let linktype = src.linktype();
    let mut workers: Vec<live::Worker> = Vec::with_capacity(n);
    for src in srcs {
        let out = outs.next().expect("one output per worker");
        let mut engine = Engine::new(rules.clone(), AlertWriter::new(format, out));
        engine.set_interface(&args.interface);
        if let Some(o) = flow_outs.as_mut().and_then(Iterator::next) {
            engine.set_flow_output(o);
        }
        // A host's flows land on different workers: its by_src sums and rate limits are
        // kept once.
        if let Some(first) = workers.first() {
            let worker = u16::try_from(workers.len()).unwrap_or(u16::MAX);
            engine.share_with(&first.engine, worker);
        }
        workers.push(live::Worker { src, engine });
    }
    let _ = writeln!(
        io::stderr(),
        "exfilwatch: capturing on {} (link type {}, snaplen {}{}{}){}",
        args.interface,
        linktype,
        args.snaplen,
        if cfg.promisc { ", promiscuous" } else { "" },
        if n > 1 {
            format!(", {n} workers in fanout group {group}")
        } else {
            String::new()
        },
        user.as_ref()
            .map(|u| format!(" as {} (uid {})", u.name, u.uid))
            .unwrap_or_default()
    );
    // The pipeline runs on its own thread so that a stop can be bounded: if the alert output
    // blocks (a pipe nobody reads), draining could wait forever; after a grace period we
    // report that and exit anyway.
    let stop = Arc::clone(&ctl.stop);
    let ctl_view = ctl.clone();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let stats_every = args.stats_interval;
    let updates = args.flows.as_ref().map(|_| args.flow_update_interval);
    let spawned = std::thread::Builder::new()
        .name("exfilwatch-live".into())
        .spawn(move || {
            let report = live::run(
                workers,
                ctl,
                stats_every,
                updates,
                |s| {
                    let _ = writeln!(io::stderr(), "{}", s.text());
                },
                |m| eprint_err(m),
            );
            let _ = done_tx.send(report);
        });
    if let Err(e) = spawned {
        eprint_err(format_args!("starting the pipeline: {e}"));
        return EXIT_ERROR;
    }
    const GRACE: std::time::Duration = std::time::Duration::from_millis(1500);
    let mut stopping_since = None;
    let report = loop {
        match done_rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(r) => break r,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                eprint_err("the pipeline ended without a report");
                return EXIT_ERROR;
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
        }
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > GRACE {
                eprint_err(
                    "stopping: the alert output is blocked (nobody reads it?); exiting without \
                     the last alerts and stats",
                );
                // The engines are stuck writing; the capture side still has its counts.
                if let Some(c) = ctl_view.capture_totals() {
                    eprint_err(format_args!(
                        "capture at exit: packets={} kernel_received={} kernel_drops={} \
                         if_drops={} channel_drops={} (dropped while the output was blocked)",
                        c.packets,
                        c.kernel.received,
                        c.kernel.dropped,
                        c.kernel.if_dropped,
                        c.channel_drops
                    ));
                }
                return EXIT_ERROR;
            }
        }
    };
    let _ = writeln!(io::stderr(), "{} (final)", report.stats.text());
    let mut status = EXIT_CLEAN;
    if let Some(e) = &report.capture_error {
        eprint_err(e);
        status = EXIT_ERROR;
    }
    if let Some(e) = &report.output_error {
        eprint_err(format_args!("writing alerts failed: {e}"));
        status = EXIT_ERROR;
    }
    status
}

fn firewall(paths: &[PathBuf], format: FirewallFormatArg, zone: &str) -> u8 {
    use crate::firewall::{render, FirewallFormat};
    let Some(rules) = rules_or_report(paths) else {
        return EXIT_ERROR;
    };
    let format = match format {
        FirewallFormatArg::Nftables => FirewallFormat::Nftables,
        FirewallFormatArg::Iptables => FirewallFormat::Iptables,
        FirewallFormatArg::Ip6tables => FirewallFormat::Ip6tables,
    };
    match render(&rules, zone, format) {
        Ok(text) => print_stdout(&text),
        Err(e) => {
            eprint_err(e);
            EXIT_ERROR
        }
    }
}
