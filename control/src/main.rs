//! `bosun`: the operator's CLI. It drives `bosund` agents; today it validates playbooks with the
//! agent's own model (the same parser and diagnostics as `bosund check`), so a playbook is
//! checked on the laptop before it is sent anywhere. Remote runs (`bosun run`) and the AWS stack
//! (`bosun up`) build on this crate.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use bosun_agent::playbook::{self, Source};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bosun",
    version,
    about = "bosun's control CLI: drives bosund agents"
)]
struct Cli {
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
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bosun: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { playbooks, var } => {
            let outside: Vec<String> = bosun_agent::vars::parse_var_args(&var)?
                .keys()
                .cloned()
                .collect();
            let mut invalid = false;
            for file in playbooks {
                let text =
                    std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
                match playbook::load(Source::new(file.clone(), text), &outside) {
                    Ok(p) => println!(
                        "{file}: ok ({} steps, {} handlers)",
                        p.steps.len(),
                        p.handlers.len()
                    ),
                    Err(d) => {
                        invalid = true;
                        eprint!("{}", d.render(std::io::stderr().is_terminal()));
                    }
                }
            }
            Ok(if invalid {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
