//! Action kinds: what a step does to the host.
//!
//! Each kind lives in its own module with its arguments struct (plain serde, `deny_unknown_fields`,
//! a JSON Schema), its [`StepKind`] implementation and its tests. The [`actions!`] list at the
//! bottom of this file is the one place that names them all: it generates the [`Action`] enum,
//! the list of action keys a step may use, and the schema of a step.
//!
//! A kind is run in two halves. [`StepKind::check`] looks at the host and says what would change
//! (with a diff where the change is to a file) and changes nothing; it is all that runs under
//! `--check`. [`StepKind::apply`] makes the change `check` found. A kind whose `check` finds
//! nothing to do is reported `ok` and `apply` is never called: that is what makes a second run
//! of a playbook cheap and unchanged.

use std::future::Future;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::jinja::Jinja;

pub mod backup_prune;
pub mod backup_verify;
pub mod command;
pub mod content;
pub mod copy;
pub mod docker_install;
pub mod file;
pub mod helm_install;
pub mod helm_release;
pub mod k3s;
pub mod k3s_install;
pub mod k3s_upgrade;
pub mod line_in_file;
pub mod mysql_backup;
pub mod package;
pub mod rds_snapshot;
pub mod s3_sync;
pub mod service;
pub mod swap;
pub mod template;

/// What a step kind may look at while it runs.
pub struct StepContext<'a> {
    /// `--check`: report, change nothing.
    pub check: bool,
    /// Directory that relative paths in arguments (`src`) resolve against: the playbook's own.
    pub base_dir: &'a Path,
    /// The run's template environment.
    pub jinja: &'a Jinja,
    /// The variables visible to this step (vars, facts, registered results).
    pub vars: &'a minijinja::Value,
    /// bosund's state directory (the journal's): where steps keep what must outlive a run,
    /// such as `k3s_upgrade`'s datastore backups.
    pub state_dir: &'a Path,
}

impl StepContext<'_> {
    /// `path` as given when absolute, else relative to the playbook's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// What a command printed and returned.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandOutput {
    /// Standard output, lossily decoded, capped (see [`command::OUTPUT_CAP`]).
    pub stdout: String,
    /// Standard error, lossily decoded, capped.
    pub stderr: String,
    /// Exit code; -1 when the process was killed by a signal.
    pub rc: i32,
}

/// The finding of [`StepKind::check`].
pub struct Check<C> {
    /// `None` when the host is already as the step wants it.
    pub change: Option<C>,
    /// A unified diff of what would change, for file contents.
    pub diff: Option<String>,
    /// One line on what was found or would be done.
    pub message: Option<String>,
}

impl<C> Check<C> {
    /// Nothing to do.
    pub fn unchanged(message: impl Into<Option<String>>) -> Self {
        Self {
            change: None,
            diff: None,
            message: message.into(),
        }
    }

    /// `change` needs applying.
    pub fn change(change: C, message: impl Into<String>) -> Self {
        Self {
            change: Some(change),
            diff: None,
            message: Some(message.into()),
        }
    }

    /// Attaches a diff.
    pub fn with_diff(mut self, diff: Option<String>) -> Self {
        self.diff = diff;
        self
    }
}

/// What a step did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The host was changed (or, under `--check`, would be).
    pub changed: bool,
    /// A unified diff of a file's content.
    pub diff: Option<String>,
    /// One line on what was done.
    pub message: Option<String>,
    /// For commands: their output and exit code. A non-zero code fails the step unless
    /// `failed_when` says otherwise.
    pub output: Option<CommandOutput>,
}

/// One action kind. Implemented by the kind's arguments struct once its strings are rendered.
pub trait StepKind: Send + Sync {
    /// Whatever `check` learned that `apply` needs (new content, which parts differ).
    type Change: Send;

    /// Looks at the host and says what `apply` would change. Must not change anything.
    fn check(
        &self,
        ctx: &StepContext<'_>,
    ) -> impl Future<Output = anyhow::Result<Check<Self::Change>>> + Send;

    /// Makes the change `check` found.
    fn apply(
        &self,
        ctx: &StepContext<'_>,
        change: Self::Change,
    ) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

/// What every arguments struct provides besides [`StepKind`].
pub trait ActionArgs: StepKind + Serialize + DeserializeOwned + JsonSchema {
    /// Checks that serde cannot express (one of two keys, a well-formed mode). Strings that
    /// still hold Jinja markup are not judged here: they are checked again after rendering.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The problem with a `mode` argument, if any; a mode that still holds Jinja is judged after
/// rendering. Shared by every kind that takes `mode`.
pub(crate) fn mode_problem(mode: Option<&str>) -> Option<String> {
    mode.filter(|m| !crate::jinja::is_templated(m))
        .and_then(|m| crate::host::fs::parse_mode(m).err())
}

/// Runs one kind: check, then apply unless in check mode or nothing would change.
async fn run_kind<K: StepKind>(kind: &K, ctx: &StepContext<'_>) -> anyhow::Result<Outcome> {
    let found = kind.check(ctx).await?;
    match found.change {
        None => Ok(Outcome {
            changed: false,
            diff: None,
            message: found.message,
            output: None,
        }),
        Some(_) if ctx.check => Ok(Outcome {
            changed: true,
            diff: found.diff,
            message: found.message,
            output: None,
        }),
        Some(change) => {
            let mut outcome = kind.apply(ctx, change).await?;
            if outcome.diff.is_none() {
                outcome.diff = found.diff;
            }
            Ok(outcome)
        }
    }
}

/// Replaces the first string equal to `needle` in `value` by `with`; false when there is none.
fn replace_string(value: &mut serde_json::Value, needle: &str, with: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) if s == needle => {
            *value = with.clone();
            true
        }
        serde_json::Value::Array(items) => {
            items.iter_mut().any(|v| replace_string(v, needle, with))
        }
        serde_json::Value::Object(map) => map.values_mut().any(|v| replace_string(v, needle, with)),
        _ => false,
    }
}

/// Generates [`Action`], [`ACTION_KEYS`] and [`StepSchema`] from one list of kinds.
macro_rules! actions {
    ($( $key:ident => $variant:ident($args:ty) ),* $(,)?) => {
        /// One step's action, with its arguments.
        #[derive(Debug, Clone)]
        pub enum Action {
            $( #[allow(missing_docs)] $variant($args), )*
        }

        /// The keys that name an action in a step, in the order kinds are listed.
        pub const ACTION_KEYS: &[&str] = &[ $( stringify!($key) ),* ];

        impl Action {
            /// The key this action is written under (`file`, `copy`, ...).
            pub fn key(&self) -> &'static str {
                match self { $( Action::$variant(_) => stringify!($key), )* }
            }

            /// Deserialises the arguments of the action written under `key`; `None` when `key`
            /// names no action.
            pub(crate) fn deserialize<'de, D>(key: &str, de: D) -> Option<Result<Action, D::Error>>
            where
                D: serde::Deserializer<'de>,
            {
                match key {
                    $( stringify!($key) => Some(<$args>::deserialize(de).map(Action::$variant)), )*
                    _ => None,
                }
            }

            /// Problems serde cannot see (see [`ActionArgs::validate`]).
            pub fn validate(&self) -> Vec<String> {
                match self { $( Action::$variant(a) => a.validate(), )* }
            }

            /// The arguments as written (`raw`, see [`crate::playbook::Step::raw_args`]) with
            /// their strings rendered against `vars`, read as this action's kind, and checked
            /// again ([`ActionArgs::validate`]): what a template stood in for at load time is
            /// known now, and a bad value fails the step before it does anything.
            pub fn render(&self, raw: &serde_json::Value, jinja: &Jinja, vars: &minijinja::Value) -> anyhow::Result<Action> {
                let rendered = jinja.render_value(raw.clone(), vars)?;
                let action = match self {
                    $( Action::$variant(_) => Action::$variant(serde_json::from_value(rendered)?), )*
                };
                let problems = action.validate();
                if !problems.is_empty() {
                    anyhow::bail!("the rendered arguments are invalid: {}", problems.join("; "));
                }
                Ok(action)
            }

            /// Reads arguments given as JSON as the action written under `key`, standing in an
            /// empty table or list for each whole-value template (`"{{ some_table }}"`) where one
            /// is expected: those are only known once rendered. For validation at parse time.
            pub(crate) fn from_json_deferring_templates(key: &str, mut raw: serde_json::Value) -> Result<Action, String> {
                for _ in 0..32 {
                    let attempt: Result<Action, serde_json::Error> = match key {
                        $( stringify!($key) => serde_json::from_value(raw.clone()).map(Action::$variant), )*
                        _ => return Err(format!("unknown action `{key}`")),
                    };
                    match attempt {
                        Ok(a) => return Ok(a),
                        Err(e) => {
                            let msg = e.to_string();
                            let Some((template, stand_in)) = crate::playbook::deferred_template(&msg) else {
                                return Err(msg);
                            };
                            if !replace_string(&mut raw, &template, &stand_in) {
                                return Err(msg);
                            }
                        }
                    }
                }
                Err("too many whole-value templates".into())
            }

            /// Runs the action (see [`run_kind`]).
            pub async fn run(&self, ctx: &StepContext<'_>) -> anyhow::Result<Outcome> {
                match self { $( Action::$variant(a) => run_kind(a, ctx).await, )* }
            }
        }

        /// The shape of one `[[step]]` table, for the JSON Schema only: the common keys and one
        /// optional key per action kind (exactly one must be present; the schema says so with
        /// `minProperties`-free `oneOf` generated below).
        #[derive(JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct StepSchema {
            #[serde(flatten)]
            common: crate::playbook::StepCommon,
            $( $key: Option<$args>, )*
        }
    };
}

actions! {
    file => File(file::FileArgs),
    copy => Copy(copy::CopyArgs),
    template => Template(template::TemplateArgs),
    line_in_file => LineInFile(line_in_file::LineInFileArgs),
    command => Command(command::CommandArgs),
    package => Package(package::PackageArgs),
    service => Service(service::ServiceArgs),
    swap => Swap(swap::SwapArgs),
    docker_install => DockerInstall(docker_install::DockerInstallArgs),
    helm_install => HelmInstall(helm_install::HelmInstallArgs),
    helm_release => HelmRelease(helm_release::HelmReleaseArgs),
    k3s_install => K3sInstall(k3s_install::K3sInstallArgs),
    k3s_upgrade => K3sUpgrade(k3s_upgrade::K3sUpgradeArgs),
    mysql_backup => MysqlBackup(mysql_backup::MysqlBackupArgs),
    backup_verify => BackupVerify(backup_verify::BackupVerifyArgs),
    backup_prune => BackupPrune(backup_prune::BackupPruneArgs),
    rds_snapshot => RdsSnapshot(rds_snapshot::RdsSnapshotArgs),
    s3_sync => S3Sync(s3_sync::S3SyncArgs),
}
