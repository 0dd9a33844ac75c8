//! Runs `mysql_user` on the host; its arguments and their validation are the model's
//! (`bosun_model::steps::mysql_user`). `check` reads the account (`mysql.user`) and its grants
//! (`SHOW GRANTS`) and plans the statements ([`plan`], pure); `apply` runs them in one client
//! session. No statement holds a secret: the login's password reaches the client in
//! `MYSQL_PWD` only, and the managed account has none.

use std::collections::{BTreeMap, BTreeSet};

use bosun_model::steps::mysql_user::{Grant, MysqlUserArgs, UserState};

use super::mysql_backup::{Login, client_argv, connect};
use super::{Check, Outcome, StepContext, StepKind};
use crate::aws::{Aws, AwsTarget};
use crate::backup::mysql::Client;

/// The account as the server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// `mysql.user.plugin`.
    pub plugin: String,
    /// `mysql.user.authentication_string`.
    pub auth_string: String,
    /// Its `SHOW GRANTS` lines.
    pub grants: Vec<String>,
}

/// `'name'@'host'`; both parts are checked identifiers (model validation).
fn account(args: &MysqlUserArgs) -> String {
    format!("'{}'@'{}'", args.name, args.user_host)
}

fn identified(args: &MysqlUserArgs) -> String {
    match args.plugin_string() {
        Some(s) => format!("IDENTIFIED WITH {} AS '{s}'", args.plugin),
        None => format!("IDENTIFIED WITH {}", args.plugin),
    }
}

/// object → privileges.
fn by_object(grants: &[Grant]) -> BTreeMap<String, BTreeSet<String>> {
    let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in grants {
        map.entry(g.object.clone())
            .or_default()
            .extend(g.privileges.iter().cloned());
    }
    map.retain(|_, p| !p.is_empty());
    map
}

/// The statements that make the server match `args`, given what it has (`None`: no such
/// account). Empty when nothing is to change.
pub fn plan(args: &MysqlUserArgs, current: Option<&Current>) -> anyhow::Result<Vec<String>> {
    let acct = account(args);
    let Some(current) = current else {
        if args.state == UserState::Absent {
            return Ok(Vec::new());
        }
        let mut s = vec![format!("CREATE USER {acct} {}", identified(args))];
        for (object, privs) in by_object(&wanted(args)?) {
            s.push(grant(&privs, &object, &acct));
        }
        return Ok(s);
    };
    if args.state == UserState::Absent {
        return Ok(vec![format!("DROP USER {acct}")]);
    }
    let mut s = Vec::new();
    let plugin_differs = !current.plugin.eq_ignore_ascii_case(&args.plugin)
        || args
            .plugin_string()
            .is_some_and(|want| want != current.auth_string);
    if plugin_differs {
        s.push(format!("ALTER USER {acct} {}", identified(args)));
    }
    let have = by_object(
        &current
            .grants
            .iter()
            .map(|g| Grant::parse(g).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    let want = by_object(&wanted(args)?);
    let objects: BTreeSet<&String> = have.keys().chain(want.keys()).collect();
    for object in objects {
        let (h, w) = (have.get(object), want.get(object));
        if h == w {
            continue;
        }
        if h.is_some() {
            s.push(format!("REVOKE ALL PRIVILEGES ON {object} FROM {acct}"));
        }
        if let Some(w) = w {
            s.push(grant(w, object, &acct));
        }
    }
    Ok(s)
}

fn wanted(args: &MysqlUserArgs) -> anyhow::Result<Vec<Grant>> {
    args.grants
        .iter()
        .map(|g| Grant::parse(g).map_err(anyhow::Error::msg))
        .collect()
}

fn grant(privileges: &BTreeSet<String>, object: &str, acct: &str) -> String {
    let list: Vec<&str> = privileges.iter().map(String::as_str).collect();
    format!("GRANT {} ON {object} TO {acct}", list.join(", "))
}

async fn client(args: &MysqlUserArgs) -> anyhow::Result<Client> {
    let login = Login {
        host: &args.host,
        port: &args.port,
        user: &args.user,
        password: &args.password,
        auth: args.auth,
        ssl_ca: args.ssl_ca.as_deref(),
        extra_args: &args.extra_args,
    };
    // AWS only when the login needs it: a local server with an `env:` password needs no region.
    let aws = if login.needs_aws() {
        Some(
            Aws::connect(&AwsTarget {
                region: args.region.clone(),
                endpoint_url: args.endpoint_url.clone(),
            })
            .await?,
        )
    } else {
        None
    };
    let conn = connect(&login, aws.as_ref()).await?;
    Ok(Client {
        argv: client_argv(&args.client_command)?,
        conn,
    })
}

async fn current(client: &Client, args: &MysqlUserArgs) -> anyhow::Result<Option<Current>> {
    let rows = client
        .query(
            None,
            &format!(
                "SELECT plugin, authentication_string FROM mysql.user WHERE User = '{}' AND Host = '{}'",
                args.name, args.user_host
            ),
        )
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let grants = client
        .query(None, &format!("SHOW GRANTS FOR {}", account(args)))
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect();
    Ok(Some(Current {
        plugin: row.first().cloned().unwrap_or_default(),
        auth_string: row.get(1).cloned().unwrap_or_default(),
        grants,
    }))
}

impl StepKind for MysqlUserArgs {
    type Change = (Client, Vec<String>);

    async fn check(&self, _ctx: &StepContext<'_>) -> anyhow::Result<Check<Self::Change>> {
        let client = client(self).await?;
        let current = current(&client, self).await?;
        let statements = plan(self, current.as_ref())?;
        if statements.is_empty() {
            return Ok(Check::unchanged(None));
        }
        let message = format!(
            "{} on {}: {}",
            account(self),
            client.conn.endpoint(),
            statements.join("; ")
        );
        Ok(Check::change((client, statements), message))
    }

    async fn apply(
        &self,
        _ctx: &StepContext<'_>,
        (client, statements): Self::Change,
    ) -> anyhow::Result<Outcome> {
        client.query(None, &statements.join("; ")).await?;
        Ok(Outcome {
            changed: true,
            message: Some(format!("{}: {}", account(self), statements.join("; "))),
            ..Outcome::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: serde_json::Value) -> MysqlUserArgs {
        let mut v = serde_json::json!({
            "host": "db", "user": "admin", "password": "env:PW", "name": "bosun_backup",
            "grants": ["SELECT, LOCK TABLES ON *.*"]
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_missing_iam_user_is_created_with_rds_plugin_and_its_grants() {
        let s = plan(&args(serde_json::json!({})), None).unwrap();
        assert_eq!(
            s,
            [
                "CREATE USER 'bosun_backup'@'%' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS'",
                "GRANT LOCK TABLES, SELECT ON *.* TO 'bosun_backup'@'%'",
            ]
        );
    }

    #[test]
    fn an_account_as_wanted_needs_nothing_and_differences_are_corrected() {
        let a = args(serde_json::json!({}));
        let same = Current {
            plugin: "AWSAuthenticationPlugin".into(),
            auth_string: "RDS".into(),
            grants: vec!["GRANT SELECT, LOCK TABLES ON *.* TO `bosun_backup`@`%`".into()],
        };
        assert!(plan(&a, Some(&same)).unwrap().is_empty());
        let other = Current {
            plugin: "mysql_native_password".into(),
            auth_string: "*ABC".into(),
            grants: vec![
                "GRANT SELECT ON *.* TO `bosun_backup`@`%`".into(),
                "GRANT ALL PRIVILEGES ON `shop`.* TO `bosun_backup`@`%`".into(),
            ],
        };
        assert_eq!(
            plan(&a, Some(&other)).unwrap(),
            [
                "ALTER USER 'bosun_backup'@'%' IDENTIFIED WITH AWSAuthenticationPlugin AS 'RDS'",
                "REVOKE ALL PRIVILEGES ON *.* FROM 'bosun_backup'@'%'",
                "GRANT LOCK TABLES, SELECT ON *.* TO 'bosun_backup'@'%'",
                "REVOKE ALL PRIVILEGES ON shop.* FROM 'bosun_backup'@'%'",
            ]
        );
        let gone = args(serde_json::json!({"state": "absent"}));
        assert_eq!(
            plan(&gone, Some(&same)).unwrap(),
            ["DROP USER 'bosun_backup'@'%'"]
        );
        assert!(plan(&gone, None).unwrap().is_empty());
    }
}
