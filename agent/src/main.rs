//! `bosund`: the bosun agent's command line. See `bosund --help`.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bosun_agent::engine::{self, RunOptions};
use bosun_agent::host::facts::Facts;
use bosun_agent::journal::{self, Journal};
use bosun_agent::queue::Progress;
use bosun_agent::vars;
use bosun_model::cli_docs;
use bosun_model::event::{EventSink, RunEvent};
use bosun_model::output::{Human, JsonLines, OutputFormat};
use bosun_model::playbook::{self, BaseDir, BaseOrigin, Diagnostics, Playbook, Source};
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value};

/// Exit code: a step failed.
const EXIT_FAILED: u8 = 1;
/// Exit code: the playbook (or the command line) is invalid; nothing ran.
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "bosund",
    version,
    about = "bosun's host agent: applies TOML playbooks to this host"
)]
struct Cli {
    /// Where the run journal lives [default: /var/lib/bosun as root, else $XDG_STATE_HOME/bosun]
    #[arg(long, global = true, env = "BOSUN_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a playbook against this host.
    Apply(ApplyArgs),
    /// Validate playbooks without running anything.
    Check {
        /// Playbook files (`-` for stdin).
        #[arg(required = true)]
        playbooks: Vec<String>,
        #[command(flatten)]
        vars: VarArgs,
        #[command(flatten)]
        base: BaseDirArg,
    },
    /// Print the JSON Schema of the playbook format.
    Schema,
    /// Run the agent: serve the HTTP API and execute submitted runs (under systemd).
    Run {
        /// The agent config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the agent config without starting anything.
    CheckConfig {
        /// The agent config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// List recent runs from the journal.
    History {
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Show the steps of this run.
        #[arg(long)]
        run: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        output: OutputFormat,
    },
    /// Drift: per playbook, the steps its last scheduled check run (`[[schedule]]` with
    /// `check = true`) found would change.
    Drift {
        #[arg(long, value_enum, default_value = "human")]
        output: OutputFormat,
    },
    /// Scheduled playbooks (`[[schedule]]` in the agent config).
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// List the backups in S3, or restore one into a database.
    #[cfg(feature = "aws")]
    #[command(subcommand)]
    Backups(bosun_agent::backup::cli::BackupsCommand),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: cli_docs::Shell,
    },
    /// Write the man pages (NAME.1 and one per subcommand) into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Each schedule: cron, jitter, its next 3 times (jitter applied) and its last run, from
    /// the config and the journal (bosund run need not be running).
    List {
        /// The agent config.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The next times after this instant (RFC 3339) instead of after now.
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        after: Option<chrono::DateTime<chrono::Utc>>,
        #[arg(long, value_enum, default_value = "human")]
        output: OutputFormat,
    },
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e}: write RFC 3339, e.g. 2026-03-01T12:00:00Z"))
}

#[derive(Args)]
struct ApplyArgs {
    /// The playbook file, or `-` to read it from stdin.
    playbook: String,
    /// Report what would change; change nothing.
    #[arg(long)]
    check: bool,
    /// Show the diff of every file that changes (or would).
    #[arg(long)]
    diff: bool,
    #[command(flatten)]
    vars: VarArgs,
    #[command(flatten)]
    base: BaseDirArg,
    #[arg(long, value_enum, default_value = "human")]
    output: OutputFormat,
    /// Run only the steps tagged with one of these (comma-separated), and those tagged
    /// `always`; the steps of a tagged block or include carry its tags.
    #[arg(long, value_name = "TAG,...", value_delimiter = ',')]
    tags: Vec<String>,
    /// Run none of the steps tagged with one of these (comma-separated).
    #[arg(long, value_name = "TAG,...", value_delimiter = ',')]
    skip_tags: Vec<String>,
    /// Install releases even when the cluster's room cannot be read (kubectl fails): the
    /// capacity check is skipped with a warning instead of refusing the run.
    #[arg(long)]
    skip_capacity: bool,
    /// Stdin (`-`) is a bundle made by `bosun run` (a tar stream of the playbook, its
    /// includes and the files its steps read): it is unpacked into a private directory under
    /// the state dir, run from there, and removed when the run ends.
    #[arg(long)]
    bundle: bool,
    /// With --bundle: the bundle's SHA-256. A bundle cached under the state dir with this
    /// digest is used and stdin is not read; on a miss stdin is stored in the cache, and when
    /// stdin is empty bosund exits 87 having run nothing (send the bundle).
    #[arg(long, value_name = "SHA256", requires = "bundle")]
    bundle_digest: Option<String>,
}

#[derive(Args)]
struct BaseDirArg {
    /// The directory relative paths in the playbook (template and copy `src`, helm
    /// `values_files`) resolve against [default: the playbook file's directory; for a playbook
    /// read from stdin (`-`), the current directory]
    #[arg(long, value_name = "DIR")]
    base_dir: Option<PathBuf>,
}

#[derive(Args)]
struct VarArgs {
    /// Set a variable: name=value (wins over [vars] and --vars-file).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    var: Vec<String>,
    /// Read variables from a TOML (or .json) file.
    #[arg(long = "vars-file", value_name = "FILE")]
    vars_file: Vec<PathBuf>,
}

impl VarArgs {
    fn collect(&self) -> anyhow::Result<Map<String, Value>> {
        let mut all = Map::new();
        for f in &self.vars_file {
            all.extend(vars::read_vars_file(f)?);
        }
        all.extend(vars::parse_var_args(&self.var)?);
        Ok(all)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon says what it does (journald keeps it); one-shot commands stay quiet.
    let default_log = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOSUN_LOG")
                .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
                .unwrap_or_else(|_| default_log.into()),
        )
        .init();
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(journal::default_state_dir);
    let result = match cli.command {
        Command::Apply(args) => apply(args, &state_dir),
        Command::Check {
            playbooks,
            vars,
            base,
        } => check(&playbooks, &vars, &base),
        Command::Schema => {
            print!("{}", playbook::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => bosun_agent::daemon::run(bosun_agent::daemon::DaemonOptions {
            config_explicit: config.is_some(),
            config_path: config.unwrap_or_else(|| bosun_agent::config::DEFAULT_CONFIG_PATH.into()),
            state_dir: cli.state_dir.clone(),
        }),
        Command::CheckConfig { config } => check_config(config),
        Command::History { limit, run, output } => {
            history(&state_dir, limit, run.as_deref(), output)
        }
        Command::Drift { output } => drift(&state_dir, output),
        Command::Schedule {
            command:
                ScheduleCommand::List {
                    config,
                    after,
                    output,
                },
        } => schedule_list(config, cli.state_dir.clone(), after, output),
        #[cfg(feature = "aws")]
        Command::Backups(cmd) => bosun_agent::backup::cli::run(cmd).map(ExitCode::from),
        Command::Completions { shell } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            cli_docs::completions(cmd, shell, &mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => write_man_pages(&dir),
    };
    result.unwrap_or_else(|e| {
        eprintln!("bosund: error: {e:#}");
        ExitCode::from(EXIT_INVALID)
    })
}

/// `man DIR`: writes every man page of this binary into `dir`.
fn write_man_pages(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, roff) in cli_docs::man_pages(<Cli as clap::CommandFactory>::command())? {
        let path = dir.join(name);
        std::fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads a playbook file or stdin (`-`), with the directory its relative paths resolve
/// against.
fn read_source(arg: &str, base: &BaseDirArg) -> anyhow::Result<(Source, BaseDir)> {
    let (source, default) = if arg == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the playbook from stdin")?;
        let cwd = std::env::current_dir().context("finding the current directory")?;
        (Source::new("<stdin>", text), (cwd, BaseOrigin::CurrentDir))
    } else {
        let path = Path::new(arg);
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading playbook {arg}"))?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        (
            Source::new(arg, text),
            (dir.to_path_buf(), BaseOrigin::PlaybookDir),
        )
    };
    let (path, origin) = match &base.base_dir {
        Some(dir) => (dir.clone(), BaseOrigin::Flag),
        None => default,
    };
    let path = std::path::absolute(&path).unwrap_or(path);
    Ok((source, BaseDir { path, origin }))
}

/// Parses and validates, and checks that every local file it reads is there; every
/// diagnostic on failure.
fn load(
    source: Source,
    outside: &Map<String, Value>,
    base: &BaseDir,
) -> Result<Playbook, Diagnostics> {
    let names: Vec<String> = outside.keys().cloned().collect();
    bosun_agent::config::load_playbook(source, &names, base)
}

fn apply(args: ApplyArgs, state_dir: &Path) -> anyhow::Result<ExitCode> {
    let outside = args.vars.collect()?;
    // Kept until the run ends: dropping it removes the bundle's directory.
    let bundle = if args.bundle {
        if args.playbook != "-" || args.base.base_dir.is_some() {
            anyhow::bail!("--bundle reads the bundle from stdin: give `-` and no --base-dir");
        }
        let bundles = state_dir.join("bundles");
        match &args.bundle_digest {
            None => Some(bosun_agent::host::bundle::unpack(
                std::io::stdin().lock(),
                &bundles,
            )?),
            Some(digest) => {
                use bosun_agent::host::bundle;
                match bundle::unpack_cached(&bundles, digest)? {
                    Some(b) => Some(b),
                    None => {
                        if bundle::store(std::io::stdin().lock(), &bundles, digest)?.is_none() {
                            return Ok(ExitCode::from(bundle::NEED_BUNDLE));
                        }
                        Some(
                            bundle::unpack_cached(&bundles, digest)?
                                .context("the bundle just stored is not in the cache")?,
                        )
                    }
                }
            }
        }
    } else {
        None
    };
    let playbook_arg = match &bundle {
        Some(b) => b.playbook.display().to_string(),
        None => args.playbook.clone(),
    };
    let (source, base_dir) = read_source(&playbook_arg, &args.base)?;
    let playbook = match load(source, &outside, &base_dir) {
        Ok(p) => p,
        Err(diags) => {
            if args.output == OutputFormat::Json {
                JsonLines(std::io::stdout().lock()).emit(&RunEvent::Invalid {
                    diagnostics: diags.located(),
                });
            }
            eprint!("{}", diags.render(std::io::stderr().is_terminal()));
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut journal = match Journal::open_checked(state_dir) {
        Ok((j, moved_aside)) => {
            if let Some(note) = moved_aside {
                eprintln!("bosund: warning: {note}");
            }
            Some(j)
        }
        Err(e) => {
            eprintln!("bosund: warning: this run is not journaled: {e:#}");
            None
        }
    };
    let (summary, stopped_by) = runtime.block_on(async {
        // A signal cancels the run: the step's future is dropped (its process group killed),
        // the step is reported failed and the summary written, then bosund exits 128+signal.
        // `bosun run` sends SIGTERM through SSH on Ctrl-C.
        let stop = stop_signal();
        tokio::pin!(stop);
        let progress = std::cell::RefCell::new(Progress::default());
        let mut renderer: Box<dyn EventSink> = match args.output {
            OutputFormat::Json => Box::new(JsonLines(std::io::stdout().lock())),
            OutputFormat::Human => Box::new(Human::new(std::io::stdout().lock(), args.diff)),
        };
        let mut sink = |event: &RunEvent| {
            progress.borrow_mut().see(event);
            renderer.emit(event);
            if let Some(j) = journal.as_mut()
                && let Err(e) = j.record(event)
            {
                if journal::is_disk_full(&e) {
                    tracing::error!("journal write failed: no space left on device: {e:#}");
                } else {
                    tracing::warn!("journal write failed: {e:#}");
                }
            }
        };
        let ended = {
            let run = async {
                let facts = serde_json::to_value(Facts::gather().await).unwrap_or(Value::Null);
                let opts = RunOptions {
                    run_id: uuid::Uuid::now_v7().to_string(),
                    check: args.check,
                    base_dir: base_dir.path,
                    extra_vars: outside,
                    facts,
                    state_dir: state_dir.to_path_buf(),
                    schedule: None,
                    tags: args.tags,
                    skip_tags: args.skip_tags,
                    skip_capacity: args.skip_capacity,
                };
                engine::run(&playbook, &opts, &mut sink).await
            };
            tokio::select! {
                biased;
                summary = run => Ok(summary),
                signal = &mut stop => Err(signal),
            }
        };
        match ended {
            Ok(summary) => (summary, None),
            Err((name, code)) => {
                let started = progress.borrow().started();
                let closing = progress
                    .borrow()
                    .closing(&format!("bosund received {name}"));
                // A run that had not started yet (facts) gets no events: nothing was journaled.
                if started {
                    for event in &closing {
                        sink(event);
                    }
                }
                let summary = match closing.last() {
                    Some(RunEvent::Summary(s)) => *s,
                    _ => Default::default(),
                };
                (summary, Some(code))
            }
        }
    });
    if let Some(code) = stopped_by {
        return Ok(ExitCode::from(code));
    }
    Ok(if summary.failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM, SIGINT or SIGHUP with the signal's name and bosund's exit code then
/// (128 + its number); never when the handlers cannot be installed.
async fn stop_signal() -> (&'static str, u8) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("bosund: warning: cannot handle signals; a signal ends this run abruptly");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => ("SIGTERM", 143),
        _ = int.recv() => ("SIGINT", 130),
        _ = hup.recv() => ("SIGHUP", 129),
    }
}

fn check(files: &[String], vars: &VarArgs, base: &BaseDirArg) -> anyhow::Result<ExitCode> {
    let outside = vars.collect()?;
    let mut invalid = false;
    for file in files {
        let (source, base_dir) = read_source(file, base)?;
        match load(source, &outside, &base_dir) {
            Ok(p) => println!(
                "{file}: ok ({} steps, {} handlers)",
                p.steps.len(),
                p.handlers.len()
            ),
            Err(diags) => {
                invalid = true;
                eprint!("{}", diags.render(std::io::stderr().is_terminal()));
            }
        }
    }
    Ok(if invalid {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    })
}

fn check_config(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use bosun_agent::config::{ConfigError, DEFAULT_CONFIG_PATH};
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    // Only the default path may be absent (an explicit one that is not there is an error).
    let absent = !explicit && !path.exists();
    match bosun_agent::daemon::load_config(&path, explicit) {
        Ok(c) => {
            let what = if absent {
                format!(
                    "{}: no such file; bosund runs with the defaults, which are",
                    path.display()
                )
            } else {
                format!("{}: ok", path.display())
            };
            println!(
                "{what} (socket {}, tcp {}, queue_limit {})",
                c.api.socket.display(),
                c.api.tcp.map_or("off".to_string(), |t| format!(
                    "{} tls={}",
                    t.listen,
                    t.tls.is_some()
                )),
                c.queue_limit
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(diags)) => {
            eprint!("{}", diags.render(std::io::stderr().is_terminal()));
            Ok(ExitCode::from(EXIT_INVALID))
        }
        Err(e) => Err(e.into()),
    }
}

/// `bosund drift`: the journal's drift report (a JSON array with `--output json`).
fn drift(state_dir: &Path, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let rows = match Journal::open_existing(state_dir)? {
        Some(j) => j.drift()?,
        None => Vec::new(),
    };
    match output {
        OutputFormat::Json => json_lines(&rows)?,
        OutputFormat::Human if rows.is_empty() => {
            println!("no drift report yet: a [[schedule]] with check = true makes one")
        }
        OutputFormat::Human => {
            for r in &rows {
                match r.steps.len() {
                    0 => println!("{}: no drift (checked {})", r.playbook, r.checked_at),
                    n => println!(
                        "{}: {n} steps would change: {} (checked {}, run {})",
                        r.playbook,
                        r.steps.join(", "),
                        r.checked_at,
                        r.run_id
                    ),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn history(
    state_dir: &Path,
    limit: usize,
    run: Option<&str>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    // A read-only command: no journal yet means no runs, not a new journal.
    let Some(journal) = Journal::open_existing(state_dir)? else {
        if let Some(run_id) = run {
            eprintln!(
                "bosund: no run `{run_id}`: no runs recorded in {}",
                state_dir.display()
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        if output == OutputFormat::Human {
            println!("no runs recorded in {}", state_dir.display());
        }
        return Ok(ExitCode::SUCCESS);
    };
    if let Some(run_id) = run {
        if journal.run_status(run_id)?.is_none() {
            eprintln!(
                "bosund: no run `{run_id}` in {}; `bosund history` lists the recent runs",
                state_dir.display()
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        let steps = journal.steps(run_id)?;
        match output {
            OutputFormat::Json => json_lines(&steps)?,
            OutputFormat::Human => {
                for s in steps {
                    println!(
                        "{:>3} {:<8} {:<40} {:>10.1} ms {}",
                        s.index,
                        s.status,
                        s.name,
                        s.duration_ms,
                        s.error.unwrap_or_default()
                    );
                }
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runs = journal.recent_runs(limit)?;
    match output {
        OutputFormat::Json => json_lines(&runs)?,
        OutputFormat::Human if runs.is_empty() => {
            println!("no runs recorded in {}", state_dir.display());
        }
        OutputFormat::Human => {
            println!(
                "{:<29} {:<36} {:<20} {:<8} summary",
                "started", "run", "playbook", "status"
            );
            for r in runs {
                let status = if r.check {
                    format!("{} (check)", r.status)
                } else {
                    r.status
                };
                println!(
                    "{:<29} {:<36} {:<20} {:<8} ok={} changed={} failed={} skipped={}",
                    r.started_at, r.id, r.playbook, status, r.ok, r.changed, r.failed, r.skipped
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--output json` of a listing: JSON Lines, one record per line (see [`OutputFormat`]).
fn json_lines<T: serde::Serialize>(records: &[T]) -> anyhow::Result<()> {
    for r in records {
        println!("{}", serde_json::to_string(r)?);
    }
    Ok(())
}

fn schedule_list(
    path: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    after: Option<chrono::DateTime<chrono::Utc>>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    use bosun_agent::config::{ConfigError, DEFAULT_CONFIG_PATH};
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
    let config = match bosun_agent::daemon::load_config(&path, explicit) {
        Ok(c) => c,
        Err(ConfigError::Invalid(diags)) => {
            eprint!("{}", diags.render(std::io::stderr().is_terminal()));
            return Ok(ExitCode::from(EXIT_INVALID));
        }
        Err(e) => return Err(e.into()),
    };
    // The same state dir as `bosund run` with this config.
    let state_dir = state_dir
        .or_else(|| config.state_dir.clone())
        .unwrap_or_else(journal::default_state_dir);
    let journal = Journal::open_existing(&state_dir)?;
    let now = after.unwrap_or_else(chrono::Utc::now);
    let schedules = bosun_agent::daemon::schedule::list(&config, journal.as_ref(), now)?;
    match output {
        OutputFormat::Json => json_lines(&schedules)?,
        OutputFormat::Human => {
            if schedules.is_empty() {
                println!("no [[schedule]] in {}", path.display());
            }
            for s in schedules {
                println!(
                    "{}: playbook {}, cron \"{}\", jitter {}{}",
                    s.name,
                    s.playbook,
                    s.cron,
                    s.jitter,
                    if s.due { " (a missed slot is due)" } else { "" }
                );
                println!("  next: {}", s.next.join(", "));
                match s.last_run {
                    None => println!("  last: never"),
                    Some(l) => println!(
                        "  last: slot {}, {}{}{}",
                        l.slot,
                        l.outcome,
                        l.run_id.map(|id| format!(", run {id}")).unwrap_or_default(),
                        l.error.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
