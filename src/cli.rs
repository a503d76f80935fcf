//! The command line: `serve`, `check`, `presets`.
//!
//! Exit codes: 0 success; 1 a scenario is invalid (`check`, or `serve`
//! refusing one), or `report --check` judged the sender badly; 2 bad usage,
//! a runtime error (a port in use...), or nothing for `report` to judge.
//! Logs go to stderr, data to stdout; a closed stdout (`| head`) is success.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::api::ApiOptions;
use crate::capture::{Capture, Store};
use crate::certs::{self, CertFault};
use crate::scenario::model::Expect;
use crate::scenario::{self, presets, LoadError};
use crate::server::{self, CaStore, Options, Server, Source};

#[derive(Parser)]
#[command(
    name = "mailfault",
    version,
    about = "A fake receiving mail server that answers every SMTP command as a TOML scenario says"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the fake MX.
    Serve(Box<ServeArgs>),
    /// Validate scenario files: every FILE:LINE:COL error and exit 1, or a summary.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// How the sender behaved: deliveries, findings, and the scenario's [[expect]].
    ///
    /// Senders are told apart by client IP, so a sender that opens a new
    /// connection for every retry is judged as one. Works on a running
    /// server's events file: sessions still open are not judged yet.
    ///
    /// Exit codes: 0 the report was made (with --check: every expectation
    /// held and no finding is an error); 1 with --check, the sender
    /// misbehaved or an expectation failed; 2 nothing to judge (no events,
    /// no client, not an events file, an unreadable file or scenario).
    #[command(verbatim_doc_comment)]
    Report {
        /// Transcripts written by `serve --events` (`-` for stdin).
        #[arg(required = true)]
        events: Vec<PathBuf>,
        /// Scenario whose [[expect]] to check (default: the one each listener served).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Exit 1 when an expectation failed or the sender misbehaved.
        #[arg(long)]
        check: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also write the report as one self-contained HTML page (timeline
        /// and findings; no network needed to view it), e.g. a CI artifact.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// What an SMTP reply means and what a sender should do (argument or stdin).
    Explain {
        /// The reply, e.g. "550 5.1.1 User unknown"; several arguments are
        /// joined; none (or `-`) reads stdin, multi-line replies included.
        reply: Vec<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Also give the human text in this language (ja).
        #[arg(long, value_parser = ["en", "ja"])]
        lang: Option<String>,
    },
    /// Read a bounce message and print a scenario that reproduces it.
    FromBounce {
        /// Bounces: .eml files, mbox files, folders of them, JSON
        /// notifications (Amazon SES, SendGrid, Mailgun, Postmark), MTA logs
        /// (Postfix, Exim, Sendmail), or `-` for stdin. The kind is detected.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the facts found (JSON) instead of a scenario.
        #[arg(long)]
        json: bool,
        /// Print hard and soft counts by reason, provider and domain, and
        /// the addresses to remove, instead of a scenario.
        #[arg(long)]
        summary: bool,
    },
    /// Write a test CA and a server certificate and key (PEM) for a host name.
    Certs {
        /// Folder to write ca.pem, ca.key, server.pem, server.key (a CA already there is reused).
        #[arg(long)]
        out: PathBuf,
        /// The server's host name (localhost, 127.0.0.1 and ::1 are added).
        #[arg(long, default_value = "mailfault.test")]
        hostname: String,
    },
    /// List the built-in replies of real providers (usable as `preset = "ID"`).
    Presets {
        /// Only this provider (matches the id prefix or the provider name);
        /// an unknown one is an error listing them.
        #[arg(long)]
        provider: Option<String>,
        /// Only presets for this stage; one without presets is an error
        /// listing those that have some.
        #[arg(long)]
        stage: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Scenario file (default: the built-in default scenario with magic recipients).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:2525); repeat for several.
    /// `ADDR=FILE` gives that listener its own scenario and counters. Port 0
    /// picks a free port. `ADDR,proxy` (or `ADDR,proxy=FILE`): connections
    /// start with a PROXY protocol header (v1 or v2).
    #[arg(long = "listen")]
    listen: Vec<String>,
    /// Implicit-TLS listener (SMTPS: TLS from the first byte), `ADDR` or
    /// `ADDR=FILE`, with `,proxy` after ADDR as for --listen; repeatable.
    #[arg(long = "listen-tls")]
    listen_tls: Vec<String>,
    /// Folder of the test CA (`ca.pem`, `ca.key`), made there if missing
    /// [default: mailfault-ca in the temporary folder].
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Certificate fault for one listener, `ADDR=FAULT` (valid, self_signed,
    /// expired, wrong_host, not_yet_valid); overrides the scenario's. ADDR
    /// must name exactly one listener.
    #[arg(long = "certificate")]
    certificate: Vec<String>,
    /// Host name in the greeting and EHLO reply (overrides the scenario's).
    #[arg(long)]
    hostname: Option<String>,
    /// Write every session event as JSON Lines to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// When the server stops, write the sender report here (JSON if FILE ends in .json).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also keep each accepted message in DIR: `<id>.eml` and its envelope
    /// `<id>.json`, fsynced before the 250 (a failed write answers 451 4.3.0).
    #[arg(long, alias = "capture-dir", value_name = "DIR")]
    store: Option<PathBuf>,
    /// Bytes of messages kept in memory; the oldest go first past it.
    #[arg(long, default_value = "256MB", value_name = "SIZE", value_parser = parse_size)]
    store_max_bytes: u64,
    /// Address of the HTTP API (JSON under /api/v1, /metrics, /livez,
    /// /readyz); port 0 picks a free port [default: 127.0.0.1:8025, and
    /// no API when that port is taken].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_api")]
    api: Option<SocketAddr>,
    /// Run without the HTTP API.
    #[arg(long)]
    no_api: bool,
    /// Token the API asks for (`Authorization: Bearer TOKEN`); required
    /// when --api is not a loopback address.
    #[arg(
        long,
        env = "MAILFAULT_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    api_token: Option<String>,
    /// How long open sessions may finish after SIGINT/SIGTERM before 421 4.3.2.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    grace: Duration,
    /// Open sessions at most; more are answered 421 4.7.0 and closed.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// Open sessions per client IP at most (0: no limit); more are answered
    /// 421 4.7.0 and closed.
    #[arg(long, default_value_t = 0)]
    max_sessions_per_ip: usize,
    /// Message bytes all sessions may buffer at once; a message that does
    /// not fit is answered 452 4.3.1 (e.g. "512MB", "1GiB").
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    max_message_memory: u64,
    /// No session lasts longer than this, whatever it does.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    session_lifetime: Duration,
    /// Listen backlog of every listener (the kernel caps it at
    /// net.core.somaxconn).
    #[arg(long, default_value_t = server::limits::DEFAULT_BACKLOG)]
    backlog: u32,
    /// Threads that serve sessions (0: one fewer than the machine has
    /// cores, at least one). The API has a thread of its own.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Do not reload scenario files when they change (SIGHUP still reloads).
    #[arg(long)]
    no_watch: bool,
    /// Where counters live: `memory` (this process), `redis://HOST:PORT[/DB]`,
    /// `rediss://HOST:PORT[/DB]` (TLS) or `redis-cluster://HOST:PORT[,HOST:PORT...]`;
    /// a password goes in the URL (`redis://:PASSWORD@HOST:PORT`). Instances
    /// with the same scenario and store answer as one.
    #[arg(long, default_value = "memory")]
    state: String,
    /// What stateful rules do while the store is unreachable: `tempfail`
    /// (answer 451 4.3.0) or `ignore` (act as if they did not match).
    #[arg(long, default_value = "tempfail")]
    state_fail: crate::state::FailMode,
    /// Every listener expects a PROXY protocol header (v1 or v2, as HAProxy's
    /// send-proxy / send-proxy-v2 send) and takes the client address from
    /// it; a connection without a valid header within 5 s is closed.
    #[arg(long)]
    proxy_protocol: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    scenario::units::duration(s)
}

fn parse_size(s: &str) -> Result<u64, String> {
    scenario::units::size(s)
}

/// The API options `serve` was given.
fn api_options(args: &ServeArgs) -> Option<ApiOptions> {
    if args.no_api {
        return None;
    }
    let optional = args.api.is_none();
    let addr = args
        .api
        .unwrap_or_else(|| crate::api::DEFAULT_ADDR.parse().expect("a valid address"));
    Some(ApiOptions {
        addr,
        token: args.api_token.clone(),
        optional,
    })
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Kept to the end of main: dropping it flushes the last log lines.
    let _logs = init_logs(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(le) = e.downcast_ref::<LoadError>() {
                eprintln!("{le}");
                return ExitCode::from(1);
            }
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("mailfault: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Sets up logs on stderr and returns the guard that flushes them at exit.
///
/// Colour codes only when stderr is a terminal (and `NO_COLOR` is unset):
/// logs sent to a file or a pipe stay plain text.
///
/// Lines go through a non-blocking writer: a thread of its own writes them,
/// so an stderr nobody reads (a full pipe) never stalls an SMTP session.
/// The price is that it is lossy: when the queue of pending lines is full
/// (128,000 lines), new lines are dropped rather than waited for.
/// The runtime's worker threads: `asked`, or one fewer than the cores.
/// A test server runs beside the sender it tests (a CI job, a load
/// generator), so it leaves that sender a core; and on a small machine one
/// thread serves sessions with less work than two that keep waking each
/// other (docs/performance.md, "Threads").
fn worker_threads(asked: usize) -> usize {
    if asked > 0 {
        return asked;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.saturating_sub(1).max(1)
}

/// The runtime that serves SMTP. One thread (the default on two cores) is
/// a current-thread runtime: the main thread serves every session, without
/// the multi-thread scheduler's bookkeeping between wake-ups (a
/// connection's server CPU fell from 240 to 210 µs when it came in;
/// docs/performance.md, "One serving thread is a current-thread
/// runtime"). A reload
/// (SIGHUP, as a watched file's already did) compiles the scenario on that
/// thread, so sessions pause for it, a few milliseconds. A Redis state
/// store keeps the multi-thread runtime: its synchronous calls (the lease
/// refresh) let other sessions go on through `block_in_place`, which only
/// that runtime has.
fn runtime(
    threads: usize,
    state: &crate::state::Backend,
) -> std::io::Result<tokio::runtime::Runtime> {
    if threads == 1 && matches!(state, crate::state::Backend::Memory) {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
}

fn init_logs(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Check { files } => check(&files),
        Command::Certs { out, hostname } => make_certs(&out, &hostname),
        Command::FromBounce {
            files,
            json,
            summary,
        } => from_bounce(&files, json, summary),
        Command::Explain { reply, json, lang } => {
            explain(&reply, json, lang.as_deref() == Some("ja"))
        }
        Command::Report {
            events,
            scenario,
            check,
            json,
            html,
        } => report(&events, scenario.as_deref(), check, json, html.as_deref()),
        Command::Presets {
            provider,
            stage,
            json,
        } => list_presets(provider, stage, json),
    }
}

fn check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let mut bad = false;
    let mut out = std::io::stdout().lock();
    for f in files {
        match scenario::load_file(f) {
            Ok(s) => writeln!(
                out,
                "{}: ok: scenario {:?}, {} rule{}{}{}",
                f.display(),
                s.name,
                s.rules.len(),
                if s.rules.len() == 1 { "" } else { "s" },
                match s.expects.len() {
                    0 => String::new(),
                    1 => ", 1 expectation".into(),
                    n => format!(", {n} expectations"),
                },
                if s.server.magic_recipients {
                    ", magic recipients on"
                } else {
                    ""
                }
            )?,
            Err(e) => {
                bad = true;
                eprintln!("{e}");
            }
        }
    }
    Ok(if bad {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn report(
    paths: &[PathBuf],
    scenario_file: Option<&std::path::Path>,
    check: bool,
    json: bool,
    html: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use crate::report::input;
    let nothing = |why: String| {
        eprintln!("mailfault report: {why}");
        Ok(ExitCode::from(input::EXIT_NOTHING))
    };
    let what: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let read = match input::read(paths) {
        Ok(r) => r,
        Err(why) => return nothing(why),
    };
    if let Some(why) = input::nothing_to_judge(&read, &what.join(", ")) {
        return nothing(why);
    }
    let expects = match scenario_file {
        Some(f) => match scenario::load_file(f) {
            Ok(s) => s.expects,
            Err(e) => return nothing(format!("{e}")),
        },
        None => input::expectations(&read.events, |w| {
            eprintln!("mailfault report: warning: {w}")
        }),
    };
    let r = crate::report::build(&read.events, &expects, read.skipped);
    if let Some(file) = html {
        std::fs::write(file, crate::report::html(&r))
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
    } else {
        write!(out, "{}", crate::report::text(&r))?;
    }
    Ok(ExitCode::from(if check && !r.passed() {
        input::EXIT_FAILED
    } else {
        input::EXIT_PASSED
    }))
}

/// Writes the report when `serve` stops.
fn write_report(
    server: &Server,
    events_file: Option<&std::path::Path>,
    to: &std::path::Path,
) -> anyhow::Result<()> {
    let (events, skipped) = match events_file {
        Some(f) => {
            let read =
                crate::report::input::read(&[f.to_path_buf()]).map_err(anyhow::Error::msg)?;
            (read.events, read.skipped)
        }
        None => {
            if server.capture.events_truncated() {
                tracing::warn!(
                    "the report covers the last {} events only; use --events FILE for all",
                    crate::capture::KEEP_EVENTS
                );
            }
            (server.capture.events(), 0)
        }
    };
    let expects: Vec<Expect> = server
        .listeners
        .iter()
        .flat_map(|b| b.slot.current().engine.scenario.expects.clone())
        .collect();
    let r = crate::report::build(&events, &expects, skipped);
    let body = if to.extension().is_some_and(|e| e == "json") {
        serde_json::to_string_pretty(&r)?
    } else {
        crate::report::text(&r)
    };
    std::fs::write(to, body)
        .with_context(|| format!("cannot write the report to {}", to.display()))?;
    tracing::info!(file = %to.display(), passed = r.passed(), "report written");
    Ok(())
}

fn explain(args: &[String], json: bool, ja: bool) -> anyhow::Result<ExitCode> {
    let input = if args.is_empty() || args == ["-"] {
        std::io::read_to_string(std::io::stdin())?
    } else {
        args.join(" ")
    };
    let Some(reply) = crate::bounce::explain::ReadReply::parse(&input) else {
        eprintln!("mailfault: no SMTP reply code (200-599) found in the input");
        return Ok(ExitCode::from(1));
    };
    let e = crate::bounce::explain::explain(reply, ja);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&e)?)?;
    } else {
        write!(out, "{}", crate::bounce::explain::render(&e))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Files of a folder, sorted, up to a bound (a folder of bounces, not a
/// whole disk); sub-folders are read one level deep.
const MAX_FILES: usize = 100_000;

fn bounce_sources(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = vec![];
    for p in paths {
        if p.is_dir() {
            let mut files = vec![];
            for e in std::fs::read_dir(p).with_context(|| format!("cannot read {}", p.display()))? {
                let path = e?.path();
                if path.is_dir() {
                    for e in std::fs::read_dir(&path)? {
                        files.push(e?.path());
                    }
                } else {
                    files.push(path);
                }
            }
            files.retain(|f| f.is_file());
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
        anyhow::ensure!(out.len() <= MAX_FILES, "more than {MAX_FILES} files given");
    }
    Ok(out)
}

fn from_bounce(paths: &[PathBuf], json: bool, summary: bool) -> anyhow::Result<ExitCode> {
    use crate::bounce::input;
    let sources = bounce_sources(paths)?;
    let mut found = vec![];
    for file in &sources {
        let read = if file.as_os_str() == "-" {
            input::read_capped(std::io::stdin().lock())?
        } else {
            std::fs::File::open(file)
                .and_then(input::read_capped)
                .with_context(|| format!("cannot read {}", file.display()))?
        };
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                continue;
            }
        };
        for r in input::read(&file.display().to_string(), &bytes) {
            match r.result {
                Ok(b) => found.push(b),
                Err(e) => eprintln!("{}: {e}", r.name),
            }
        }
    }
    let Some(bounce) = input::merge(found) else {
        return Ok(ExitCode::from(1));
    };
    let mut out = std::io::stdout().lock();
    if summary {
        let s = input::summarize(&bounce);
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&s)?)?;
        } else {
            write!(out, "{}", input::render(&s))?;
        }
    } else if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&bounce)?)?;
    } else {
        let name = match sources.as_slice() {
            [one] => one
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "stdin".into()),
            many => format!("{} files", many.len()),
        };
        write!(
            out,
            "{}",
            crate::bounce::reproduce::scenario(&bounce, &name)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn make_certs(dir: &std::path::Path, hostname: &str) -> anyhow::Result<ExitCode> {
    let ca = certs::TestCa::load_or_create(dir)?;
    let issued = ca.issue(&certs::server_names(hostname), CertFault::Valid)?;
    std::fs::write(dir.join("server.pem"), &issued.cert_pem)?;
    std::fs::write(dir.join("server.key"), &issued.key_pem)?;
    let mut out = std::io::stdout().lock();
    for f in ["ca.pem", "ca.key", "server.pem", "server.key"] {
        writeln!(out, "{}", dir.join(f).display())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// An unknown `--provider` or `--stage` is an error listing the valid
/// values, not an empty table.
fn check_preset_filters(provider: Option<&str>, stage: Option<&str>) -> anyhow::Result<()> {
    let all = presets::all();
    if let Some(want) = provider {
        let known = all.iter().any(|p| {
            p.id.split('.').next() == Some(want) || p.provider.to_ascii_lowercase().contains(want)
        });
        if !known {
            let mut prefixes: Vec<&str> = vec![];
            for prefix in all.iter().filter_map(|p| p.id.split('.').next()) {
                if !prefixes.contains(&prefix) {
                    prefixes.push(prefix);
                }
            }
            anyhow::bail!(
                "--provider {want:?}: no such provider; use one of {} (or a part of a provider's name)",
                prefixes.join(", ")
            );
        }
    }
    if let Some(want) = stage {
        let mut stages: Vec<&str> = all.iter().map(|p| p.stage.as_str()).collect();
        stages.sort_unstable();
        stages.dedup();
        if !stages.contains(&want) {
            anyhow::bail!(
                "--stage {want:?}: no presets for that stage; use one of {}",
                stages.join(", ")
            );
        }
    }
    Ok(())
}

fn list_presets(
    provider: Option<String>,
    stage: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let provider = provider.map(|p| p.to_ascii_lowercase());
    check_preset_filters(provider.as_deref(), stage.as_deref())?;
    let chosen: Vec<&presets::Preset> = presets::all()
        .iter()
        .filter(|p| {
            provider.as_ref().is_none_or(|want| {
                p.id.split('.').next().is_some_and(|prefix| prefix == want)
                    || p.provider.to_ascii_lowercase().contains(want.as_str())
            })
        })
        .filter(|p| stage.as_ref().is_none_or(|s| p.stage == *s))
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        let items: Vec<serde_json::Value> = chosen
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": p.id, "provider": p.provider, "stage": p.stage, "code": p.code,
                    "enhanced": p.enhanced, "text": p.text, "meaning": p.meaning,
                    "reply": String::from_utf8_lossy(&p.reply().to_wire()),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
    } else {
        let width = chosen.iter().map(|p| p.id.len()).max().unwrap_or(2);
        writeln!(out, "{:width$}  {:8}  REPLY", "ID", "STAGE")?;
        for p in chosen {
            let r = p.reply();
            let first = String::from_utf8_lossy(&r.to_wire())
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let more = if r.lines.len() > 1 {
                format!(" [+{} lines]", r.lines.len() - 1)
            } else {
                String::new()
            };
            writeln!(out, "{:width$}  {:8}  {first}{more}", p.id, p.stage)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Applies one `--certificate ADDR=FAULT` to the one listener on ADDR. An
/// ADDR that could mean two listeners (port 0, or an address given twice)
/// or two different faults for one listener is an error, not a guess.
fn apply_certificate(
    listeners: &mut [server::ListenerSpec],
    flags: &[String],
    c: &str,
) -> anyhow::Result<()> {
    let (addr, fault) = c
        .split_once('=')
        .with_context(|| format!("--certificate {c:?}: write ADDR=FAULT"))?;
    let fault = CertFault::from_name(fault).with_context(|| {
        format!(
            "--certificate {c:?}: the fault is one of {}",
            CertFault::NAMES.join(", ")
        )
    })?;
    let addr: std::net::SocketAddr = addr
        .parse()
        .with_context(|| format!("--certificate {c:?}: bad address"))?;
    let matching: Vec<usize> = (0..listeners.len())
        .filter(|&i| listeners[i].addr == addr)
        .collect();
    let i = match matching.as_slice() {
        [] => anyhow::bail!("--certificate {c:?}: no listener on {addr}"),
        [i] => *i,
        [a, b, ..] => anyhow::bail!(
            "--certificate {c:?} could mean two listeners: {} and {}; give each its own address",
            flags[*a],
            flags[*b]
        ),
    };
    let spec = &mut listeners[i].tls;
    match spec.certificate {
        Some(before) if before != fault => anyhow::bail!(
            "--certificate {c:?}: {} already has certificate {}",
            flags[i],
            before.name()
        ),
        _ => spec.certificate = Some(fault),
    }
    Ok(())
}

/// A `--certificate` for a listener that speaks no TLS (no `[tls]` in its
/// scenario, not `--listen-tls`) changes nothing: say so.
fn warn_unused_certificates(server: &Server, overridden: &[bool]) {
    for (b, _) in server.listeners.iter().zip(overridden).filter(|(_, o)| **o) {
        if b.slot.current().certificate.is_none() {
            tracing::warn!(
                addr = %b.addr,
                "--certificate has no effect here: this listener has no TLS (its scenario has no [tls] and it is not --listen-tls)"
            );
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let default = match &args.scenario {
        Some(p) => Source::File(p.clone()),
        None => Source::Default,
    };
    let mut listeners = vec![];
    // How each listener was asked for, to name it in errors.
    let mut flags = vec![];
    let plain: Vec<String> = if args.listen.is_empty() && args.listen_tls.is_empty() {
        vec!["127.0.0.1:2525".into()]
    } else {
        args.listen.clone()
    };
    let mut proxy = vec![];
    for l in &plain {
        let (arg, flag) = server::proxy::split_flag(l);
        if flag || args.proxy_protocol {
            proxy.push(listeners.len());
        }
        listeners.push(server::parse_listen(&arg, &default)?);
        flags.push(format!("--listen {l}"));
    }
    for l in &args.listen_tls {
        let (arg, flag) = server::proxy::split_flag(l);
        if flag || args.proxy_protocol {
            proxy.push(listeners.len());
        }
        let mut spec = server::parse_listen(&arg, &default)?;
        spec.tls.implicit = true;
        listeners.push(spec);
        flags.push(format!("--listen-tls {l}"));
    }
    for c in &args.certificate {
        apply_certificate(&mut listeners, &flags, c)?;
    }
    let overridden: Vec<bool> = listeners
        .iter()
        .map(|l| l.tls.certificate.is_some())
        .collect();
    let state = crate::state::Backend::parse(&args.state, args.state_fail)?;
    let ca_dir = args.ca_dir.clone().unwrap_or_else(certs::default_ca_dir);
    let api = api_options(&args);
    if let Some(a) = &api {
        crate::api::check_exposure(a)?;
    }
    let store = Store::new(args.store.as_deref(), args.store_max_bytes).with_context(|| {
        let dir = args.store.as_deref().unwrap_or(std::path::Path::new(""));
        format!("cannot make the store folder {}", dir.display())
    })?;
    let capture = Capture::with_store(args.events.as_deref(), store)
        .context("cannot open the capture files")?;
    let threads = worker_threads(args.threads);
    let rt = runtime(threads, &state)?;
    let flavor = match rt.handle().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current-thread",
        _ => "multi-thread",
    };
    tracing::info!(threads, flavor, "serving with {threads} worker thread(s)");
    rt.block_on(async move {
        let opts = Options {
            listeners,
            hostname: args.hostname,
            capture: Arc::new(capture),
            grace: args.grace,
            max_connections: args.max_connections,
            max_sessions_per_ip: args.max_sessions_per_ip,
            max_message_memory: args.max_message_memory,
            session_lifetime: args.session_lifetime,
            backlog: args.backlog,
            watch: !args.no_watch,
            reload_quiet: server::RELOAD_QUIET,
            ca: Arc::new(CaStore::new(Some(ca_dir))),
            api,
            state,
            proxy,
        };
        let server = Server::start(opts).await?;
        // Signals are taken over before the listening lines: a harness that
        // sends SIGTERM as soon as it reads them gets a graceful stop, not
        // the default kill.
        let signals = Signals::take()?;
        warn_unused_certificates(&server, &overridden);
        // One write for every line: a reader that stops after the first
        // line (and closes the pipe) cannot make a later line fail.
        let mut lines = String::new();
        for b in &server.listeners {
            lines.push_str(&listening_line(&server, b));
            b.log_listening();
        }
        if let Some(a) = server.api_addr {
            lines.push_str(&format!("listening http://{a} api\n"));
            tracing::info!(addr = %a, "API listening");
        }
        let mut out = std::io::stdout().lock();
        out.write_all(lines.as_bytes())?;
        out.flush()?;
        drop(out);
        signals.wait(&server).await?;
        tracing::info!("shutting down");
        let report = args.report.clone();
        let events = args.events.clone();
        let server = server.shutdown().await;
        if let Some(to) = report {
            write_report(&server, events.as_deref(), &to)?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `listening smtp://ADDR scenario=NAME [certificate=FAULT] [ca=FILE]`.
fn listening_line(server: &Server, b: &server::Bound) -> String {
    let active = b.slot.current();
    let scheme = if b.slot.implicit_tls() {
        "smtps"
    } else {
        "smtp"
    };
    let certificate = active
        .certificate
        .map(|c| format!(" certificate={c}"))
        .unwrap_or_default();
    let ca = match (&active.tls, server.ca.path()) {
        (Some(_), Some(p)) => format!(" ca={}", p.display()),
        _ => String::new(),
    };
    format!(
        "listening {scheme}://{} scenario={}{certificate}{ca}\n",
        b.addr,
        active.scenario_name()
    )
}

/// SIGINT, SIGTERM (stop) and SIGHUP (reload), registered.
#[cfg(unix)]
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn take() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn wait(mut self, server: &Server) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.int.recv() => return Ok(()),
                _ = self.term.recv() => return Ok(()),
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading scenarios");
                    server.reload_all();
                }
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn take() -> anyhow::Result<Self> {
        Ok(Self)
    }

    async fn wait(self, _: &Server) -> anyhow::Result<()> {
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}
