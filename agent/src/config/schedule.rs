//! `[[schedule]]` of the agent config: playbooks that `bosund run` starts by itself.
//!
//! ```toml
//! [[schedule]]
//! playbook = "backup-rds"    # a playbook under playbooks_dir, named as in POST /v1/runs
//! cron = "0 3 * * *"         # UTC; five fields (or six, seconds first)
//! jitter = "15m"             # a fixed offset in [0, jitter) derived from the name; default 0
//! name = "nightly-backup"    # default: the playbook's name; unique; the journal's key
//! vars = { keep_daily = 7 }  # like --var: win over the playbook's [vars]
//! check = true               # a drift report: the playbook runs in check mode (changes
//!                            # nothing); the steps that would change are drift
//! ```
//!
//! Validation reads the playbook the entry names: a schedule of a missing or invalid playbook
//! is refused when the config is checked or loaded, not found out at 03:00. The playbook is
//! read again for every run, so an edit made later applies to the next run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};
use toml::Spanned;

use bosun_model::playbook::{self, Diagnostic, Source};

/// Longest schedule name: it appears in logs, the journal and `bosund schedule list`.
const MAX_NAME: usize = 64;

/// `[[schedule]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// The schedule's name; default: `playbook`.
    name: Option<Spanned<String>>,
    /// A playbook name under `playbooks_dir` (`site` or `site.toml`).
    playbook: Spanned<String>,
    /// A cron expression (UTC).
    cron: Spanned<String>,
    /// The largest offset added to each cron time, e.g. `"15m"`.
    jitter: Option<Spanned<String>>,
    /// Variables for the runs, like `--var`.
    #[serde(default)]
    vars: Map<String, Value>,
    /// Run in check mode: a drift report, changing nothing.
    #[serde(default)]
    check: bool,
}

/// One validated schedule: what the daemon's scheduler is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// Unique among the schedules; the key of its state in the journal.
    pub name: String,
    /// The playbook's name as written (`backup-rds`).
    pub playbook: String,
    /// Its file: `playbooks_dir/NAME.toml`.
    pub path: PathBuf,
    /// The cron expression as written (it parses).
    pub cron: String,
    /// The jitter (zero when not given).
    pub jitter: Duration,
    /// Variables for the runs.
    pub vars: Map<String, Value>,
    /// Runs are in check mode: what would change is drift (kept in the journal per
    /// playbook).
    pub check: bool,
}

impl ScheduleConfig {
    /// The pure schedule (slots, jitter offset). Infallible for a validated config.
    pub fn schedule(&self) -> Result<crate::scheduler::Schedule, String> {
        crate::scheduler::Schedule::with_jitter(&self.name, &self.cron, self.jitter)
    }

    /// The times differ (cron, jitter or name): the state of the old times does not apply.
    pub fn same_times(&self, other: &ScheduleConfig) -> bool {
        self.name == other.name && self.cron == other.cron && self.jitter == other.jitter
    }
}

/// Validates every `[[schedule]]`, pushing a located diagnostic for each problem; returns the
/// entries without problems.
pub fn validate_schedules(
    sections: Vec<Spanned<ScheduleSection>>,
    playbooks_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Vec<ScheduleConfig> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for section in sections {
        let s = section.into_inner();
        let before = diags.len();
        let (name, name_span) = match &s.name {
            Some(n) => (n.get_ref().clone(), n.span()),
            None => (
                s.playbook.get_ref().trim_end_matches(".toml").to_string(),
                s.playbook.span(),
            ),
        };
        if !valid_name(&name) {
            diags.push(
                Diagnostic::new(
                    name_span.clone(),
                    format!("`{name}` is not a schedule name"),
                )
                .with_help(format!(
                    "use 1 to {MAX_NAME} letters, digits, `-`, `_` or `.`"
                )),
            );
        } else if !seen.insert(name.clone()) {
            diags.push(
                Diagnostic::new(
                    name_span.clone(),
                    format!("a second [[schedule]] is named `{name}`"),
                )
                .with_help(
                    "give each [[schedule]] a distinct `name` (it defaults to the playbook's): \
                     the name keys its state in the journal",
                ),
            );
        }
        if let Err(e) = crate::scheduler::parse_cron(s.cron.get_ref()) {
            diags.push(
                Diagnostic::new(
                    s.cron.span(),
                    format!("`cron`: \"{}\" is not a cron expression: {e}", s.cron.get_ref()),
                )
                .with_help("five fields in UTC: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\""),
            );
        }
        let jitter = match &s.jitter {
            None => Duration::ZERO,
            Some(j) => match crate::scheduler::parse_jitter(j.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    diags.push(
                        Diagnostic::new(j.span(), format!("`jitter`: {e}"))
                            .with_help("write a duration such as \"15m\" or \"0s\""),
                    );
                    Duration::ZERO
                }
            },
        };
        let path = check_playbook(&s.playbook, &s.vars, playbooks_dir, diags);
        if diags.len() > before {
            continue;
        }
        if let Some(path) = path {
            out.push(ScheduleConfig {
                name,
                playbook: s.playbook.into_inner(),
                path,
                cron: s.cron.into_inner(),
                jitter,
                vars: s.vars,
                check: s.check,
            });
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The playbook's file, when it exists and is valid with the schedule's variables.
fn check_playbook(
    name: &Spanned<String>,
    vars: &Map<String, Value>,
    playbooks_dir: &Path,
    diags: &mut Vec<Diagnostic>,
) -> Option<PathBuf> {
    let path = match super::playbook_path(playbooks_dir, name.get_ref()) {
        Ok(p) => p,
        Err(msg) => {
            diags.push(Diagnostic::new(name.span(), msg).with_help(
                "name a file directly in playbooks_dir, e.g. \"backup-rds\" or \"backup-rds.toml\"",
            ));
            return None;
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "unknown playbook `{}`: there is no {}",
                    name.get_ref(),
                    path.display()
                )
            } else {
                format!("reading playbook {}: {e}", path.display())
            };
            diags.push(Diagnostic::new(name.span(), msg).with_help(format!(
                "install the playbook in {} or fix the name",
                playbooks_dir.display()
            )));
            return None;
        }
    };
    let names: Vec<String> = vars.keys().cloned().collect();
    let base = playbook::BaseDir {
        path: playbooks_dir.to_path_buf(),
        origin: playbook::BaseOrigin::PlaybookDir,
    };
    let source = Source::new(path.display().to_string(), text);
    if let Err(problems) = super::load_playbook(source, &names, &base) {
        let first = problems.located().into_iter().next();
        let at = first
            .map(|d| {
                format!(
                    " (first: {}:{}:{}: {})",
                    d.file, d.line, d.column, d.message
                )
            })
            .unwrap_or_default();
        diags.push(
            Diagnostic::new(
                name.span(),
                format!(
                    "playbook `{}` is invalid: {} problems{at}",
                    name.get_ref(),
                    problems.items.len()
                ),
            )
            .with_help(format!(
                "`bosund check {}` shows every problem",
                path.display()
            )),
        );
        return None;
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use crate::config::{AgentConfig, parse};
    use bosun_model::playbook::Source;
    use std::time::Duration;

    /// (line, column, message, help) of each problem.
    type Located = Vec<(usize, usize, String, String)>;

    /// A config with `playbooks_dir` holding `backup-rds.toml` (valid) and `broken.toml`.
    fn parse_with_playbooks(tail: &str) -> (tempfile::TempDir, Result<AgentConfig, Located>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("backup-rds.toml"),
            "name = \"backup-rds\"\n[[step]]\nname = \"s\"\ncommand = { run = \"echo {{ bucket }}\" }\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("broken.toml"),
            "name = \"broken\"\n[[step]]\nname = 1\n",
        )
        .unwrap();
        let text = format!("playbooks_dir = \"{}\"\n{tail}", dir.path().display());
        let parsed = parse(Source::new("agent.toml", text)).map_err(|d| {
            d.located()
                .into_iter()
                .map(|l| (l.line, l.column, l.message, l.help.unwrap_or_default()))
                .collect()
        });
        (dir, parsed)
    }

    #[test]
    fn reads_a_schedule_with_its_defaults() {
        let (dir, c) = parse_with_playbooks(
            "[[schedule]]\nplaybook = \"backup-rds\"\ncron = \"0 3 * * *\"\njitter = \"15m\"\nvars = { bucket = \"b\" }\n\
             [[schedule]]\nname = \"hourly\"\nplaybook = \"backup-rds.toml\"\ncron = \"0 * * * *\"\nvars = { bucket = \"c\" }\n",
        );
        let c = c.unwrap();
        assert_eq!(c.schedules.len(), 2);
        let s = &c.schedules[0];
        assert_eq!(
            (s.name.as_str(), s.playbook.as_str()),
            ("backup-rds", "backup-rds")
        );
        assert_eq!(s.path, dir.path().join("backup-rds.toml"));
        assert_eq!(s.jitter, Duration::from_secs(900));
        assert_eq!(s.vars["bucket"], "b");
        assert_eq!(c.schedules[1].name, "hourly");
        assert_eq!(c.schedules[1].jitter, Duration::ZERO);
        assert!(s.schedule().is_ok());
    }

    #[test]
    fn every_schedule_problem_is_located() {
        let (_dir, c) = parse_with_playbooks(
            "[[schedule]]\nplaybook = \"backup-rds\"\ncron = \"0 25 * * *\"\nvars = { bucket = \"b\" }\n\
             [[schedule]]\nplaybook = \"backup-rds\"\ncron = \"0 3 * * *\"\njitter = \"soon\"\nvars = { bucket = \"b\" }\n\
             [[schedule]]\nname = \"x\"\nplaybook = \"nope\"\ncron = \"0 3 * * *\"\n\
             [[schedule]]\nname = \"y\"\nplaybook = \"broken\"\ncron = \"0 3 * * *\"\n\
             [[schedule]]\nname = \"z\"\nplaybook = \"../etc/passwd\"\ncron = \"0 3 * * *\"\n",
        );
        let errs = c.unwrap_err();
        let at: Vec<(usize, usize)> = errs.iter().map(|e| (e.0, e.1)).collect();
        assert_eq!(
            at,
            vec![(4, 8), (7, 12), (9, 10), (13, 12), (17, 12), (21, 12)],
            "{errs:#?}"
        );
        assert!(
            errs[0].2.contains("cron") && errs[0].3.contains("0 3 * * *"),
            "{errs:?}"
        );
        assert!(
            errs[1]
                .2
                .contains("a second [[schedule]] is named `backup-rds`"),
            "{errs:?}"
        );
        assert!(errs[2].2.contains("jitter"), "{errs:?}");
        assert!(errs[3].2.contains("unknown playbook `nope`"), "{errs:?}");
        assert!(
            errs[4].2.contains("playbook `broken` is invalid"),
            "{errs:?}"
        );
        assert!(errs[5].2.contains("not a playbook name"), "{errs:?}");
    }

    #[test]
    fn a_missing_variable_makes_the_playbook_invalid_and_a_schedule_needs_cron() {
        let (_dir, c) =
            parse_with_playbooks("[[schedule]]\nplaybook = \"backup-rds\"\ncron = \"0 3 * * *\"\n");
        let errs = c.unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].2.contains("bucket"),
            "the first problem is shown: {errs:?}"
        );
        let (_dir, c) = parse_with_playbooks("[[schedule]]\nplaybook = \"backup-rds\"\n");
        let errs = c.unwrap_err();
        assert_eq!(errs[0].0, 2, "{errs:?}");
        assert!(errs[0].2.contains("cron"), "{errs:?}");
    }
}
