//! The part of `~/.ssh/config` that `bosun run` honours: `HostName`, `User`, `Port`,
//! `IdentityFile`, `IdentitiesOnly`, `ProxyJump`, `UserKnownHostsFile` and `ConnectTimeout`,
//! selected by `Host` patterns, with `Include`. Everything else is ignored.
//!
//! Semantics follow ssh_config(5): keywords are case-insensitive, `keyword value` or
//! `keyword=value`; for each keyword the *first* value obtained wins (so specific `Host` blocks
//! go first and `Host *` last), except `IdentityFile`, whose values accumulate. `Host` patterns
//! use `*` and `?`, `!pattern` negates; they are matched against the name given on the command
//! line (the alias), never against `HostName`. `Match` blocks are not evaluated: they never
//! apply (except `Match all`). No I/O here except reading included files through the caller's
//! closure, so it is tested on strings.

use std::path::{Path, PathBuf};

/// What the config says about one host. `None` and empty mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// `HostName`, with `%h` replaced by the alias.
    pub hostname: Option<String>,
    /// `User`.
    pub user: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `IdentityFile`s in order, `~`, `%d`, `%u`, `%h`, `%r` expanded (`%r` when `User` is set).
    pub identity_files: Vec<PathBuf>,
    /// `IdentitiesOnly`.
    pub identities_only: Option<bool>,
    /// `ProxyJump` (`none` is kept as `None`).
    pub proxy_jump: Option<String>,
    /// `UserKnownHostsFile`s, `~` expanded.
    pub user_known_hosts_files: Option<Vec<PathBuf>>,
    /// `ConnectTimeout`, seconds.
    pub connect_timeout: Option<u64>,
}

/// Where `~` and `%d` point, and the local user for `%u`.
#[derive(Debug, Clone)]
pub struct Context {
    /// The local home directory.
    pub home: PathBuf,
    /// The local user name.
    pub local_user: String,
}

/// Includes deeper than this are ignored (OpenSSH's limit is 16 too): a loop cannot hang us.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Evaluates `text` (the content of `~/.ssh/config`) for `alias`. `read` returns the content
/// of an included file, or `None` when it cannot be read (ignored, as ssh does).
pub fn resolve(
    text: &str,
    alias: &str,
    ctx: &Context,
    read: &dyn Fn(&Path) -> Option<String>,
) -> HostConfig {
    let mut out = HostConfig::default();
    let mut raw_identity = Vec::new();
    eval(text, alias, ctx, read, 0, &mut out, &mut raw_identity);
    // `%r` needs the final user, known only once all lines are read.
    let remote_user = out.user.clone().unwrap_or_else(|| ctx.local_user.clone());
    out.identity_files = raw_identity
        .iter()
        .map(|f: &String| PathBuf::from(expand(f, alias, &remote_user, ctx)))
        .collect();
    if let Some(h) = &out.hostname {
        out.hostname = Some(h.replace("%h", alias));
    }
    out
}

fn eval(
    text: &str,
    alias: &str,
    ctx: &Context,
    read: &dyn Fn(&Path) -> Option<String>,
    depth: usize,
    out: &mut HostConfig,
    identity: &mut Vec<String>,
) {
    // Lines before the first Host/Match apply to every host.
    let mut active = true;
    for line in text.lines() {
        let Some((keyword, args)) = split_line(line) else {
            continue;
        };
        match keyword.as_str() {
            "host" => active = host_matches(&args, alias),
            "match" => active = args.len() == 1 && args[0].eq_ignore_ascii_case("all"),
            _ if !active => {}
            "include" if depth < MAX_INCLUDE_DEPTH => {
                for pattern in &args {
                    for path in include_paths(pattern, ctx) {
                        if let Some(t) = read(&path) {
                            eval(&t, alias, ctx, read, depth + 1, out, identity);
                        }
                    }
                }
            }
            "hostname" => set(&mut out.hostname, args.first().cloned()),
            "user" => set(&mut out.user, args.first().cloned()),
            "port" => set(&mut out.port, args.first().and_then(|p| p.parse().ok())),
            "identityfile" => identity.extend(args.first().cloned()),
            "identitiesonly" => set(&mut out.identities_only, args.first().map(|v| yes(v))),
            "proxyjump" => {
                if out.proxy_jump.is_none()
                    && let Some(v) = args.first()
                {
                    // `none` is a set value: it stops later blocks from setting one.
                    out.proxy_jump = Some(v.clone());
                }
            }
            "userknownhostsfile" => set(
                &mut out.user_known_hosts_files,
                (!args.is_empty()).then(|| {
                    args.iter()
                        .map(|a| PathBuf::from(expand(a, alias, "", ctx)))
                        .collect()
                }),
            ),
            "connecttimeout" => set(
                &mut out.connect_timeout,
                args.first().and_then(|p| p.parse().ok()),
            ),
            _ => {}
        }
    }
    if out.proxy_jump.as_deref().is_some_and(|p| p == "none") && depth == 0 {
        out.proxy_jump = None;
    }
}

/// First value wins.
fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

fn yes(v: &str) -> bool {
    v.eq_ignore_ascii_case("yes") || v.eq_ignore_ascii_case("true")
}

/// `keyword args...` or `keyword=args`, lower-cased keyword; `None` for blanks and comments.
fn split_line(line: &str) -> Option<(String, Vec<String>)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = line[..end].to_ascii_lowercase();
    let mut rest = line[end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    Some((keyword, split_args(rest)))
}

/// Whitespace-separated arguments; double quotes group (and are removed).
fn split_args(s: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has {
                    args.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            c => {
                cur.push(c);
                has = true;
            }
        }
    }
    if has {
        args.push(cur);
    }
    args
}

/// A `Host` line matches when a positive pattern matches and no negated one does.
fn host_matches(patterns: &[String], alias: &str) -> bool {
    let mut matched = false;
    for p in patterns {
        if let Some(neg) = p.strip_prefix('!') {
            if wildcard(&neg.to_ascii_lowercase(), &alias.to_ascii_lowercase()) {
                return false;
            }
        } else if wildcard(&p.to_ascii_lowercase(), &alias.to_ascii_lowercase()) {
            matched = true;
        }
    }
    matched
}

/// `*` (any run) and `?` (one character) glob matching.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// `~`, `%d`, `%u`, `%h`, `%r`, `%%`.
fn expand(s: &str, alias: &str, remote_user: &str, ctx: &Context) -> String {
    let home = ctx.home.display().to_string();
    let s = match s.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => s.to_string(),
    };
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&home),
            Some('u') => out.push_str(&ctx.local_user),
            Some('h') => out.push_str(alias),
            Some('r') => out.push_str(remote_user),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Files an `Include` names: relative paths are under `~/.ssh`; `*` and `?` in the file name
/// are expanded (sorted, as glob(3) does).
fn include_paths(pattern: &str, ctx: &Context) -> Vec<PathBuf> {
    let expanded = expand(pattern, "", "", ctx);
    let path = if Path::new(&expanded).is_absolute() {
        PathBuf::from(expanded)
    } else {
        ctx.home.join(".ssh").join(expanded)
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return vec![path];
    }
    let Some(dir) = path.parent() else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            home: PathBuf::from("/home/op"),
            local_user: "op".into(),
        }
    }

    fn res(text: &str, alias: &str) -> HostConfig {
        resolve(text, alias, &ctx(), &|_| None)
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let text = "\
# comment
Host prod-*  !prod-legacy
  HostName %h.internal.example.com
  User admin
  Port=2222
  IdentityFile ~/.ssh/prod_%r
Host *
  User nobody
  Port 22
  IdentityFile \"%d/.ssh/id ed25519\"
  IdentitiesOnly yes
  ConnectTimeout 7
";
        let c = res(text, "prod-1");
        assert_eq!(c.hostname.as_deref(), Some("prod-1.internal.example.com"));
        assert_eq!(c.user.as_deref(), Some("admin"));
        assert_eq!(c.port, Some(2222));
        assert_eq!(
            c.identity_files,
            vec![
                PathBuf::from("/home/op/.ssh/prod_admin"),
                PathBuf::from("/home/op/.ssh/id ed25519")
            ]
        );
        assert_eq!(c.identities_only, Some(true));
        assert_eq!(c.connect_timeout, Some(7));

        // Negated: only the `Host *` block applies.
        let c = res(text, "prod-legacy");
        assert_eq!(c.hostname, None);
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.port, Some(22));
    }

    #[test]
    fn keywords_are_case_insensitive_and_match_blocks_do_not_apply() {
        let text = "HOSTNAME global.example\nMatch host x\n  User matched\nhost a\n  user A\n";
        let c = res(text, "a");
        assert_eq!(c.hostname.as_deref(), Some("global.example"));
        assert_eq!(c.user.as_deref(), Some("A"));
        assert_eq!(
            res("Match all\n User everyone\n", "z").user.as_deref(),
            Some("everyone")
        );
    }

    #[test]
    fn proxy_jump_none_stops_later_blocks() {
        let text = "Host bastion\n ProxyJump none\nHost *\n ProxyJump bastion\n";
        assert_eq!(res(text, "bastion").proxy_jump, None);
        assert_eq!(res(text, "app").proxy_jump.as_deref(), Some("bastion"));
    }

    #[test]
    fn include_reads_files_relative_to_dot_ssh() {
        let text = "Include conf.d/extra\nHost *\n User late\n";
        let c = resolve(text, "db", &ctx(), &|p| {
            (p == Path::new("/home/op/.ssh/conf.d/extra"))
                .then(|| "Host db\n HostName 10.0.0.9\n User early\n".to_string())
        });
        assert_eq!(c.hostname.as_deref(), Some("10.0.0.9"));
        assert_eq!(c.user.as_deref(), Some("early"));
    }

    #[test]
    fn known_hosts_files_are_expanded() {
        let c = res("Host x\n UserKnownHostsFile ~/kh /etc/kh2\n", "x");
        assert_eq!(
            c.user_known_hosts_files,
            Some(vec![
                PathBuf::from("/home/op/kh"),
                PathBuf::from("/etc/kh2")
            ])
        );
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*", ""));
        assert!(wildcard("web-?", "web-1"));
        assert!(!wildcard("web-?", "web-10"));
        assert!(wildcard("*.example.com", "a.b.example.com"));
        assert!(!wildcard("*.example.com", "example.com"));
    }
}
