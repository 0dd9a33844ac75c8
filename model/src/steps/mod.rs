//! Action kinds: what a step asks for, as typed arguments.
//!
//! Each kind has a module here with its arguments struct (plain serde, `deny_unknown_fields`,
//! a JSON Schema) and its checks serde cannot express ([`ActionArgs::validate`]); the agent
//! implements how each kind runs on a host (`bosun_agent::steps`). The `actions!` list at the
//! bottom of this file is the one place that names them all: it generates the [`Action`] enum,
//! the list of action keys a step may use, and the schema of a step. The agent's dispatch is an
//! exhaustive `match` on [`Action`], so a kind added here without its execution does not build.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::jinja::Jinja;

pub mod apt_repository;
pub mod authorized_key;
pub mod backup_prune;
pub mod backup_verify;
pub mod block_in_file;
pub mod command;
pub mod common;
pub mod copy;
pub mod docker_install;
pub mod file;
pub mod get_url;
pub mod group;
pub mod helm_install;
pub mod helm_release;
pub mod hostname;
pub mod k3s;
pub mod k3s_install;
pub mod k3s_upgrade;
pub mod kube_node;
pub mod line_in_file;
pub mod mount;
pub mod mysql_backup;
pub mod mysql_user;
pub mod package;
pub mod postgres_backup;
pub mod rds_snapshot;
pub mod s3_sync;
pub mod service;
pub mod ssm_parameter;
pub mod swap;
pub mod sysctl;
pub mod template;
pub mod timezone;
pub mod unarchive;
pub mod user;

/// What every arguments struct provides besides its serde and schema derives.
pub trait ActionArgs: Serialize + DeserializeOwned + JsonSchema {
    /// Checks that serde cannot express (one of two keys, a well-formed mode). Strings that
    /// still hold Jinja markup are not judged here: they are checked again after rendering.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }

    /// The arguments that name a file read from the machine the playbook runs on, and what
    /// each file is (`src` of `template`). A key may hold a string or a list of strings. These
    /// are what [`crate::playbook::Playbook::local_files`] lists, with their spans.
    const LOCAL_FILES: &'static [(&'static str, LocalFileRole)] = &[];
}

/// What a local file named in a step's arguments is for (see [`ActionArgs::LOCAL_FILES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalFileRole {
    /// `template.src`: a Jinja template, rendered on the host.
    TemplateSource,
    /// `copy.src`: a file copied byte for byte.
    CopySource,
    /// An entry of `helm_release.values_files`: YAML values.
    ValuesFile,
    /// `unarchive.src` when it is a file: an archive unpacked on the host.
    ArchiveSource,
}

impl LocalFileRole {
    /// How the file is named in messages: `template` src, `helm_release` values file.
    pub fn describe(self) -> &'static str {
        match self {
            LocalFileRole::TemplateSource => "`template` src",
            LocalFileRole::CopySource => "`copy` src",
            LocalFileRole::ValuesFile => "`helm_release` values file",
            LocalFileRole::ArchiveSource => "`unarchive` src",
        }
    }
}

/// The problem with a `mode` argument, if any; a mode that still holds Jinja is judged after
/// rendering. Shared by every kind that takes `mode`.
pub fn mode_problem(mode: Option<&str>) -> Option<String> {
    mode.filter(|m| !crate::jinja::is_templated(m))
        .and_then(|m| crate::mode::parse_mode(m).err())
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

            /// The arguments of the action written under `key` that name local files (see
            /// [`ActionArgs::LOCAL_FILES`]); empty when `key` names no action.
            pub fn local_file_args(key: &str) -> &'static [(&'static str, LocalFileRole)] {
                match key {
                    $( stringify!($key) => <$args as ActionArgs>::LOCAL_FILES, )*
                    _ => &[],
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
                            let Some((template, stand_in)) = common::deferred_template(&msg) else {
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
        }

        /// The shape of one `[[step]]` table, for the JSON Schema only: the common keys and one
        /// optional key per action kind (exactly one must be present; the schema says so with
        /// `minProperties`-free `oneOf` generated below).
        #[derive(JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        pub struct StepSchema {
            #[serde(flatten)]
            common: common::StepCommon,
            $( $key: Option<$args>, )*
            /// Steps run together (instead of an action): `[[step.block]]` tables. When one
            /// fails, `rescue` runs (and the run goes on if it succeeds); `always` runs after,
            /// either way.
            block: Option<Vec<StepSchema>>,
            /// With `block`: steps run when a step of the block fails.
            rescue: Option<Vec<StepSchema>>,
            /// With `block`: steps run after the block (and its rescue), whatever happened.
            always: Option<Vec<StepSchema>>,
            /// Runs another playbook's steps here (instead of an action); its handlers join
            /// this playbook's by name.
            include: Option<common::IncludeSchema>,
        }
    };
}

actions! {
    file => File(file::FileArgs),
    copy => Copy(copy::CopyArgs),
    template => Template(template::TemplateArgs),
    line_in_file => LineInFile(line_in_file::LineInFileArgs),
    block_in_file => BlockInFile(block_in_file::BlockInFileArgs),
    get_url => GetUrl(get_url::GetUrlArgs),
    unarchive => Unarchive(unarchive::UnarchiveArgs),
    apt_repository => AptRepository(apt_repository::AptRepositoryArgs),
    command => Command(command::CommandArgs),
    package => Package(package::PackageArgs),
    service => Service(service::ServiceArgs),
    swap => Swap(swap::SwapArgs),
    user => User(user::UserArgs),
    group => Group(group::GroupArgs),
    authorized_key => AuthorizedKey(authorized_key::AuthorizedKeyArgs),
    sysctl => Sysctl(sysctl::SysctlArgs),
    hostname => Hostname(hostname::HostnameArgs),
    timezone => Timezone(timezone::TimezoneArgs),
    mount => Mount(mount::MountArgs),
    docker_install => DockerInstall(docker_install::DockerInstallArgs),
    helm_install => HelmInstall(helm_install::HelmInstallArgs),
    helm_release => HelmRelease(helm_release::HelmReleaseArgs),
    k3s_install => K3sInstall(k3s_install::K3sInstallArgs),
    k3s_upgrade => K3sUpgrade(k3s_upgrade::K3sUpgradeArgs),
    kube_node => KubeNode(kube_node::KubeNodeArgs),
    mysql_backup => MysqlBackup(mysql_backup::MysqlBackupArgs),
    mysql_user => MysqlUser(mysql_user::MysqlUserArgs),
    postgres_backup => PostgresBackup(postgres_backup::PostgresBackupArgs),
    backup_verify => BackupVerify(backup_verify::BackupVerifyArgs),
    backup_prune => BackupPrune(backup_prune::BackupPruneArgs),
    rds_snapshot => RdsSnapshot(rds_snapshot::RdsSnapshotArgs),
    s3_sync => S3Sync(s3_sync::S3SyncArgs),
    ssm_parameter => SsmParameter(ssm_parameter::SsmParameterArgs),
}
