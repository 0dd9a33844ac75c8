//! Runs `postgres_backup` on the host: `mysql_backup`'s pipeline ([`super::mysql_backup::dump_to_s3`])
//! fed by pg_dump and read by [`CopyScanner`]; arguments and validation are the model's
//! (`bosun_model::steps::postgres_backup`).

use anyhow::Context;
use bosun_model::backup::parse_size;
use bosun_model::backup::parts::{MEMORY_BUDGET, plan_parts};
use bosun_model::secret_source::SecretSource;
use bosun_model::steps::postgres_backup::{PostgresBackupArgs, SETTINGS};

use super::mysql_backup::{DumpJob, backed_up, dump_to_s3, would_dump};
use super::{Check, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget};
use crate::backup::Number;
use crate::backup::pg_dump_scan::CopyScanner;
use crate::backup::postgres::{Client, Connection, Dumper, client_argv, dump_argv};
use crate::secrets;

/// How a PostgreSQL step logs in, as its arguments say.
pub(crate) struct Login<'a> {
    pub host: &'a str,
    pub port: &'a Number,
    pub user: &'a str,
    pub password: &'a str,
    pub settings: &'a std::collections::BTreeMap<String, String>,
}

/// Builds a [`Connection`], the password read from its source.
pub(crate) async fn connect(login: &Login<'_>, aws: Option<&Aws>) -> anyhow::Result<Connection> {
    let port = u16::try_from(login.port.value("port")?).context("`port` must be at most 65535")?;
    let source: SecretSource = login.password.parse()?;
    let password = secrets::read(&source, aws).await?;
    let settings = login
        .settings
        .iter()
        .filter_map(|(k, v)| {
            SETTINGS
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, env)| (env.to_string(), v.clone()))
        })
        .collect();
    Ok(Connection {
        host: login.host.to_string(),
        port,
        user: login.user.to_string(),
        password,
        settings,
    })
}

fn target(args: &PostgresBackupArgs) -> AwsTarget {
    AwsTarget {
        region: args.region.clone(),
        endpoint_url: args.endpoint_url.clone(),
    }
}

impl StepKind for PostgresBackupArgs {
    type Change = ();

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<()>> {
        let port = self.port.value("port")?;
        would_dump(&self.databases, &self.key, &self.bucket, &self.host, port)
    }

    async fn apply(&self, _ctx: &StepContext<'_>, (): ()) -> anyhow::Result<Outcome> {
        let level = i32::try_from(self.compression_level.value("compression_level")?)?;
        let plan = plan_parts(
            parse_size(&self.max_size).map_err(anyhow::Error::msg)?,
            MEMORY_BUDGET,
        )
        .map_err(anyhow::Error::msg)?;
        let aws = Aws::connect(&target(self)).await?;
        let conn = connect(
            &Login {
                host: &self.host,
                port: &self.port,
                user: &self.user,
                password: &self.password,
                settings: &self.settings,
            },
            Some(&aws),
        )
        .await?;
        let client = Client {
            argv: client_argv(&self.client_command)?,
            conn: conn.clone(),
        };
        let dumper = Dumper {
            argv: dump_argv(&self.dump_command)?,
            conn,
        };
        let tool_version = dumper.version().await?;
        let mut made = Vec::new();
        for db in &self.databases {
            let server_version = client
                .server_version(db)
                .await
                .with_context(|| format!("connecting to database {db}"))?;
            let job = DumpJob {
                aws: &aws,
                bucket: &self.bucket,
                key_template: &self.key,
                db,
                level,
                plan,
                server_version: &server_version,
                tool_version: &tool_version,
                engine: Some("postgres"),
            };
            let m = dump_to_s3(&job, || dumper.spawn(db), CopyScanner::new())
                .await
                .with_context(|| format!("backing up database {db}"))?;
            made.push(m);
        }
        Ok(backed_up(&self.bucket, made))
    }
}
