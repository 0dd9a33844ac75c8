//! Shell completions and man pages for `bosund` and `bosun`, from their clap definitions, so they
//! never disagree with `--help`. Both binaries expose them as commands (`completions SHELL`,
//! `man DIR`); the README's install section puts them in place.
//!
//! No I/O here either: completions go to the writer the caller hands in, man pages come back
//! as (file name, roff text) pairs for the caller to write.

use std::io::Write;

pub use clap_complete::Shell;

/// Writes the completion script of `cmd` for `shell` (bash, zsh, fish, elvish, powershell).
pub fn completions(mut cmd: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, out);
}

/// Every man page of `cmd`: `NAME.1`, then `NAME-SUBCOMMAND.1` for each subcommand (nested ones
/// too), as `clap_mangen::generate_to` names them.
pub fn man_pages(cmd: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, out)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut roff = Vec::new();
        man.render(&mut roff)?;
        out.push((man.get_filename(), roff));
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    walk(cmd, &mut pages)?;
    pages.reverse();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> clap::Command {
        clap::Command::new("tool")
            .about("does things")
            .subcommand(clap::Command::new("apply").about("applies"))
            .subcommand(
                clap::Command::new("schedule")
                    .subcommand(clap::Command::new("list").about("lists")),
            )
    }

    #[test]
    fn a_page_per_command_named_as_man_expects() {
        let pages = man_pages(cli()).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "tool.1",
                "tool-schedule.1",
                "tool-schedule-list.1",
                "tool-apply.1"
            ]
        );
        let top = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(top.starts_with(".ie \\n(.g .ds Aq"), "{top}");
        assert!(top.contains("does things"), "{top}");
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut out = Vec::new();
        completions(cli(), Shell::Bash, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("complete -F _tool"), "{text}");
        assert!(text.contains("apply"), "{text}");
    }
}
