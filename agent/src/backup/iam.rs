//! RDS IAM database authentication: the token that stands in for a password, and the client
//! options a connection with it needs.
//!
//! The token is the SDK's (`aws_sdk_rds::auth_token`): a SigV4-presigned
//! `https://<host>:<port>/?Action=connect&DBUser=<user>` for service `rds-db` in the step's
//! region, valid 15 minutes, signed with the host's credentials (its instance role), without
//! its `https://`. It is sent as the password, so the MySQL protocol needs the cleartext
//! authentication plugin, and the connection must be TLS with the server verified against the
//! RDS CA bundle (RDS refuses IAM logins without TLS; verifying the certificate keeps the token
//! from a server in the middle).

use anyhow::{Context, anyhow};
use aws_config::SdkConfig;
use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config};

use crate::secrets::Secret;

/// How long a token is valid: RDS's maximum.
pub const TOKEN_LIFETIME_SECS: u64 = 900;

/// A token for `user` at `host:port`, signed with `sdk`'s credentials, region and clock.
pub async fn auth_token(
    sdk: &SdkConfig,
    host: &str,
    port: u16,
    user: &str,
) -> anyhow::Result<Secret> {
    let region = sdk.region().cloned().ok_or_else(|| {
        anyhow!("auth = \"iam\" needs the database's region: set `region` on the step")
    })?;
    let generator = AuthTokenGenerator::new(
        Config::builder()
            .hostname(host)
            .port(u64::from(port))
            .username(user)
            .region(region)
            .expires_in(TOKEN_LIFETIME_SECS)
            .build()
            .map_err(|e| anyhow!("{e}"))
            .context("configuring the RDS auth token")?,
    );
    let token = generator
        .auth_token(sdk)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| {
            format!(
                "signing an RDS IAM token for {user}@{host}:{port} (are the host's AWS \
                 credentials available?)"
            )
        })?;
    Ok(Secret::new(token.as_str().to_string()))
}

/// The client options an IAM login needs: TLS verified against `ssl_ca`, and the cleartext
/// plugin (both MariaDB's and MySQL's clients take `--default-auth`; MySQL's also needs the
/// `LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN` variable, see [`CLEARTEXT_ENV`]).
pub fn client_args(ssl_ca: &str) -> Vec<String> {
    vec![
        format!("--ssl-ca={ssl_ca}"),
        "--ssl-verify-server-cert".into(),
        "--default-auth=mysql_clear_password".into(),
    ]
}

/// Lets MySQL's libmysqlclient send a password in clear text (inside TLS); MariaDB's client
/// ignores it.
pub const CLEARTEXT_ENV: (&str, &str) = ("LIBMYSQL_ENABLE_CLEARTEXT_PLUGIN", "Y");
