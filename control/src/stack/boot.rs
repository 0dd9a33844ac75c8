//! The first boot as the template holds it: the user-data of the host (the k3s server) and of
//! a `[nodes]` agent, rendered with placeholders ([`render_user_data`]) and joined with the
//! stack's values ([`user_data_expr`]), and the digests of the artefacts it installs.

use super::cfn::Expr;
use super::config::StackConfig;
use super::userdata::{self, UserDataSpec};

/// The namespace of the agent's own metrics (memory, disk); the role may publish only there.
pub const METRICS_NAMESPACE: &str = "Bosun/Host";

/// Placeholders in the rendered user-data, replaced by stack values through `Fn::Join`.
pub(super) const BUCKET_PLACEHOLDER: &str = "@@BOSUN_BUCKET@@";
pub(super) const ARTIFACTS_PLACEHOLDER: &str = "@@BOSUN_ARTIFACTS_URL@@";
/// The database's host name and its master secret, for the first boot's database.toml.
pub const DB_HOST_PLACEHOLDER: &str = "@@BOSUN_DB_HOST@@";
/// See [`DB_HOST_PLACEHOLDER`].
pub const DB_SECRET_PLACEHOLDER: &str = "@@BOSUN_DB_SECRET_ARN@@";
/// The host's private address in an agent's user-data (the k3s server URL).
pub const SERVER_ADDRESS_PLACEHOLDER: &str = "@@BOSUN_SERVER_ADDRESS@@";

/// Which instance a first boot is for.
#[derive(Debug, Clone, Copy)]
pub enum BootRole<'a> {
    /// The host: the k3s server, and everything stack.toml runs on it (edge, database,
    /// platform, registries).
    Server,
    /// A `[nodes]` agent: bootstrap.toml only, joining the server at `server_address`.
    Agent { server_address: &'a str },
}

/// The `#cloud-config` of a host or an agent, for `bucket` and `artifacts_url` (both may be
/// placeholders the template replaces).
pub fn render_user_data(
    c: &StackConfig,
    role: BootRole<'_>,
    bucket: &str,
    artifacts_url: &str,
    boot: &BootDigests,
) -> String {
    let log_group = log_group_name(c);
    let server = matches!(role, BootRole::Server);
    let vars = match role {
        BootRole::Server => c.server_boot_vars(DB_HOST_PLACEHOLDER, DB_SECRET_PLACEHOLDER),
        BootRole::Agent { server_address } => c.agent_boot_vars(server_address),
    };
    let (registries, ecr_registries) = if server {
        (c.registry_boot(), c.ecr_registries())
    } else {
        (Vec::new(), Vec::new())
    };
    userdata::render(&UserDataSpec {
        stack: &c.name,
        region: &c.region,
        bucket,
        artifacts_url,
        bosund_sha256: &boot.bosund_sha256,
        playbooks_sha256: &boot.playbooks_sha256,
        log_group: &log_group,
        metrics_namespace: METRICS_NAMESPACE,
        bootstrap_vars: &vars,
        edge: server && c.edge.is_some(),
        database: server && c.rds.is_some(),
        platform: server && c.platform.is_some(),
        registries: &registries,
        ecr_registries: &ecr_registries,
    })
}

/// A rendered user-data as a template value: its placeholders joined with the stack's values.
pub fn user_data_expr(c: &StackConfig, text: &str) -> Expr {
    let artifacts_url = match &c.endpoints.artifacts {
        Some(base) => Expr::Join(
            String::new(),
            vec![
                Expr::str(format!("{}/", base.trim_end_matches('/'))),
                Expr::r#ref("Bucket"),
                Expr::str("/artifacts"),
            ],
        ),
        None => Expr::Join(
            String::new(),
            vec![
                Expr::str("https://"),
                Expr::get_att("Bucket", "RegionalDomainName"),
                Expr::str("/artifacts"),
            ],
        ),
    };
    Expr::Base64(Box::new(Expr::join_with_placeholders(
        text,
        &[
            (BUCKET_PLACEHOLDER, Expr::r#ref("Bucket")),
            (
                DB_HOST_PLACEHOLDER,
                Expr::get_att("Database", "Endpoint.Address"),
            ),
            (
                DB_SECRET_PLACEHOLDER,
                Expr::get_att("Database", "MasterUserSecret.SecretArn"),
            ),
            (ARTIFACTS_PLACEHOLDER, artifacts_url),
            (
                SERVER_ADDRESS_PLACEHOLDER,
                Expr::get_att("Host", "PrivateIp"),
            ),
        ],
    )))
}

/// The digests the instance's first boot fetches and verifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootDigests {
    pub bosund_sha256: String,
    pub playbooks_sha256: String,
}

/// The stack's log group name.
pub fn log_group_name(c: &StackConfig) -> String {
    format!("/bosun/{}", c.name)
}
