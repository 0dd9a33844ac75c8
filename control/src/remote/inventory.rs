//! The inventory file (TOML): hosts with their address and variables, groups of hosts with
//! theirs.
//!
//! ```toml
//! [hosts.web-1]
//! address = "10.0.1.5"      # default: the name (which may be a ~/.ssh/config alias)
//! user = "admin"            # default: ~/.ssh/config, then the local user
//! port = 22                 # default: ~/.ssh/config, then 22
//! vars = { role = "web" }
//! bosund_path = "/opt/bosun/bosund"   # optional; default /usr/local/bin (root) or ~/.local/bin
//! state_dir = "/var/lib/bosun"        # optional; bosund's journal on that host
//! api_url = "https://10.0.1.5:8443"   # optional; with --via api, its TLS listener, not SSH
//!
//! [groups.web]
//! hosts = ["web-1", "web-2"]
//! vars = { port = 8080 }
//! ```
//!
//! Variable precedence, lowest first: the playbook's `[vars]`, group vars (groups in file
//! order, a later group winning), host vars, then `--var` on the command line. Like Ansible,
//! `--var` wins over everything and host beats group; unlike Ansible, inventory vars beat
//! the playbook's own `[vars]`, which act as defaults.

use serde::Deserialize;
use serde_json::{Map, Value};

use anyhow::{Result, bail};

/// One host of the inventory, with its merged variables.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryHost {
    /// Its name in the inventory (shown in output).
    pub name: String,
    /// Address to connect to (the name when unset).
    pub address: String,
    /// Remote user.
    pub user: Option<String>,
    /// SSH port.
    pub port: Option<u16>,
    /// Group vars then host vars, merged.
    pub vars: Map<String, Value>,
    /// Where bosund lives on it.
    pub bosund_path: Option<String>,
    /// bosund's state dir on it.
    pub state_dir: Option<String>,
    /// Its agent's TLS listener (`https://host:port`), used by `run --via api` instead of the
    /// API socket through SSH.
    pub api_url: Option<String>,
    /// A host to go through first (ProxyJump), unless `~/.ssh/config` names one for `address`.
    pub jump: Option<Jump>,
}

/// A jump host: `[user@]address`, port 22 unless `~/.ssh/config` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    /// Remote user on the jump host.
    pub user: Option<String>,
    /// Its address.
    pub address: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    hosts: toml::Table,
    #[serde(default)]
    groups: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostModel {
    address: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    #[serde(default)]
    vars: toml::Table,
    bosund_path: Option<String>,
    state_dir: Option<String>,
    api_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupModel {
    hosts: Vec<String>,
    #[serde(default)]
    vars: toml::Table,
}

/// A parsed inventory: hosts and groups in file order.
#[derive(Debug)]
pub struct Inventory {
    hosts: Vec<InventoryHost>,
    groups: Vec<(String, Vec<String>)>,
}

fn to_json(t: toml::Table) -> Map<String, Value> {
    match serde_json::to_value(t) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Inventory {
    /// Parses `text` (`file` names it in errors). Every host a group lists must exist.
    pub fn parse(text: &str, file: &str) -> Result<Inventory> {
        let model: FileModel = toml::from_str(text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let mut groups = Vec::new();
        let mut group_vars: Vec<(Vec<String>, Map<String, Value>)> = Vec::new();
        for (name, value) in model.groups {
            let g = GroupModel::deserialize(value)
                .map_err(|e| anyhow::anyhow!("{file}: [groups.{name}]: {e}"))?;
            groups.push((name, g.hosts.clone()));
            group_vars.push((g.hosts, to_json(g.vars)));
        }
        let mut hosts = Vec::new();
        for (name, value) in model.hosts {
            let h = HostModel::deserialize(value)
                .map_err(|e| anyhow::anyhow!("{file}: [hosts.{name}]: {e}"))?;
            let mut vars = Map::new();
            for (members, gv) in &group_vars {
                if members.contains(&name) {
                    vars.extend(gv.clone());
                }
            }
            vars.extend(to_json(h.vars));
            if let Some(url) = &h.api_url {
                super::api::parse_url(url)
                    .map_err(|e| anyhow::anyhow!("{file}: [hosts.{name}]: api_url: {e:#}"))?;
            }
            hosts.push(InventoryHost {
                address: h.address.unwrap_or_else(|| name.clone()),
                name,
                user: h.user,
                port: h.port,
                vars,
                bosund_path: h.bosund_path,
                state_dir: h.state_dir,
                api_url: h.api_url,
                jump: None,
            });
        }
        for (g, members) in &groups {
            for m in members {
                if !hosts.iter().any(|h| &h.name == m) {
                    bail!("{file}: group {g:?} lists host {m:?}, which has no [hosts.{m}] table");
                }
            }
        }
        Ok(Inventory { hosts, groups })
    }

    /// An inventory made elsewhere (EC2's, see `super::aws_inventory`): every host a group
    /// lists is one of `hosts`.
    pub fn from_parts(hosts: Vec<InventoryHost>, groups: Vec<(String, Vec<String>)>) -> Inventory {
        debug_assert!(
            groups
                .iter()
                .all(|(_, m)| m.iter().all(|n| hosts.iter().any(|h| &h.name == n)))
        );
        Inventory { hosts, groups }
    }

    /// The groups `host` is in, in file order.
    pub fn groups_of(&self, host: &str) -> Vec<String> {
        self.groups
            .iter()
            .filter(|(_, members)| members.iter().any(|m| m == host))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// The hosts to run on: all (file order) without a limit; else the comma-separated group
    /// and host names of `limit`, in that order, each host once.
    pub fn select(&self, limit: Option<&str>) -> Result<Vec<InventoryHost>> {
        let Some(limit) = limit else {
            return Ok(self.hosts.clone());
        };
        let mut out: Vec<InventoryHost> = Vec::new();
        for part in limit.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let names: Vec<String> = if part == "all" {
                self.hosts.iter().map(|h| h.name.clone()).collect()
            } else if let Some((_, members)) = self.groups.iter().find(|(g, _)| g == part) {
                members.clone()
            } else if self.hosts.iter().any(|h| h.name == part) {
                vec![part.to_string()]
            } else {
                bail!(
                    "--limit {part:?}: no such group or host in the inventory (groups: {})",
                    self.groups
                        .iter()
                        .map(|(g, _)| g.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            for n in names {
                if !out.iter().any(|h| h.name == n) {
                    let h = self.hosts.iter().find(|h| h.name == n).expect("checked");
                    out.push(h.clone());
                }
            }
        }
        if out.is_empty() {
            bail!("--limit {limit:?} selects no host");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = r#"
[hosts.web-2]
address = "10.0.0.2"
vars = { role = "web", tier = "host" }

[hosts.web-1]
address = "10.0.0.1"
user = "admin"
port = 2222

[hosts.db-1]

[groups.web]
hosts = ["web-1", "web-2"]
vars = { tier = "group", port = 8080 }

[groups.canary]
hosts = ["web-2"]
vars = { port = 9090 }
"#;

    #[test]
    fn hosts_keep_file_order_and_vars_merge_host_over_groups() {
        let inv = Inventory::parse(INV, "inv.toml").unwrap();
        let all = inv.select(None).unwrap();
        let names: Vec<_> = all.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["web-2", "web-1", "db-1"]);
        let w2 = &all[0];
        assert_eq!(w2.vars["tier"], "host");
        assert_eq!(
            w2.vars["port"], 9090,
            "a later group wins over an earlier one"
        );
        assert_eq!(w2.vars["role"], "web");
        assert_eq!(all[1].vars["port"], 8080);
        assert_eq!(all[1].user.as_deref(), Some("admin"));
        assert_eq!(all[2].address, "db-1", "the name is the default address");
    }

    #[test]
    fn limit_selects_groups_and_hosts_in_order() {
        let inv = Inventory::parse(INV, "inv.toml").unwrap();
        let names = |l| {
            inv.select(Some(l))
                .unwrap()
                .into_iter()
                .map(|h| h.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("web"), ["web-1", "web-2"]);
        assert_eq!(names("db-1,canary,web"), ["db-1", "web-2", "web-1"]);
        let err = inv.select(Some("nope")).unwrap_err().to_string();
        assert!(
            err.contains("no such group or host") && err.contains("web, canary"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let err = Inventory::parse("[hosts.a]\nadress = \"x\"\n", "inv.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("inv.toml") && err.contains("adress"), "{err}");
        let err = Inventory::parse("[groups.g]\nhosts = [\"ghost\"]\n", "inv.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ghost"), "{err}");
        let err = Inventory::parse("[hosts.a]\napi_url = \"http://a:8443\"\n", "inv.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("inv.toml: [hosts.a]: api_url") && err.contains("only https://"),
            "{err}"
        );
        let ok = Inventory::parse("[hosts.a]\napi_url = \"https://a:8443\"\n", "inv.toml")
            .unwrap()
            .select(None)
            .unwrap();
        assert_eq!(ok[0].api_url.as_deref(), Some("https://a:8443"));
        let err = Inventory::parse("[hosts\n", "inv.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
