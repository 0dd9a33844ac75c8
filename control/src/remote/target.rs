//! From what the operator wrote (`--host [user@]host[:port]` or an inventory entry) to an
//! [`Endpoint`]: `~/.ssh/config` applied, explicit values winning over it (as on ssh's command
//! line), `-i` keys first, known_hosts files chosen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::inventory::InventoryHost;
use super::ssh::Endpoint;
use super::ssh_config::{self, HostConfig};
use crate::local::{Finished, run_program};

/// `[user@]host[:port]`, with `[v6addr]:port` for IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostArg {
    /// `user@`, if given.
    pub user: Option<String>,
    /// The host name, address or `~/.ssh/config` alias.
    pub host: String,
    /// `:port`, if given.
    pub port: Option<u16>,
}

impl HostArg {
    /// Parses `[user@]host[:port]`.
    pub fn parse(s: &str) -> Result<HostArg> {
        let (user, rest) = match s.rsplit_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
            Some(_) => bail!("{s:?}: empty user before '@' (expected [user@]host[:port])"),
            None => (None, s),
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                bail!("{s:?}: missing ']' after an IPv6 address");
            };
            match after.strip_prefix(':') {
                Some(p) => (h.to_string(), Some(p)),
                None if after.is_empty() => (h.to_string(), None),
                None => bail!("{s:?}: expected :port after ']'"),
            }
        } else if rest.matches(':').count() == 1 {
            let (h, p) = rest.split_once(':').expect("one colon");
            (h.to_string(), Some(p))
        } else {
            (rest.to_string(), None)
        };
        if host.is_empty() {
            bail!("{s:?}: no host (expected [user@]host[:port])");
        }
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .with_context(|| format!("{s:?}: {p:?} is not a TCP port"))
            })
            .transpose()?;
        Ok(HostArg { user, host, port })
    }
}

/// Resolves hosts against the operator's SSH setup. Built once per command.
pub struct Resolver {
    home: PathBuf,
    local_user: String,
    config: Option<String>,
    identities: Vec<PathBuf>,
    connect_timeout: Duration,
}

impl Resolver {
    /// Reads `~/.ssh/config` (if any); `identities` are the `-i` keys.
    pub fn new(identities: Vec<PathBuf>, connect_timeout: Duration) -> Result<Resolver> {
        let home = std::env::home_dir()
            .context("cannot find the home directory (set HOME): ~/.ssh is needed")?;
        let config = std::fs::read_to_string(home.join(".ssh/config")).ok();
        Ok(Resolver {
            local_user: local_user(),
            home,
            config,
            identities,
            connect_timeout,
        })
    }

    fn host_config(&self, alias: &str) -> HostConfig {
        let ctx = ssh_config::Context {
            home: self.home.clone(),
            local_user: self.local_user.clone(),
        };
        match &self.config {
            Some(text) => ssh_config::resolve(text, alias, &ctx, &|p: &Path| {
                std::fs::read_to_string(p).ok()
            }),
            None => HostConfig::default(),
        }
    }

    /// The endpoint for `arg`; explicit user and port win over `~/.ssh/config`.
    pub fn endpoint(&self, arg: &HostArg) -> Result<Endpoint> {
        self.endpoint_at_depth(arg, 0)
    }

    /// The endpoint of an inventory host: its address, user and port over `~/.ssh/config`,
    /// then its jump host (`InventoryHost::jump`) unless `~/.ssh/config` names a ProxyJump for
    /// that address (the operator's own route wins).
    pub fn inventory_endpoint(&self, h: &InventoryHost) -> Result<Endpoint> {
        let mut endpoint = self.endpoint(&HostArg {
            user: h.user.clone(),
            host: h.address.clone(),
            port: h.port,
        })?;
        if let Some(j) = &h.jump
            && endpoint.jumps.is_empty()
        {
            let hop = self.endpoint(&HostArg {
                user: j.user.clone(),
                host: j.address.clone(),
                port: None,
            })?;
            endpoint.jumps.extend(hop.jumps.iter().cloned());
            endpoint.jumps.push(Endpoint {
                jumps: vec![],
                ..hop
            });
        }
        Ok(endpoint)
    }

    fn endpoint_at_depth(&self, arg: &HostArg, depth: usize) -> Result<Endpoint> {
        let c = self.host_config(&arg.host);
        let mut identity_files = self.identities.clone();
        identity_files.extend(c.identity_files.iter().cloned());
        let known_hosts = c.user_known_hosts_files.clone().unwrap_or_else(|| {
            vec![
                self.home.join(".ssh/known_hosts"),
                self.home.join(".ssh/known_hosts2"),
            ]
        });
        let mut known_hosts = known_hosts;
        known_hosts.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
        let mut jumps = Vec::new();
        if let Some(spec) = &c.proxy_jump {
            if depth > 4 {
                bail!(
                    "ProxyJump for {} nests too deeply (a loop in ~/.ssh/config?)",
                    arg.host
                );
            }
            for hop in spec.split(',') {
                let hop = HostArg::parse(hop.trim().trim_start_matches("ssh://"))
                    .with_context(|| format!("ProxyJump of {}", arg.host))?;
                let e = self.endpoint_at_depth(&hop, depth + 1)?;
                jumps.extend(e.jumps.iter().cloned());
                jumps.push(Endpoint { jumps: vec![], ..e });
            }
        }
        Ok(Endpoint {
            host: c.hostname.clone().unwrap_or_else(|| arg.host.clone()),
            port: arg.port.or(c.port).unwrap_or(22),
            user: arg
                .user
                .clone()
                .or(c.user.clone())
                .unwrap_or_else(|| self.local_user.clone()),
            identities_only: c.identities_only.unwrap_or(false),
            identity_files,
            known_hosts,
            jumps,
            connect_timeout: c
                .connect_timeout
                .map(Duration::from_secs)
                .unwrap_or(self.connect_timeout),
        })
    }
}

/// The local user name: `$USER`, `$LOGNAME`, else `id -un`.
fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            run_program("id", &["-un"], b"")
                .and_then(Finished::success)
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .filter(|u| !u.is_empty())
        })
        .unwrap_or_else(|| "root".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_args() {
        let a = HostArg::parse("admin@web-1:2222").unwrap();
        assert_eq!(
            a,
            HostArg {
                user: Some("admin".into()),
                host: "web-1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(HostArg::parse("web").unwrap().port, None);
        let v6 = HostArg::parse("[::1]:22").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(22)));
        assert_eq!(HostArg::parse("::1").unwrap().host, "::1");
        assert!(HostArg::parse("h:0").is_err());
        assert!(HostArg::parse("h:x").is_err());
        assert!(HostArg::parse("@h").is_err());
        assert!(HostArg::parse("u@").is_err());
    }

    #[test]
    fn an_inventory_jump_host_applies_unless_ssh_config_routes_the_address() {
        let r = Resolver {
            home: PathBuf::from("/home/op"),
            local_user: "op".into(),
            config: Some(
                "Host 10.42.0.7\n ProxyJump me@vpn:2022\nHost 203.0.113.5\n Port 2222\n".into(),
            ),
            identities: vec![],
            connect_timeout: Duration::from_secs(3),
        };
        let host = |address: &str| InventoryHost {
            name: "i-1".into(),
            address: address.into(),
            user: Some("admin".into()),
            port: None,
            vars: Default::default(),
            bosund_path: None,
            state_dir: None,
            api_url: None,
            jump: Some(super::super::inventory::Jump {
                user: Some("admin".into()),
                address: "203.0.113.5".into(),
            }),
        };
        let e = r.inventory_endpoint(&host("10.42.0.9")).unwrap();
        assert_eq!(e.display(), "admin@10.42.0.9:22");
        let hops: Vec<String> = e.jumps.iter().map(Endpoint::display).collect();
        assert_eq!(
            hops,
            ["admin@203.0.113.5:2222"],
            "the jump host's ssh config applies"
        );
        let e = r.inventory_endpoint(&host("10.42.0.7")).unwrap();
        let hops: Vec<String> = e.jumps.iter().map(Endpoint::display).collect();
        assert_eq!(hops, ["me@vpn:2022"], "the operator's ProxyJump wins");
        let direct = InventoryHost {
            jump: None,
            ..host("10.42.0.9")
        };
        assert!(r.inventory_endpoint(&direct).unwrap().jumps.is_empty());
    }

    #[test]
    fn explicit_values_win_over_ssh_config() {
        let r = Resolver {
            home: PathBuf::from("/home/op"),
            local_user: "op".into(),
            config: Some(
                "Host app\n HostName 10.1.1.1\n User cfg\n Port 2200\n IdentityFile ~/.ssh/app\n ProxyJump jump@bastion:2022\n"
                    .into(),
            ),
            identities: vec![PathBuf::from("/keys/cli")],
            connect_timeout: Duration::from_secs(3),
        };
        let e = r.endpoint(&HostArg::parse("app").unwrap()).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.user.as_str()),
            ("10.1.1.1", 2200, "cfg")
        );
        assert_eq!(
            e.identity_files,
            vec![
                PathBuf::from("/keys/cli"),
                PathBuf::from("/home/op/.ssh/app")
            ]
        );
        assert_eq!(e.known_hosts[0], PathBuf::from("/home/op/.ssh/known_hosts"));
        assert_eq!(e.jumps.len(), 1);
        assert_eq!(
            (
                e.jumps[0].host.as_str(),
                e.jumps[0].port,
                e.jumps[0].user.as_str()
            ),
            ("bastion", 2022, "jump")
        );
        let e = r.endpoint(&HostArg::parse("root@app:22").unwrap()).unwrap();
        assert_eq!((e.port, e.user.as_str()), (22, "root"));
        let e = r.endpoint(&HostArg::parse("other").unwrap()).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.user.as_str()),
            ("other", 22, "op")
        );
    }
}
