//! `bosun`: the operator's CLI. It validates playbooks with bosun's model (`bosun_model` (the same
//! parser and diagnostics as `bosund check`), and creates the AWS stack around the host from a
//! typed CloudFormation template (`template`, `plan`, `up`, `down`). Remote runs (`bosun run`)
//! build on this crate.

mod cloud;
mod exit;
mod local;
mod platform;
mod remote;
mod stack;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bosun_model::cli_docs;
use bosun_model::output::OutputFormat;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use stack::artifacts::BootArtifacts;
use stack::boot::{self, BootDigests};
use stack::config::StackConfig;
use stack::template;

#[derive(Parser)]
#[command(
    name = "bosun",
    version,
    about = "bosun's control CLI: drives bosund agents and the AWS stack around them"
)]
struct Cli {
    /// Output format: human-readable lines, or JSON Lines on stdout (one compact JSON value
    /// per line: an event per line for `run`, a playbook per line for `check`, one line for a
    /// single result).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate playbooks locally, as the agent would, without contacting any host.
    Check {
        /// Playbook files.
        #[arg(required = true)]
        playbooks: Vec<String>,
        /// Variables that will be given with --var when the playbook runs (names only matter).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        var: Vec<String>,
    },
    /// Run a playbook on hosts over SSH: install or update bosund there, stream its steps.
    /// Exit 0 all ok, 1 a host failed (or was not started), 2 invalid input (nothing ran),
    /// 4 a host was unreachable.
    Run(remote::run::RunArgs),
    /// Show bosund's version, the host's uptime and its last runs, over SSH.
    Status(remote::status::StatusArgs),
    /// List the hosts `--host`/`--inventory`/`--limit` select and how `run` reaches each
    /// (address, jump hosts, groups, variables), without connecting.
    Hosts(remote::hosts::HostsArgs),
    /// List the backups in S3 or restore one, through bosund on a host, over SSH.
    #[command(subcommand)]
    Backups(remote::backups::BackupsCommand),
    /// Print the stack's CloudFormation template.
    Template {
        #[command(flatten)]
        stack: StackArgs,
        /// Print the second stack's template instead (`[edge]` outside us-east-1: the
        /// certificate, the health checks and their alarms, in us-east-1).
        #[arg(long)]
        edge: bool,
    },
    /// Print the instance's cloud-init user-data, resolved for a given bucket.
    UserData {
        #[command(flatten)]
        stack: StackArgs,
        /// The stack's bucket name (`BucketName` output).
        #[arg(long)]
        bucket: String,
        /// A `[nodes]` agent's user-data instead of the host's, joining the k3s server at this
        /// (private) address.
        #[arg(long, value_name = "SERVER_ADDRESS")]
        agent_of: Option<String>,
    },
    /// Show what `up` would change (a CloudFormation change set, deleted afterwards).
    Plan {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        aws: AwsArgs,
        /// Plan the first boot with the artefacts just built (replaces an existing host).
        #[arg(long)]
        refresh_boot: bool,
    },
    /// Create or update the stack: upload bosund and the playbooks, apply the change set.
    Up {
        #[command(flatten)]
        stack: StackArgs,
        #[command(flatten)]
        aws: AwsArgs,
        /// Use the artefacts just built for the instance's first boot even when the host
        /// exists (its user-data changes, which replaces it: needs --allow-replacement).
        #[arg(long)]
        refresh_boot: bool,
        /// Execute a change set that replaces the instance, database or bucket.
        #[arg(long)]
        allow_replacement: bool,
    },
    /// The platform's capacity: the requests of `[platform]`'s components (from
    /// playbooks/platform.toml and its values) against the stack's instance type.
    #[command(subcommand)]
    Platform(PlatformCommand),
    /// bosund API tokens for CI jobs (`[[api.tcp.scoped_token]]`).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Delete the stack. The bucket (backups) is kept unless --delete-data.
    Down {
        /// Stack config (stack.toml).
        #[arg(long, default_value = "stack.toml")]
        config: PathBuf,
        #[command(flatten)]
        aws: AwsArgs,
        /// Also empty and delete the stack's bucket, with every backup in it.
        #[arg(long)]
        delete_data: bool,
    },
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
enum PlatformCommand {
    /// Print the budget table. Exit 0 it fits, 1 it does not fit, 2 invalid input. No AWS call.
    Budget {
        /// Stack config (stack.toml) with a `[platform]` section.
        #[arg(long, default_value = "stack.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a scoped token: stored in SSM Parameter Store as a SecureString at
    /// /bosun/<stack>/api-tokens/NAME (where a CI job reads it), never printed; prints the
    /// `[[api.tcp.scoped_token]]` lines (its SHA-256 and scope) for the host's agent.toml.
    Create {
        /// Stack config (stack.toml).
        #[arg(long, default_value = "stack.toml")]
        config: PathBuf,
        #[command(flatten)]
        aws: AwsArgs,
        /// The token's name (letters, digits, - and _), e.g. jenkins-deploy.
        name: String,
        /// A playbook the token may run (repeat for more).
        #[arg(long = "playbook", required = true)]
        playbooks: Vec<String>,
        /// A variable the token may set (repeat for more).
        #[arg(long = "var")]
        vars: Vec<String>,
        /// Replace an existing token of that name (the old one stops working once agent.toml
        /// holds the new hash).
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Args)]
struct StackArgs {
    /// Stack config (stack.toml).
    #[arg(long, default_value = "stack.toml")]
    config: PathBuf,
    /// The bosund binary to ship (default: `bosund` next to this `bosun`).
    #[arg(long)]
    bosund: Option<PathBuf>,
}

#[derive(Args)]
struct AwsArgs {
    /// Send every AWS API call here (e.g. a moto server) instead of AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
}

fn main() -> ExitCode {
    // Quiet unless asked: `RUST_LOG=debug` shows, among others, the AWS SDK's full error
    // structures behind the one-line messages.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| "off".into()),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bosun: error: {e:#}");
            ExitCode::from(exit::INVALID)
        }
    }
}

/// The loaded config, key and artefacts a stack command needs.
struct Loaded {
    config: StackConfig,
    public_key: String,
    artifacts: BootArtifacts,
}

fn load(args: &StackArgs) -> Result<Loaded> {
    let loaded = StackConfig::load(&args.config)?;
    let bosund = match &args.bosund {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("cannot locate the running bosun binary (pass --bosund)")?
            .with_file_name("bosund"),
    };
    let artifacts = BootArtifacts::load(&bosund, &loaded.playbooks_dir)?;
    Ok(Loaded {
        config: loaded.stack,
        public_key: loaded.public_key,
        artifacts,
    })
}

/// The async runtime every command that talks to a host or AWS runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn endpoint<'a>(aws: &'a AwsArgs, config: &'a StackConfig) -> Option<&'a str> {
    aws.endpoint_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .or(config.endpoints.aws.as_deref())
}

/// `man DIR`: writes every man page of this binary into `dir`.
fn write_man_pages(dir: &Path) -> Result<ExitCode> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, roff) in cli_docs::man_pages(<Cli as clap::CommandFactory>::command())? {
        let path = dir.join(name);
        std::fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of JSON Lines (see `--output`).
fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.output == OutputFormat::Json;
    let ui = cloud::Ui { json };
    match cli.command {
        Command::Check { playbooks, var } => check(&playbooks, &var, json),
        Command::Completions { shell } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            cli_docs::completions(cmd, shell, &mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => write_man_pages(&dir),
        Command::Run(args) => remote::run::run(args, json),
        Command::Status(args) => remote::status::run(args, json),
        Command::Hosts(args) => remote::hosts::run(args, json),
        Command::Backups(cmd) => remote::backups::run(cmd, json),
        Command::Template { stack, edge } => {
            let l = load(&stack)?;
            if edge {
                if !l.config.has_edge_stack() {
                    bail!(
                        "stack {} has no edge stack: it needs [edge] and a region other than {}",
                        l.config.name,
                        stack::config::EDGE_REGION
                    );
                }
                println!("{}", stack::edge::template(&l.config).to_json());
                return Ok(ExitCode::SUCCESS);
            }
            let boot = BootDigests {
                bosund_sha256: l.artifacts.bosund.sha256.clone(),
                playbooks_sha256: l.artifacts.playbooks.sha256.clone(),
            };
            // The template is JSON either way.
            println!(
                "{}",
                template::full(&l.config, &l.public_key, &boot).to_json()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::UserData {
            stack,
            bucket,
            agent_of,
        } => {
            let l = load(&stack)?;
            let c = &l.config;
            let artifacts_url = match &c.endpoints.artifacts {
                Some(base) => format!("{}/{bucket}/artifacts", base.trim_end_matches('/')),
                None => format!("https://{bucket}.s3.{}.amazonaws.com/artifacts", c.region),
            };
            let boot = BootDigests {
                bosund_sha256: l.artifacts.bosund.sha256.clone(),
                playbooks_sha256: l.artifacts.playbooks.sha256.clone(),
            };
            let role = match &agent_of {
                Some(server_address) => boot::BootRole::Agent { server_address },
                None => boot::BootRole::Server,
            };
            let text = boot::render_user_data(c, role, &bucket, &artifacts_url, &boot);
            if json {
                print_json(&json!({"user_data": text}));
            } else {
                print!("{text}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan {
            stack,
            aws,
            refresh_boot,
        } => {
            let l = load(&stack)?;
            if let Some(code) = platform_gate(&stack.config, &l.config, json)? {
                return Ok(code);
            }
            let rt = runtime()?;
            let result = rt.block_on(async {
                let clients =
                    cloud::Aws::connect(&l.config.region, endpoint(&aws, &l.config)).await;
                let req = cloud::Request {
                    config: &l.config,
                    public_key: &l.public_key,
                    artifacts: &l.artifacts,
                    refresh_boot,
                };
                cloud::plan(&clients, ui, &req).await
            })?;
            if json {
                print_json(&result);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            stack,
            aws,
            refresh_boot,
            allow_replacement,
        } => {
            let l = load(&stack)?;
            if let Some(code) = platform_gate(&stack.config, &l.config, json)? {
                return Ok(code);
            }
            let rt = runtime()?;
            let result = rt.block_on(async {
                let clients =
                    cloud::Aws::connect(&l.config.region, endpoint(&aws, &l.config)).await;
                let req = cloud::Request {
                    config: &l.config,
                    public_key: &l.public_key,
                    artifacts: &l.artifacts,
                    refresh_boot,
                };
                cloud::up(&clients, ui, &req, allow_replacement).await
            })?;
            if json {
                print_json(&result);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Platform(PlatformCommand::Budget { config }) => {
            let stack = config_only(&config)?;
            let Some(b) = platform::budget(&config, &stack)? else {
                anyhow::bail!(
                    "{} has no [platform] section: name a profile (learner, small, full) or components",
                    config.display()
                );
            };
            if json {
                print_json(&platform::to_json(&b));
            } else {
                print!("{}", b.table());
            }
            Ok(ExitCode::from(if b.fits() {
                exit::OK
            } else {
                exit::FAILED
            }))
        }
        Command::Token(TokenCommand::Create {
            config,
            aws,
            name,
            playbooks,
            vars,
            rotate,
        }) => {
            let config = config_only(&config)?;
            let scope = cloud::TokenScope::new(&name, playbooks, vars)?;
            let rt = runtime()?;
            let created = rt.block_on(async {
                let clients = cloud::Aws::connect(&config.region, endpoint(&aws, &config)).await;
                cloud::create_token(&clients, &config, &scope, rotate).await
            })?;
            if json {
                print_json(&json!({
                    "parameter": created.parameter,
                    "sha256": created.sha256,
                    "playbooks": scope.playbooks,
                    "vars": scope.vars,
                }));
            } else {
                println!(
                    "stored token {name} in SSM as a SecureString: {} (the token is not printed)\n\
                     add to the host's /etc/bosun/agent.toml, then reload bosund (systemctl reload bosund):\n",
                    created.parameter
                );
                print!("{}", scope.agent_toml(&created.sha256));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Down {
            config,
            aws,
            delete_data,
        } => {
            let config = config_only(&config)?;
            let rt = runtime()?;
            let result = rt.block_on(async {
                let clients = cloud::Aws::connect(&config.region, endpoint(&aws, &config)).await;
                cloud::down(&clients, ui, &config, delete_data).await
            })?;
            if json {
                print_json(&result);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `plan` and `up` refuse a stack whose instance type cannot hold its `[platform]`, before any
/// AWS call: `Some(exit code)` when refused, with the budget table on stderr (or the JSON).
fn platform_gate(config_path: &Path, config: &StackConfig, json: bool) -> Result<Option<ExitCode>> {
    let Some(b) = platform::budget(config_path, config)? else {
        return Ok(None);
    };
    if b.fits() {
        return Ok(None);
    }
    if json {
        print_json(&platform::to_json(&b));
    }
    eprint!("{}", b.table());
    eprintln!(
        "bosun: refused: instance_type {} cannot hold the [platform] of {}; nothing was created or changed",
        config.instance_type,
        config_path.display()
    );
    Ok(Some(ExitCode::from(exit::FAILED)))
}

/// `down` needs neither the key nor the artefacts: only the name and where to reach AWS.
fn config_only(path: &Path) -> Result<StackConfig> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read stack config {} (pass --config)",
            path.display()
        )
    })?;
    StackConfig::parse(&text, &path.display().to_string())
}

fn check(playbooks: &[String], var: &[String], json: bool) -> Result<ExitCode> {
    let outside: Vec<String> = bosun_model::vars::parse_var_args(var)?
        .keys()
        .cloned()
        .collect();
    let mut invalid = false;
    for file in playbooks {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        match local::load_playbook(Path::new(file), text, &outside) {
            Ok(p) => {
                if json {
                    print_json(&json!({"file": file, "ok": true,
                        "steps": p.steps.len(), "handlers": p.handlers.len()}));
                } else {
                    println!(
                        "{file}: ok ({} steps, {} handlers)",
                        p.steps.len(),
                        p.handlers.len()
                    );
                }
            }
            Err(d) => {
                invalid = true;
                if json {
                    print_json(&json!({"file": file, "ok": false, "diagnostics": d.located()}));
                } else {
                    eprint!("{}", d.render(std::io::stderr().is_terminal()));
                }
            }
        }
    }
    Ok(if invalid {
        ExitCode::from(exit::INVALID)
    } else {
        ExitCode::SUCCESS
    })
}
