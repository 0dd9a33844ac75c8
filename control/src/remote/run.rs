//! `bosun run`: the playbook found and validated locally, then run on every selected host, in
//! the batches [`fleet`](super::fleet) schedules. Per host: connect, make sure bosund is this
//! build (installing it when not, [`bosund`](super::bosund)), `bosund apply` with the playbook on
//! stdin and its events rendered live; or, with `--via api`, the run submitted to the agent's
//! daemon ([`api`](super::api)). Ctrl-C cancels the runs ([`interrupted`]).
//!
//! Playbooks are sent on bosund's stdin, so they must be self-contained: files they name
//! relative to the playbook (templates, `src`) are looked up on the host, relative to the
//! remote user's home directory, not shipped.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bosun_model::event::{RunEvent, Summary};
use clap::{Args, ValueEnum};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::bosund::{self, LocalBosund};
use super::bundle;
use super::fleet::{self, HostStatus, Policy, Size, Slot};
use super::report::{HostRecord, Reporter};
use super::rolling::{self, Play, Ran, Runner};
use super::ssh::{self, HostKeyPolicy, Ssh, shell_quote};
use super::{Target, TargetArgs, api, host_key_policy, targets};
use crate::{exit, runtime};

/// `bosun run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The playbook: a file, or the name of one in ./playbooks (`k3s-upgrade`). Over SSH it
    /// travels as a bundle with the playbooks it includes and the files its steps read by a
    /// relative path; with `--via api` only its text is sent (the agent reads the rest from
    /// its playbooks directory).
    playbook: String,
    #[command(flatten)]
    target: TargetArgs,
    /// Report what would change; change nothing.
    #[arg(long)]
    check: bool,
    /// Show the diff of every file that changes (or would).
    #[arg(long)]
    diff: bool,
    /// Set a variable (name=value); wins over inventory and playbook vars.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Run only the steps tagged with one of these (comma-separated), and those tagged
    /// `always`; the steps of a tagged block or include carry its tags.
    #[arg(long, value_name = "TAG,...", value_delimiter = ',')]
    tags: Vec<String>,
    /// Run none of the steps tagged with one of these (comma-separated).
    #[arg(long, value_name = "TAG,...", value_delimiter = ',')]
    skip_tags: Vec<String>,
    /// Rolling batches: N hosts, or N% of them, per batch; a batch starts when the previous
    /// one has finished.
    #[arg(long, value_name = "N|N%")]
    serial: Option<String>,
    /// Start no new host once more than N (or N% of all) hosts have failed or were
    /// unreachable; running hosts finish.
    #[arg(long, value_name = "N|N%")]
    max_fail: Option<String>,
    /// The bosund binary to install where missing or different [default: `bosund` next to
    /// this `bosun`]. Not used with `--via api`.
    #[arg(long, value_name = "PATH")]
    bosund: Option<PathBuf>,
    /// `ssh`: run `bosund apply` over SSH (installing bosund first if needed). `api`: submit
    /// the run to the agent's daemon (it must be running; runs queue there): through its Unix
    /// socket, tunnelled over the SSH connection, or, for a `--host https://host:port`,
    /// straight to its TLS listener with a bearer token.
    #[arg(long, value_enum, default_value_t = Via::Ssh)]
    via: Via,
    /// The agent's API socket on the hosts (with `--via api` over SSH).
    #[arg(long, value_name = "PATH", default_value = api::DEFAULT_SOCKET)]
    api_socket: String,
    /// A file holding the bearer token for `https://` hosts (first line) [default: the
    /// BOSUN_API_TOKEN environment variable].
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    /// The CA certificate (PEM) that signed the agents' TLS certificates; when given, the only
    /// CA trusted for `https://` hosts [default: the web PKI roots].
    #[arg(long, value_name = "FILE")]
    api_ca: Option<PathBuf>,
}

/// How a run reaches the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// `bosund apply` on an SSH exec channel.
    Ssh,
    /// The daemon's HTTP API through direct-streamlocal forwarding.
    Api,
}

/// A file, else `playbooks/NAME` or `playbooks/NAME.toml`.
fn find_playbook(arg: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(arg);
    if direct.is_file() {
        return Ok(direct);
    }
    if !arg.contains('/') {
        for candidate in [format!("playbooks/{arg}"), format!("playbooks/{arg}.toml")] {
            let p = PathBuf::from(candidate);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "playbook {arg:?} not found: give a file path, or the name of a file in ./playbooks \
         (run bosun from the repository root)"
    )
}

/// What every host's job shares.
struct Job {
    playbook: String,
    /// The playbook, its includes and its files: what `--via ssh` sends on bosund's stdin and
    /// `--via api` stores with the agent (only to a host that does not have it cached, see
    /// `agent::host::bundle`); `None` over the API for a playbook without either.
    bundle: Option<bundle::Bundle>,
    check: bool,
    /// `--tags` and `--skip-tags`.
    tags: Tags,
    api_socket: String,
    /// `None` with `--via api` (nothing is installed).
    local: Option<LocalBosund>,
    /// The bearer token and CA for `https://` hosts (read once).
    api_token: Option<String>,
    api_ca: Option<PathBuf>,
    policy: HostKeyPolicy,
    reporter: Reporter,
    /// Turns true on Ctrl-C (or SIGTERM): running hosts cancel their runs, others do not start.
    cancel: watch::Receiver<bool>,
}

/// `--tags` / `--skip-tags` as given: passed on to bosund (or the API) as they are.
#[derive(Debug, Clone, Default)]
pub struct Tags {
    /// `--tags`.
    pub only: Vec<String>,
    /// `--skip-tags`.
    pub skip: Vec<String>,
}

/// Ctrl-C or SIGTERM once: `cancel` turns true (runs are cancelled, the summary printed).
/// Twice: bosun exits at once.
async fn interrupted(cancel: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return;
    };
    for n in 0..2 {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if n == 1 {
            eprintln!("bosun: interrupted again; quitting without waiting for the hosts");
            std::process::exit(i32::from(exit::CANCELLED));
        }
        eprintln!(
            "bosun: interrupted: cancelling the runs on the hosts (Ctrl-C again to quit at once)"
        );
        cancel.send_replace(true);
    }
}

/// `bosun run`: validate, then run on every host; the exit code says how the fleet did.
pub fn run(args: RunArgs, json: bool) -> Result<ExitCode> {
    let path = find_playbook(&args.playbook)?;
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read playbook {}", path.display()))?;
    let cli_vars = bosun_model::vars::parse_var_args(&args.vars)?;
    let serial = args
        .serial
        .as_deref()
        .map(Size::parse)
        .transpose()
        .context("--serial")?;
    let max_fail = args
        .max_fail
        .as_deref()
        .map(Size::parse)
        .transpose()
        .context("--max-fail")?;
    let mut targets = targets(&args.target)?;
    for t in &mut targets {
        t.vars.extend(cli_vars.clone());
        // `--via api` to a host whose inventory entry names its TLS listener: straight there.
        if args.via == Via::Api
            && let Some(url) = t.api_url.take()
        {
            t.endpoint = None;
            t.address = url;
        }
    }

    // Validate locally, for each distinct set of variable names, before connecting anywhere.
    let mut checked: Vec<Vec<String>> = Vec::new();
    let mut first_loaded = None;
    for t in &targets {
        let names: Vec<String> = t.vars.keys().cloned().collect();
        if checked.contains(&names) {
            continue;
        }
        let loaded = crate::local::load_playbook(&path, text.clone(), &names);
        if let (Ok(p), None) = (&loaded, &first_loaded) {
            first_loaded = Some(p.clone());
        }
        if let Err(d) = loaded {
            if json {
                println!(
                    "{}",
                    json!({"event": "invalid", "host": t.name, "diagnostics": d.located()})
                );
            }
            eprint!("{}", d.render(std::io::stderr().is_terminal()));
            if targets.len() > 1 {
                eprintln!(
                    "bosun: the playbook is invalid for host {} (with its vars); nothing ran",
                    t.name
                );
            }
            return Ok(ExitCode::from(exit::INVALID));
        }
        checked.push(names);
    }

    let direct = targets.iter().filter(|t| t.endpoint.is_none()).count();
    if direct > 0 && args.via != Via::Api {
        bail!("an https:// host is the agent's API: add --via api (SSH needs [user@]host[:port])");
    }
    let api_token = if direct > 0 {
        Some(api::read_token(args.api_token_file.as_deref())?)
    } else {
        None
    };
    let local = if args.via == Via::Ssh {
        let bosund_path = match &args.bosund {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .context("cannot locate the running bosun binary (pass --bosund)")?
                .with_file_name("bosund"),
        };
        Some(LocalBosund::load(&bosund_path)?)
    } else {
        None
    };
    // The playbook travels with its includes and files (one bundle for every host). Over the
    // API a bundle of the playbook alone goes as its text, as before bundles (one request,
    // and any bosund takes it).
    let bundle = match &first_loaded {
        Some(p) => {
            let b = bundle::build(&path, p)?;
            if args.via == Via::Api && b.files == 1 {
                None
            } else {
                if !json {
                    eprintln!(
                        "bosun: bundle {} ({} file{}, {} bytes)",
                        &b.sha256[..12],
                        b.files,
                        if b.files == 1 { "" } else { "s" },
                        b.bytes.len()
                    );
                }
                Some(b)
            }
        }
        None => None,
    };
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let (cancel_tx, cancel) = watch::channel(false);
    let job = Arc::new(Job {
        playbook: text,
        bundle,
        check: args.check,
        tags: Tags {
            only: args.tags.clone(),
            skip: args.skip_tags.clone(),
        },
        api_socket: args.api_socket.clone(),
        local,
        api_token,
        api_ca: args.api_ca.clone(),
        policy: host_key_policy(&args.target),
        reporter: Reporter::new(json, args.diff, &names),
        cancel,
    });
    let policy = Policy {
        forks: args.target.forks.max(1),
        serial,
        max_fail,
    };
    let targets: Vec<Arc<Target>> = targets.into_iter().map(Arc::new).collect();
    let records = Arc::new(std::sync::Mutex::new(Vec::<Option<HostRecord>>::new()));
    records
        .lock()
        .expect("not poisoned")
        .resize(targets.len(), None);

    let rt = runtime()?;
    rt.spawn(interrupted(cancel_tx));
    if rolling_k3s_upgrade(first_loaded.as_ref(), &targets) {
        if args.via != Via::Ssh || job.check {
            bail!(
                "a rolling k3s upgrade (hosts with `{}`) runs over SSH and changes the cluster: \
                 drop --via api / --check (preview one host with --limit HOST --check)",
                rolling::ROLE_VAR
            );
        }
        let code = rt.block_on(run_rollout(&job, &targets, serial, &cli_vars))?;
        return Ok(ExitCode::from(code));
    }
    rt.block_on(fleet::schedule(
        targets.len(),
        policy,
        |slot| {
            let (job, t, records) = (job.clone(), targets[slot.index].clone(), records.clone());
            async move {
                let r = run_host(&job, &t, slot).await;
                job.reporter.host_finished(&r);
                let status = r.status;
                records.lock().expect("not poisoned")[slot.index] = Some(r);
                status
            }
        },
        |index, batch| {
            let t = &targets[index];
            let r = HostRecord {
                host: t.name.clone(),
                address: t.address.clone(),
                status: HostStatus::NotStarted,
                batch,
                started: None,
                ok: 0,
                changed: 0,
                failed: 0,
                skipped: 0,
                uploaded: false,
                exit_code: None,
                duration_ms: 0.0,
                error: Some("not started: too many hosts failed (--max-fail)".into()),
            };
            job.reporter.host_finished(&r);
            records.lock().expect("not poisoned")[index] = Some(r);
        },
    ));
    let records: Vec<HostRecord> = records
        .lock()
        .expect("not poisoned")
        .drain(..)
        .flatten()
        .collect();
    let code = fleet_exit_code(&records);
    job.reporter.summary(&records, code);
    Ok(ExitCode::from(code))
}

/// The exit code of a run over many hosts: cancelled, else unreachable, else failed when a
/// host failed or never started, else ok.
fn fleet_exit_code(records: &[HostRecord]) -> u8 {
    if records.iter().any(|r| r.status == HostStatus::Cancelled) {
        exit::CANCELLED
    } else if records.iter().any(|r| r.status == HostStatus::Unreachable) {
        exit::UNREACHABLE
    } else if records
        .iter()
        .any(|r| matches!(r.status, HostStatus::Failed | HostStatus::NotStarted))
    {
        exit::FAILED
    } else {
        exit::OK
    }
}

/// A playbook with a `k3s_upgrade` step on hosts that say their `k3s_role` (or, from an
/// `aws:` inventory, `bosun_role`) is a rolling upgrade ([`rolling`]); anything else runs as
/// any playbook does.
fn rolling_k3s_upgrade(
    playbook: Option<&bosun_model::playbook::Playbook>,
    targets: &[Arc<Target>],
) -> bool {
    fn has_upgrade(steps: &[bosun_model::playbook::Step]) -> bool {
        steps.iter().any(|s| match &s.body {
            bosun_model::playbook::Body::Action { action, .. } => action.key() == "k3s_upgrade",
            bosun_model::playbook::Body::Block(b) => {
                has_upgrade(&b.steps) || has_upgrade(&b.rescue) || has_upgrade(&b.always)
            }
        })
    }
    playbook.is_some_and(|p| has_upgrade(&p.steps))
        && targets.iter().any(|t| {
            t.vars.contains_key(rolling::ROLE_VAR) || t.vars.contains_key(rolling::AWS_ROLE_VAR)
        })
}

/// The fleet as the rollout sees it: runs over SSH with the job's bosund and reporter.
struct FleetRunner<'a> {
    job: &'a Job,
    targets: &'a [Arc<Target>],
    started: std::sync::atomic::AtomicUsize,
    /// Each host's last upgrade run, for the summary.
    records: std::sync::Mutex<Vec<Option<HostRecord>>>,
}

impl Runner for FleetRunner<'_> {
    async fn play(&self, index: usize, label: &str, play: Play) -> Ran {
        let t = &self.targets[index];
        self.job.reporter.note(&t.name, label);
        let slot = Slot {
            index,
            batch: 0,
            started: self
                .started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst),
        };
        let record = match &play {
            Play::Upgrade => run_host(self.job, t, slot).await,
            Play::Node(text) => run_host_with(self.job, t, slot, Some(text)).await,
        };
        self.job.reporter.host_done(&t.name);
        let ran = Ran {
            status: record.status,
            error: record.error.clone(),
        };
        if play == Play::Upgrade {
            self.records.lock().expect("not poisoned")[index] = Some(record);
        } else if let Some(e) = &record.error {
            self.job.reporter.note(&t.name, &format!("{label}: {e}"));
        }
        ran
    }

    async fn nodes(&self, index: usize) -> Result<String> {
        let t = &self.targets[index];
        let endpoint = t
            .endpoint
            .as_ref()
            .context("a rolling upgrade reaches its hosts over SSH")?;
        let ssh = Ssh::connect(endpoint, self.job.policy).await?;
        let var = |name: &str, default: &str| {
            t.vars
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_string()
        };
        let command = format!(
            "{}/k3s kubectl --kubeconfig {}/k3s.yaml --request-timeout=10s get nodes -o json",
            shell_quote(&var(
                "k3s_bin_dir",
                bosun_model::steps::k3s::DEFAULT_BIN_DIR
            )),
            shell_quote(&var(
                "k3s_config_dir",
                bosun_model::steps::k3s::DEFAULT_CONFIG_DIR
            )),
        );
        let out = ssh.exec(&command).await;
        ssh.close().await;
        let out = out?;
        if out.code != Some(0) {
            bail!(
                "`k3s kubectl get nodes` on {} exited with {:?}: {}",
                t.name,
                out.code,
                out.stderr_text()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn note(&self, index: usize, message: &str) {
        self.job.reporter.note(&self.targets[index].name, message);
    }
}

/// `bosun run k3s-upgrade` on hosts with roles: the [`rolling`] rollout, then the summary.
async fn run_rollout(
    job: &Job,
    targets: &[Arc<Target>],
    serial: Option<Size>,
    cli_vars: &Map<String, Value>,
) -> Result<u8> {
    let hosts: Vec<(String, &Map<String, Value>)> =
        targets.iter().map(|t| (t.name.clone(), &t.vars)).collect();
    let members = rolling::members(&hosts)?;
    let text_var = |name: &str, default: &str| -> Result<String> {
        let mut values = targets
            .iter()
            .map(|t| match t.vars.get(name).or(cli_vars.get(name)) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => default.to_string(),
            });
        let first = values.next().unwrap_or_default();
        if values.any(|v| v != first) {
            bail!("a rolling upgrade moves every host to one `{name}`: the hosts' vars differ");
        }
        Ok(first)
    };
    let version = text_var("version", "")?;
    if version.trim().is_empty() {
        bail!("`version` is empty: name the release to run, e.g. --var version=v1.31.4+k3s1");
    }
    let target =
        bosun_model::steps::k3s::K3sRelease::parse(&version).map_err(anyhow::Error::msg)?;
    let settings = rolling::Settings {
        target,
        serial,
        drain_timeout: text_var("drain_timeout", "5m")?,
        ready_timeout: text_var("health_timeout", "5m")?,
    };
    for (name, value) in [
        ("drain_timeout", &settings.drain_timeout),
        ("health_timeout", &settings.ready_timeout),
    ] {
        bosun_model::steps::k3s::parse_timeout(name, value).map_err(anyhow::Error::msg)?;
    }
    let runner = FleetRunner {
        job,
        targets,
        started: std::sync::atomic::AtomicUsize::new(0),
        records: std::sync::Mutex::new(vec![None; targets.len()]),
    };
    let results = rolling::rollout(&runner, &members, &settings).await;
    let mut upgrades = runner.records.into_inner().expect("not poisoned");
    let mut records = Vec::new();
    for (m, ran) in members.iter().zip(results) {
        let t = &targets[m.index];
        let mut r = upgrades[m.index].take().unwrap_or_else(|| HostRecord {
            host: t.name.clone(),
            address: t.address.clone(),
            status: ran.status,
            batch: 0,
            started: None,
            ok: 0,
            changed: 0,
            failed: 0,
            skipped: 0,
            uploaded: false,
            exit_code: None,
            duration_ms: 0.0,
            error: None,
        });
        r.status = ran.status;
        r.error = ran.error;
        job.reporter.host_finished(&r);
        records.push(r);
    }
    let code = fleet_exit_code(&records);
    job.reporter.summary(&records, code);
    Ok(code)
}

/// Connect, make sure bosund is this build, run the playbook, follow its events.
async fn run_host(job: &Job, t: &Target, slot: Slot) -> HostRecord {
    run_host_with(job, t, slot, None).await
}

/// [`run_host`], with `playbook` (a generated, self-contained playbook) run instead of the
/// job's, without its tags.
async fn run_host_with(job: &Job, t: &Target, slot: Slot, playbook: Option<&str>) -> HostRecord {
    let started = Instant::now();
    let mut record = HostRecord {
        host: t.name.clone(),
        address: t.address.clone(),
        status: HostStatus::Failed,
        batch: slot.batch,
        started: Some(slot.started),
        ok: 0,
        changed: 0,
        failed: 0,
        skipped: 0,
        uploaded: false,
        exit_code: None,
        duration_ms: 0.0,
        error: None,
    };
    if *job.cancel.borrow() {
        record.status = HostStatus::Cancelled;
        record.started = None;
        record.error = Some("not started: interrupted".into());
        return record;
    }
    job.reporter.host_started(&t.name, &record.address, slot);
    let result = match &t.endpoint {
        None => apply_direct(job, t, &mut record).await,
        Some(endpoint) => {
            let ssh = match Ssh::connect(endpoint, job.policy).await {
                Ok(s) => s,
                Err(e) => {
                    record.status = HostStatus::Unreachable;
                    record.error = Some(format!("{e:#}"));
                    record.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                    return record;
                }
            };
            if let Some(l) = &ssh.learned_host_key {
                job.reporter.note(&t.name, l);
            }
            let result = match &job.local {
                Some(local) => apply_on(job, local, t, &ssh, &mut record, playbook).await,
                None => {
                    let agent = api::Agent::Tunnel {
                        ssh: &ssh,
                        socket: &job.api_socket,
                    };
                    apply_via_api(job, t, agent, &mut record).await
                }
            };
            ssh.close().await;
            result
        }
    };
    if let Err(e) = result {
        record.status = if *job.cancel.borrow() {
            HostStatus::Cancelled
        } else {
            HostStatus::Failed
        };
        record.error = Some(format!("{e:#}"));
    }
    record.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    record
}

/// Runs the playbook with this build of bosund: one exec when the host has it; else the
/// build is installed and the playbook run again.
async fn apply_on(
    job: &Job,
    local: &LocalBosund,
    t: &Target,
    ssh: &Ssh,
    record: &mut HostRecord,
    playbook: Option<&str>,
) -> Result<()> {
    let no_tags = Tags::default();
    let command = apply_command(
        "\"$p\"",
        t.state_dir.as_deref(),
        job.check,
        job.bundle
            .as_ref()
            .filter(|_| playbook.is_none())
            .map(|b| b.sha256.as_str()),
        if playbook.is_some() {
            &no_tags
        } else {
            &job.tags
        },
        &t.vars,
    );
    let script = bosund::run_script(t.bosund_path.as_deref(), local, &command);
    let mut summary: Option<Summary> = None;
    let mut out = None;
    // First ask for the bundle by digest with nothing on stdin; a host without it in its
    // cache answers NEED_BUNDLE and gets the bytes on the next attempt.
    let mut send_bundle = false;
    let mut installs = 0;
    for _ in 0..4 {
        if *job.cancel.borrow() {
            bail!("cancelled (interrupted) before bosund started");
        }
        let reporter = &job.reporter;
        let name = t.name.as_str();
        let mut on_line = |line: &str| match serde_json::from_str::<RunEvent>(line) {
            Ok(ev) => {
                if let RunEvent::Summary(s) = &ev {
                    summary = Some(*s);
                }
                reporter.event(name, &ev);
            }
            Err(_) if line.trim().is_empty() => {}
            Err(_) => reporter.note(name, &format!("bosund: {line}")),
        };
        let o = ssh
            .exec_lines(
                &script,
                Some(match (playbook, &job.bundle) {
                    (Some(p), _) => Box::new(p.as_bytes()),
                    (None, Some(b)) if send_bundle => Box::new(&b.bytes[..]),
                    (None, Some(_)) => Box::new(&[][..]),
                    (None, None) => Box::new(job.playbook.as_bytes()),
                }),
                &mut on_line,
                Some(job.cancel.clone()),
            )
            .await?;
        let untouched = !o.cancelled && o.stdout.is_empty();
        if untouched
            && o.code == Some(bundle::NEED_BUNDLE)
            && job.bundle.is_some()
            && playbook.is_none()
            && !send_bundle
        {
            send_bundle = true;
            job.reporter
                .note(&t.name, "bundle not cached on the host: sending it");
            continue;
        }
        if o.code != Some(bosund::NEED_INSTALL) || !untouched {
            out = Some(o);
            break;
        }
        installs += 1;
        if installs == 2 {
            bail!(
                "bosund {} was installed but the host still does not run it: {}",
                &local.sha256[..12],
                o.stderr_text()
            );
        }
        job.reporter.note(
            &t.name,
            &format!(
                "installing bosund {} ({} MB; missing or another build there)",
                &local.sha256[..12],
                local.size / 1_000_000
            ),
        );
        let path = bosund::upload(ssh, local, t.bosund_path.as_deref()).await?;
        job.reporter.note(
            &t.name,
            &format!("bosund {} installed at {path}", &local.sha256[..12]),
        );
        record.uploaded = true;
    }
    let out = out.expect("set before the loop ends");
    let stderr = out.stderr_text();
    settle(
        record,
        summary,
        out.code,
        &stderr,
        out.signal.as_deref(),
        out.cancelled,
    )
}

/// `--via api` to an `https://` host: the API client for it, then [`apply_via_api`].
async fn apply_direct(job: &Job, t: &Target, record: &mut HostRecord) -> Result<()> {
    let token = job
        .api_token
        .clone()
        .expect("read when an https:// host is given");
    let direct = api::Direct::new(&t.address, token, job.api_ca.as_deref())?;
    apply_via_api(job, t, api::Agent::Direct(&direct), record).await
}

/// Submits the run to the daemon and follows its events to the summary; on Ctrl-C asks the
/// daemon to cancel it and follows it to its (cancelled) summary, for [`ssh::CANCEL_GRACE`] at most.
async fn apply_via_api(
    job: &Job,
    t: &Target,
    agent: api::Agent<'_>,
    record: &mut HostRecord,
) -> Result<()> {
    let playbook = match &job.bundle {
        Some(b) => {
            if api::ensure_bundle(agent, &b.sha256, &b.bytes).await? {
                job.reporter
                    .note(&t.name, "bundle not held by the agent: sent it");
            }
            api::Playbook::Bundle(&b.sha256)
        }
        None => api::Playbook::Toml(&job.playbook),
    };
    let id = api::submit(
        agent,
        playbook,
        &t.vars,
        job.check,
        &job.tags.only,
        &job.tags.skip,
    )
    .await?;
    job.reporter
        .note(&t.name, &format!("run {id} submitted to the agent's API"));
    let mut summary: Option<Summary> = None;
    let reporter = &job.reporter;
    let name = t.name.as_str();
    let mut on_event = |data: &str| match serde_json::from_str::<RunEvent>(data) {
        Ok(ev) => {
            if let RunEvent::Summary(s) = &ev {
                summary = Some(*s);
            }
            reporter.event(name, &ev);
            !matches!(ev, RunEvent::Summary(_))
        }
        Err(_) => true,
    };
    let mut cancel = job.cancel.clone();
    let mut cancelled = false;
    {
        let following = api::follow(agent, &id, &mut on_event);
        tokio::pin!(following);
        tokio::select! {
            r = &mut following => r?,
            _ = async { cancel.wait_for(|c| *c).await.map(|_| ()) } => {
                cancelled = true;
                if let Err(e) = api::cancel(agent, &id).await {
                    reporter.note(name, &format!("{e:#}"));
                }
                match tokio::time::timeout(ssh::CANCEL_GRACE, &mut following).await {
                    Ok(r) => r?,
                    Err(_) => reporter.note(name, "the agent did not confirm the cancellation in time"),
                }
            }
        }
    }
    let code = summary.map(|s| u32::from(s.failed > 0));
    settle(
        record,
        summary,
        code,
        "the event stream ended early",
        None,
        cancelled,
    )
}

/// The host's status from its summary and bosund's exit.
fn settle(
    record: &mut HostRecord,
    summary: Option<Summary>,
    code: Option<u32>,
    stderr: &str,
    signal: Option<&str>,
    cancelled: bool,
) -> Result<()> {
    record.exit_code = code;
    let out_code = code;
    if cancelled {
        if let Some(s) = summary {
            record.ok = s.ok;
            record.changed = s.changed;
            record.failed = s.failed;
            record.skipped = s.skipped;
        }
        record.status = HostStatus::Cancelled;
        record.error = Some(if summary.is_some() {
            "cancelled (interrupted): the run stopped and its step's processes were killed".into()
        } else {
            "cancelled (interrupted): the host did not confirm that the run stopped".into()
        });
        return Ok(());
    }
    match summary {
        Some(s) => {
            record.ok = s.ok;
            record.changed = s.changed;
            record.failed = s.failed;
            record.skipped = s.skipped;
            record.status = if s.failed > 0 || out_code != Some(0) {
                HostStatus::Failed
            } else if s.changed > 0 {
                HostStatus::Changed
            } else {
                HostStatus::Ok
            };
            if record.status == HostStatus::Failed && s.failed == 0 {
                record.error = Some(format!("bosund exited with {out_code:?}: {stderr}"));
            } else if s.failed > 0 {
                record.error = Some("a step failed".into());
            }
            Ok(())
        }
        None => bail!(
            "bosund ended without a summary (exit {:?}{}): {}",
            out_code,
            signal.map(|s| format!(", signal {s}")).unwrap_or_default(),
            if stderr.is_empty() {
                "no error output"
            } else {
                stderr
            }
        ),
    }
}

/// `bosund apply - --output json`, with the variables in a private temp file (not on the
/// command line, where `ps` would show them), removed when bosund ends, also when it is
/// signalled (cancelled). `bosund` is a shell word (quoted already, or `"$p"`).
fn apply_command(
    bosund: &str,
    state_dir: Option<&str>,
    check: bool,
    bundle_digest: Option<&str>,
    tags: &Tags,
    vars: &Map<String, Value>,
) -> String {
    let mut cmd = bosund.to_string();
    if let Some(d) = state_dir {
        cmd.push_str(&format!(" --state-dir {}", shell_quote(d)));
    }
    cmd.push_str(" apply - --output json");
    if check {
        cmd.push_str(" --check");
    }
    if let Some(digest) = bundle_digest {
        cmd.push_str(&format!(" --bundle --bundle-digest {digest}"));
    }
    for (flag, list) in [("--tags", &tags.only), ("--skip-tags", &tags.skip)] {
        if !list.is_empty() {
            cmd.push_str(&format!(" {flag} {}", shell_quote(&list.join(","))));
        }
    }
    if vars.is_empty() {
        return format!("exec {cmd}");
    }
    let vars_json = serde_json::to_string(vars).expect("JSON values serialise");
    // A trapped signal is handled once bosund (signalled too: same process group) has
    // ended, so the file is removed after it, and the exit code says which signal. The file
    // is written under umask 077 in a subshell: bosund keeps the session's umask, so what its
    // steps create has the modes a local `bosund apply` gives it.
    format!(
        "d=$(mktemp -d) || exit 2; trap 'rm -rf \"$d\"' EXIT; trap 'exit 129' HUP; \
         trap 'exit 130' INT; trap 'exit 143' TERM; (umask 077 && printf '%s' {} > \
         \"$d/vars.json\") || exit 2; {cmd} --vars-file \"$d/vars.json\"",
        shell_quote(&vars_json)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_command_keeps_vars_off_the_command_line() {
        let mut vars = Map::new();
        vars.insert("secret".into(), json!("it's s3cret"));
        let tags = Tags {
            only: vec!["web".into(), "db".into()],
            skip: Vec::new(),
        };
        let c = apply_command(
            "/usr/local/bin/bosund",
            Some("/tmp/s d"),
            true,
            Some("d1g"),
            &tags,
            &vars,
        );
        assert!(c.contains("trap 'exit 143' TERM"), "{c}");
        assert!(c.contains("/usr/local/bin/bosund --state-dir '/tmp/s d' apply - --output json --check --bundle --bundle-digest d1g --tags web,db --vars-file"), "{c}");
        assert!(c.contains(r#"'{"secret":"it'\''s s3cret"}'"#), "{c}");
        let c = apply_command("/b", None, false, None, &Tags::default(), &Map::new());
        assert_eq!(c, "exec /b apply - --output json");
    }

    #[test]
    fn playbooks_are_found_by_name() {
        let err = find_playbook("surely-not-a-playbook")
            .unwrap_err()
            .to_string();
        assert!(err.contains("./playbooks"), "{err}");
    }
}
