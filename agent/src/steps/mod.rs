//! How each action kind runs on a host.
//!
//! The arguments of every kind, their validation and the [`Action`] enum that names them all
//! are the model's (`bosun_model::steps`); each module here implements [`StepKind`] for one
//! kind's arguments struct, with the logic that looks at the host and changes it, and its tests.
//!
//! A kind is run in two halves. [`StepKind::check`] looks at the host and says what would change
//! (with a diff where the change is to a file) and changes nothing; it is all that runs under
//! `--check`. [`StepKind::apply`] makes the change `check` found. A kind whose `check` finds
//! nothing to do is reported `ok` and `apply` is never called: that is what makes a second run
//! of a playbook cheap and unchanged.

use std::future::Future;
use std::path::{Path, PathBuf};

use bosun_model::jinja::Jinja;
use bosun_model::steps::Action;

pub use bosun_model::event::CommandOutput;

mod apt_repository;
mod authorized_key;
#[cfg(feature = "aws")]
mod backup_prune;
#[cfg(feature = "aws")]
mod backup_verify;
mod block_in_file;
mod command;
mod content;
mod copy;
mod docker_install;
mod file;
mod get_url;
mod group;
mod helm_install;
mod helm_release;
mod hostname;
mod k3s;
mod k3s_install;
mod k3s_interrupted;
mod k3s_unit;
mod k3s_upgrade;
mod kube_node;
mod line_in_file;
mod mount;
#[cfg(feature = "aws")]
mod mysql_backup;
#[cfg(feature = "aws")]
mod mysql_user;
mod package;
#[cfg(feature = "aws")]
mod postgres_backup;
#[cfg(feature = "aws")]
mod rds_snapshot;
#[cfg(feature = "aws")]
mod s3_sync;
mod service;
#[cfg(feature = "aws")]
mod ssm_parameter;
mod swap;
mod sysctl;
mod template;
mod timezone;
mod unarchive;
mod user;

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
    /// Where a step leaves a secret it read for later steps (`ssm_parameter` get): the
    /// engine puts it in `register` as `value` and masks it in every event from then on.
    pub read_secret: &'a ReadSecret,
}

/// A secret one step read for the steps after it. See [`StepContext::read_secret`].
#[derive(Debug, Default)]
pub struct ReadSecret(std::sync::Mutex<Option<crate::secrets::Secret>>);

impl ReadSecret {
    /// Leaves `secret` for the engine.
    pub fn set(&self, secret: crate::secrets::Secret) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(secret);
        }
    }

    /// What the step left, once.
    pub fn take(&self) -> Option<crate::secrets::Secret> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
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

/// Runs one step's action: its kind's check, then apply unless in check mode or nothing would
/// change. The match is exhaustive: a kind the model lists without an execution here does not
/// build.
pub async fn run(action: &Action, ctx: &StepContext<'_>) -> anyhow::Result<Outcome> {
    match action {
        Action::File(a) => run_kind(a, ctx).await,
        Action::Copy(a) => run_kind(a, ctx).await,
        Action::Template(a) => run_kind(a, ctx).await,
        Action::LineInFile(a) => run_kind(a, ctx).await,
        Action::BlockInFile(a) => run_kind(a, ctx).await,
        Action::GetUrl(a) => run_kind(a, ctx).await,
        Action::Unarchive(a) => run_kind(a, ctx).await,
        Action::AptRepository(a) => run_kind(a, ctx).await,
        Action::Command(a) => run_kind(a, ctx).await,
        Action::Package(a) => run_kind(a, ctx).await,
        Action::Service(a) => run_kind(a, ctx).await,
        Action::Swap(a) => run_kind(a, ctx).await,
        Action::User(a) => run_kind(a, ctx).await,
        Action::Group(a) => run_kind(a, ctx).await,
        Action::AuthorizedKey(a) => run_kind(a, ctx).await,
        Action::Sysctl(a) => run_kind(a, ctx).await,
        Action::Hostname(a) => run_kind(a, ctx).await,
        Action::Timezone(a) => run_kind(a, ctx).await,
        Action::Mount(a) => run_kind(a, ctx).await,
        Action::DockerInstall(a) => run_kind(a, ctx).await,
        Action::HelmInstall(a) => run_kind(a, ctx).await,
        Action::HelmRelease(a) => run_kind(a, ctx).await,
        Action::K3sInstall(a) => run_kind(a, ctx).await,
        Action::K3sUpgrade(a) => run_kind(a, ctx).await,
        Action::KubeNode(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::MysqlBackup(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::MysqlUser(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::PostgresBackup(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::BackupVerify(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::BackupPrune(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::RdsSnapshot(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::S3Sync(a) => run_kind(a, ctx).await,
        #[cfg(feature = "aws")]
        Action::SsmParameter(a) => run_kind(a, ctx).await,
        #[cfg(not(feature = "aws"))]
        Action::MysqlBackup(_)
        | Action::MysqlUser(_)
        | Action::PostgresBackup(_)
        | Action::BackupVerify(_)
        | Action::BackupPrune(_)
        | Action::RdsSnapshot(_)
        | Action::S3Sync(_)
        | Action::SsmParameter(_) => {
            anyhow::bail!(
                "`{}` is not in this build: {}",
                action.key(),
                crate::WITHOUT_AWS
            )
        }
    }
}

/// A test hook for crash safety: when `BOSUN_TEST_KILL_AT` names `point`, bosund sends itself
/// SIGKILL here, which is `kill -9` at a known instant without racing a timer. Points:
/// k3s_upgrade's `stopped`, `backed-up`, `swapped`, `started`; swap's `swap-off`,
/// `swap-removed`, `swap-created`, `swap-mkswap` (after that action).
pub(crate) fn kill_point(point: &str) {
    if std::env::var("BOSUN_TEST_KILL_AT").is_ok_and(|p| p == point) {
        tracing::warn!("BOSUN_TEST_KILL_AT={point}: killing bosund");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Settles what a step killed mid-way left on the host (today: an interrupted `k3s_upgrade`,
/// [`k3s_interrupted`]) and says what was done; an error when it could not be settled (the
/// record is kept for the next attempt). Called when bosund's runner starts.
pub async fn settle_interrupted(state_dir: &std::path::Path) -> anyhow::Result<Option<String>> {
    k3s_interrupted::resume(state_dir).await
}

/// After `action`'s `timeout` fired and its future was dropped: settles what it left half-done
/// and says what was done, for the step's message. `None` for kinds with nothing to settle.
pub async fn after_timeout(action: &Action, ctx: &StepContext<'_>) -> Option<String> {
    match action {
        Action::K3sUpgrade(_) if !ctx.check => match k3s_interrupted::resume(ctx.state_dir).await {
            Ok(None) => None,
            Ok(Some(settled)) => Some(settled),
            Err(e) => Some(format!("{e:#}")),
        },
        _ => None,
    }
}
