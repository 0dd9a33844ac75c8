//! The agent's configuration file (`/etc/bosun/agent.toml`): what `bosund run` serves and
//! where it keeps its state. No I/O beyond reading the file; nothing is started here.
//!
//! ```toml
//! playbooks_dir = "/etc/bosun/playbooks"   # POST /v1/runs {"playbook": "site"} reads site.toml here
//! state_dir = "/var/lib/bosun"             # the journal; --state-dir / BOSUN_STATE_DIR win
//! queue_limit = 4                          # runs waiting behind the running one; more get 429
//! shutdown_timeout = "30s"                 # on SIGTERM, how long the current run may go on
//!
//! [api]
//! socket = "/run/bosun/api.sock"           # mode 0600 in a 0700 directory: root only
//!
//! [api.tcp]                                # optional
//! listen = "0.0.0.0:8443"
//! tls_cert = "/etc/bosun/tls/cert.pem"     # PEM chain
//! tls_key = "/etc/bosun/tls/key.pem"       # PEM private key
//! tokens = ["<sha256 hex of a bearer token>"]  # printf %s "$TOKEN" | sha256sum
//!
//! [[api.tcp.scoped_token]]                 # optional, any number: a token for a CI job
//! sha256 = "<sha256 hex of the token>"
//! playbooks = ["helm-release"]             # the only playbooks it may run (by name)
//! vars = ["name", "version"]               # the only variables it may set
//! ```
//!
//! A scoped token may submit runs of its playbooks with its variables and read runs (GET);
//! anything else is 403 (see [`crate::api::scope`] for what else a scoped run must satisfy).
//!
//! The file is read as plain serde structs with `deny_unknown_fields`, through toml's spanned
//! tree, so every error points at file:line:column like a playbook's. [`load`] then checks what
//! serde cannot (addresses, durations, token hashes, the TLS rule) and reports every problem
//! found, not only the first.
//!
//! `[metrics]` and `[[logs]]` (telemetry) are described and validated in
//! [`crate::telemetry::config`], as is the top-level `region` (the AWS region telemetry ships
//! to; default: AWS_REGION, the profile, or IMDS on EC2); `[[schedule]]` in [`schedule`] (which
//! reads the playbooks the schedules name: the one I/O here besides the file itself). Unknown
//! sections are rejected, so a config written for a newer bosund fails loudly on an older one
//! instead of being half ignored.
//!
//! Security rule: any TCP listener needs at least one token (loopback TCP is reachable by every
//! local user, unlike the root-only socket), and a listener on a non-loopback address also needs
//! TLS. Tokens are stored as SHA-256 hashes, so the file holds no secret.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use bosun_model::playbook::{Diagnostic, Diagnostics, Source};

pub mod schedule;

/// Where `bosund run` looks for its configuration unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bosun/agent.toml";
/// The API's Unix socket unless `[api] socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/bosun/api.sock";
/// Installed playbooks unless `playbooks_dir` says otherwise.
pub const DEFAULT_PLAYBOOKS_DIR: &str = "/etc/bosun/playbooks";
/// Runs that may wait behind the running one unless `queue_limit` says otherwise.
pub const DEFAULT_QUEUE_LIMIT: usize = 4;
/// How long a run may go on after SIGTERM unless `shutdown_timeout` says otherwise. Below
/// systemd's default `TimeoutStopSec` (90 s), so bosund ends the run itself and journals it.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest `queue_limit` accepted: each queued run holds its playbook in memory.
const MAX_QUEUE_LIMIT: usize = 64;

/// The file as written: serde's view, spans kept where validation needs them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[api]`.
    #[serde(default)]
    pub api: ApiSection,
    /// Where named playbooks are read from.
    pub playbooks_dir: Option<PathBuf>,
    /// Where the journal lives.
    pub state_dir: Option<PathBuf>,
    /// Runs that may wait behind the running one.
    pub queue_limit: Option<Spanned<i64>>,
    /// How long a run may go on after SIGTERM, e.g. `"30s"`.
    pub shutdown_timeout: Option<Spanned<String>>,
    /// The AWS region telemetry ships to (see [`crate::telemetry::config`]).
    pub region: Option<Spanned<String>>,
    /// `[metrics]`: host metrics to CloudWatch (see [`crate::telemetry::config`]).
    pub metrics: Option<Spanned<crate::telemetry::config::MetricsSection>>,
    /// `[[logs]]`: log sources to CloudWatch Logs (see [`crate::telemetry::config`]).
    #[serde(default)]
    pub logs: Vec<Spanned<crate::telemetry::config::LogSection>>,
    /// `[[schedule]]`: playbooks run by cron (see [`schedule`]).
    #[serde(default)]
    pub schedule: Vec<Spanned<schedule::ScheduleSection>>,
}

/// `[api]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The Unix socket's path.
    pub socket: Option<PathBuf>,
    /// `[api.tcp]`.
    pub tcp: Option<Spanned<TcpSection>>,
}

/// `[api.tcp]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSection {
    /// `host:port` to listen on.
    pub listen: Spanned<String>,
    /// PEM certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// SHA-256 hex hashes of the accepted bearer tokens.
    #[serde(default)]
    pub tokens: Vec<Spanned<String>>,
    /// `[[api.tcp.scoped_token]]`: tokens limited to some playbooks and variables.
    #[serde(default)]
    pub scoped_token: Vec<Spanned<ScopedTokenSection>>,
}

/// `[[api.tcp.scoped_token]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedTokenSection {
    /// SHA-256 hex hash of the token.
    pub sha256: Spanned<String>,
    /// Names of the playbooks (in `playbooks_dir`) it may run.
    pub playbooks: Vec<Spanned<String>>,
    /// Names of the variables it may set.
    #[serde(default)]
    pub vars: Vec<Spanned<String>>,
}

/// The validated configuration, defaults filled in: what the daemon is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The HTTP API's listeners.
    pub api: ApiConfig,
    /// Where `POST /v1/runs {"playbook": NAME}` reads `NAME.toml`.
    pub playbooks_dir: PathBuf,
    /// Where the journal lives; `None` means the command line's or the built-in default.
    pub state_dir: Option<PathBuf>,
    /// Runs that may wait behind the running one; past it submissions get 429.
    pub queue_limit: usize,
    /// How long the current run may go on after SIGTERM before it is cancelled.
    pub shutdown_timeout: Duration,
    /// `[metrics]` and `[[logs]]`: what the telemetry thread ships.
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// `[[schedule]]`: playbooks the daemon starts by itself.
    pub schedules: Vec<schedule::ScheduleConfig>,
}

/// The API's listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// The Unix socket (always on).
    pub socket: PathBuf,
    /// The optional TCP listener.
    pub tcp: Option<TcpConfig>,
}

/// A TCP listener: bearer tokens always, TLS unless on loopback.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Certificate and key files; `None` only on a loopback address.
    pub tls: Option<TlsFiles>,
    /// SHA-256 of each accepted token (never the tokens themselves).
    pub token_hashes: Vec<[u8; 32]>,
    /// Tokens limited to some playbooks and variables.
    pub scoped_tokens: Vec<ScopedToken>,
}

/// A bearer token that may only run some playbooks with some variables.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopedToken {
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// What it may do.
    pub scope: std::sync::Arc<TokenScope>,
}

/// What a scoped token may do: run these playbooks, setting only these variables.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenScope {
    /// Playbook names without `.toml`.
    pub playbooks: std::collections::BTreeSet<String>,
    /// Variable names.
    pub vars: std::collections::BTreeSet<String>,
}

impl TokenScope {
    /// Whether the playbook `name` (`site` or `site.toml`) is in scope.
    pub fn allows_playbook(&self, name: &str) -> bool {
        self.playbooks
            .contains(name.strip_suffix(".toml").unwrap_or(name))
    }
}

/// PEM files for the TLS listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            api: ApiConfig {
                socket: DEFAULT_SOCKET.into(),
                tcp: None,
            },
            playbooks_dir: DEFAULT_PLAYBOOKS_DIR.into(),
            state_dir: None,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            telemetry: crate::telemetry::TelemetryConfig::default(),
            schedules: Vec::new(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading the agent config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a valid configuration; every problem, located.
    #[error("the agent config {} is invalid ({} problems)", .0.source.name, .0.items.len())]
    Invalid(Diagnostics),
}

/// Reads and validates the configuration at `path`. Relative paths in it are kept as written
/// (systemd starts bosund in `/`).
pub fn read(path: &Path) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(Source::new(path.display().to_string(), text)).map_err(ConfigError::Invalid)
}

/// Parses and validates a configuration text; every problem found on failure.
pub fn parse(source: Source) -> Result<AgentConfig, Diagnostics> {
    let text = source.text.clone();
    let (root, errors) = DeTable::parse_recoverable(&text);
    if !errors.is_empty() {
        let items = errors
            .iter()
            .map(|e| {
                Diagnostic::new(
                    e.span().unwrap_or(0..0),
                    format!("invalid TOML: {}", e.message().trim_end()),
                )
            })
            .collect();
        return Err(Diagnostics::new(source, items));
    }
    let whole = 0..text.len();
    let value = Spanned::new(whole.clone(), DeValue::Table(root.into_inner()));
    let file = match ConfigFile::deserialize(ValueDeserializer::from(value)) {
        Ok(f) => f,
        Err(e) => {
            let d = Diagnostic::new(e.span().unwrap_or(whole), e.message().trim_end());
            let d = if e.message().contains("unknown field") {
                d.with_help("remove or rename the key")
            } else if e.message().contains("expected a sequence") {
                d.with_help("a list of sections takes double brackets: [[schedule]], [[logs]], one per entry")
            } else {
                d
            };
            return Err(Diagnostics::new(source, vec![d]));
        }
    };
    let mut diags = Vec::new();
    let config = validate(file, &source, &mut diags);
    if diags.is_empty() {
        Ok(config)
    } else {
        Err(Diagnostics::new(source, diags))
    }
}

fn validate(file: ConfigFile, source: &Source, diags: &mut Vec<Diagnostic>) -> AgentConfig {
    let defaults = AgentConfig::default();
    let queue_limit = match file.queue_limit {
        None => defaults.queue_limit,
        Some(v) => match usize::try_from(*v.get_ref()) {
            Ok(n) if n <= MAX_QUEUE_LIMIT => n,
            _ => {
                diags.push(
                    Diagnostic::new(v.span(), "`queue_limit` is out of range")
                        .with_help(format!("use 0 (no queue) to {MAX_QUEUE_LIMIT}")),
                );
                defaults.queue_limit
            }
        },
    };
    let shutdown_timeout = match file.shutdown_timeout {
        None => defaults.shutdown_timeout,
        Some(s) => match humantime::parse_duration(s.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                diags.push(
                    Diagnostic::new(s.span(), format!("`shutdown_timeout`: {e}"))
                        .with_help("write a duration such as \"30s\" or \"2m\""),
                );
                defaults.shutdown_timeout
            }
        },
    };
    let tcp = file
        .api
        .tcp
        .and_then(|t| validate_tcp(t.span(), t.into_inner(), diags));
    let telemetry = {
        use crate::telemetry::config as tc;
        // Where the first section that needs AWS was written, for errors found at start-up.
        let origin = file
            .metrics
            .as_ref()
            .map(|m| m.span())
            .or_else(|| file.logs.first().map(|l| l.span()))
            .map(|span| tc::Origin::new(source.clone(), span));
        let region = file.region.and_then(|r| tc::validate_region(r, diags));
        let metrics = file
            .metrics
            .map(|m| tc::validate_metrics(m.into_inner(), diags));
        let logs: Vec<_> = file
            .logs
            .into_iter()
            .filter_map(|l| {
                let span = l.span();
                tc::validate_log(span.clone(), l.into_inner(), diags).map(|c| (span, c))
            })
            .collect();
        tc::validate_logs_together(&logs, diags);
        crate::telemetry::TelemetryConfig {
            region,
            metrics,
            logs: logs.into_iter().map(|(_, c)| c).collect(),
            origin,
        }
    };
    let playbooks_dir = file.playbooks_dir.unwrap_or(defaults.playbooks_dir);
    let schedules = schedule::validate_schedules(file.schedule, &playbooks_dir, diags);
    AgentConfig {
        api: ApiConfig {
            socket: file.api.socket.unwrap_or(defaults.api.socket),
            tcp,
        },
        playbooks_dir,
        state_dir: file.state_dir,
        queue_limit,
        shutdown_timeout,
        telemetry,
        schedules,
    }
}

/// `playbooks_dir/NAME[.toml]` for a playbook named in a request or a `[[schedule]]`, refusing
/// anything but a plain file name (nothing outside the directory can be named).
pub fn playbook_path(dir: &Path, name: &str) -> Result<PathBuf, String> {
    use std::path::Component;
    let mut parts = Path::new(name).components();
    let plain = matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    );
    if !plain || name.starts_with('.') || name.contains('\\') || name.contains('\0') {
        return Err(format!("`{name}` is not a playbook name"));
    }
    let file = if name.ends_with(".toml") {
        name.to_string()
    } else {
        format!("{name}.toml")
    };
    Ok(dir.join(file))
}

/// Loads a playbook as bosund runs it: parsed, validated, its includes read (relative to the
/// including file), and every local file it reads (template and copy sources, values files)
/// found on this host under `base`.
pub fn load_playbook(
    source: Source,
    outside_vars: &[String],
    base: &bosun_model::playbook::BaseDir,
) -> Result<bosun_model::playbook::Playbook, Diagnostics> {
    load_playbook_within(source, outside_vars, base, None)
}

/// [`load_playbook`]; with `root`, an included playbook outside that directory is refused
/// (the API: a submitted text includes only what the playbooks directory holds).
pub fn load_playbook_within(
    source: Source,
    outside_vars: &[String],
    base: &bosun_model::playbook::BaseDir,
    root: Option<&Path>,
) -> Result<bosun_model::playbook::Playbook, Diagnostics> {
    use bosun_model::playbook::{Scope, load_with_files};
    let root = root.map(|r| std::path::absolute(r).unwrap_or_else(|_| r.to_path_buf()));
    let mut read = |path: &Path| {
        let path = std::path::absolute(path).map_err(|e| e.to_string())?;
        if let Some(root) = &root
            && !path.starts_with(root)
        {
            return Err(format!(
                "it is outside {}, the only directory included playbooks are read from here",
                root.display()
            ));
        }
        std::fs::read_to_string(&path).map_err(|e| e.to_string())
    };
    load_with_files(
        source,
        outside_vars,
        base,
        Scope::All,
        |p| std::fs::metadata(p).map(|m| m.is_dir()),
        &mut read,
    )
}

fn validate_tcp(
    section: Range<usize>,
    tcp: TcpSection,
    diags: &mut Vec<Diagnostic>,
) -> Option<TcpConfig> {
    let before = diags.len();
    let listen = match tcp.listen.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            diags.push(
                Diagnostic::new(
                    tcp.listen.span(),
                    format!("`{}` is not an address and port", tcp.listen.get_ref()),
                )
                .with_help("write IP:PORT, e.g. \"127.0.0.1:8443\" or \"[::1]:8443\""),
            );
            None
        }
    };
    let mut token_hashes = Vec::new();
    for t in &tcp.tokens {
        if let Some(h) = token_hash(t, diags) {
            token_hashes.push(h);
        }
    }
    let mut scoped_tokens = Vec::new();
    for section in &tcp.scoped_token {
        let t = section.get_ref();
        let hash = token_hash(&t.sha256, diags);
        if t.playbooks.is_empty() {
            diags.push(
                Diagnostic::new(section.span(), "a scoped token needs at least one playbook")
                    .with_help("playbooks = [\"helm-release\"]: the names it may run; use `tokens` for a token that may do anything"),
            );
        }
        let mut playbooks = std::collections::BTreeSet::new();
        for p in &t.playbooks {
            match playbook_path(Path::new(""), p.get_ref()) {
                Ok(_) => {
                    let name = p.get_ref();
                    playbooks.insert(name.strip_suffix(".toml").unwrap_or(name).to_string());
                }
                Err(msg) => {
                    diags.push(Diagnostic::new(p.span(), msg).with_help(
                        "name a playbook directly in playbooks_dir, e.g. \"helm-release\"",
                    ))
                }
            }
        }
        let mut vars = std::collections::BTreeSet::new();
        for v in &t.vars {
            let name = v.get_ref();
            let identifier = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !identifier || name == "facts" {
                diags.push(
                    Diagnostic::new(v.span(), format!("`{name}` cannot be a scoped variable"))
                        .with_help("name a playbook variable (letters, digits, _); `facts` is bosund's own"),
                );
            } else {
                vars.insert(name.clone());
            }
        }
        if let Some(hash) = hash {
            if token_hashes.contains(&hash)
                || scoped_tokens.iter().any(|s: &ScopedToken| s.hash == hash)
            {
                diags.push(
                    Diagnostic::new(t.sha256.span(), "this token is listed twice")
                        .with_help("a token has one scope: remove it from `tokens` or from the other [[api.tcp.scoped_token]]"),
                );
            }
            scoped_tokens.push(ScopedToken {
                hash,
                scope: std::sync::Arc::new(TokenScope { playbooks, vars }),
            });
        }
    }
    let tls = match (tcp.tls_cert, tcp.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        _ => {
            diags.push(
                Diagnostic::new(section.clone(), "`tls_cert` and `tls_key` go together")
                    .with_help("set both (PEM files) or neither"),
            );
            None
        }
    };
    if tcp.tokens.is_empty() && tcp.scoped_token.is_empty() {
        diags.push(
            Diagnostic::new(tcp.listen.span(), "a TCP listener needs at least one token")
                .with_help("add tokens = [\"<sha256 hex>\"] to [api.tcp]: without one, anyone who reaches the port can run playbooks as root"),
        );
    }
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && tls.is_none()
        && diags.len() == before
    {
        diags.push(
            Diagnostic::new(
                tcp.listen.span(),
                format!("refusing to listen on non-loopback address {addr} without TLS"),
            )
            .with_help("set tls_cert and tls_key in [api.tcp], or listen on 127.0.0.1 and tunnel"),
        );
    }
    if diags.len() > before {
        return None;
    }
    Some(TcpConfig {
        listen: listen?,
        tls,
        token_hashes,
        scoped_tokens,
    })
}

/// The 32 bytes of a token hash written in hex; a diagnostic (without the value: someone may
/// have pasted the token itself) otherwise.
fn token_hash(t: &Spanned<String>, diags: &mut Vec<Diagnostic>) -> Option<[u8; 32]> {
    match hex::decode(t.get_ref()) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut h = [0u8; 32];
            h.copy_from_slice(&bytes);
            Some(h)
        }
        _ => {
            diags.push(
                Diagnostic::new(
                    t.span(),
                    "a token must be the SHA-256 hash of the token, in hex (64 characters)",
                )
                .with_help("store the hash, not the token: printf %s \"$TOKEN\" | sha256sum"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn parse_str(text: &str) -> Result<AgentConfig, Vec<(usize, usize, String)>> {
        parse(Source::new("agent.toml", text)).map_err(|d| {
            d.located()
                .into_iter()
                .map(|l| (l.line, l.column, l.message))
                .collect()
        })
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(parse_str("").unwrap(), AgentConfig::default());
    }

    #[test]
    fn reads_every_key() {
        let c = parse_str(&format!(
            "playbooks_dir = \"/p\"\nstate_dir = \"/s\"\nqueue_limit = 0\nshutdown_timeout = \"5s\"\n\
             [api]\nsocket = \"/tmp/x.sock\"\n[api.tcp]\nlisten = \"0.0.0.0:8443\"\n\
             tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\ntokens = [\"{HASH}\"]\n"
        ))
        .unwrap();
        assert_eq!(c.queue_limit, 0);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.state_dir.as_deref(), Some(Path::new("/s")));
        let tcp = c.api.tcp.unwrap();
        assert_eq!(tcp.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(hex::encode(tcp.token_hashes[0]), HASH);
        assert!(tcp.tls.is_some());
    }

    #[test]
    fn unknown_keys_are_located() {
        let errs = parse_str("queue_limit = 2\n[bogus]\nport = 1\n").unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, 2, "{errs:?}");
        assert!(errs[0].2.contains("bogus"), "{errs:?}");
    }

    #[test]
    fn public_listener_without_tls_is_refused_at_its_line() {
        let errs = parse_str(&format!(
            "[api.tcp]\nlisten = \"0.0.0.0:8443\"\ntokens = [\"{HASH}\"]\n"
        ))
        .unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].0, errs[0].1), (2, 10), "{errs:?}");
        assert!(errs[0].2.contains("without TLS"), "{errs:?}");
    }

    #[test]
    fn loopback_without_tls_is_allowed_but_not_without_a_token() {
        let ok = parse_str(&format!(
            "[api.tcp]\nlisten = \"127.0.0.1:8443\"\ntokens = [\"{HASH}\"]\n"
        ))
        .unwrap();
        assert!(ok.api.tcp.unwrap().tls.is_none());
        let errs = parse_str("[api.tcp]\nlisten = \"127.0.0.1:8443\"\n").unwrap_err();
        assert!(errs[0].2.contains("token"), "{errs:?}");
    }

    #[test]
    fn scoped_tokens_are_read_and_their_mistakes_located() {
        let cfg = parse_str(&format!(
            "[api.tcp]\nlisten = \"127.0.0.1:8443\"\n[[api.tcp.scoped_token]]\nsha256 = \"{HASH}\"\nplaybooks = [\"helm-release.toml\"]\nvars = [\"name\"]\n"
        ))
        .unwrap();
        let tcp = cfg.api.tcp.unwrap();
        assert!(tcp.token_hashes.is_empty());
        let scope = &tcp.scoped_tokens[0].scope;
        assert!(scope.allows_playbook("helm-release") && !scope.allows_playbook("backup-rds"));
        assert_eq!(scope.vars.iter().collect::<Vec<_>>(), ["name"]);

        let errs = parse_str(&format!(
            "[api.tcp]\nlisten = \"127.0.0.1:8443\"\ntokens = [\"{HASH}\"]\n[[api.tcp.scoped_token]]\nsha256 = \"{HASH}\"\nplaybooks = [\"../etc/x\"]\nvars = [\"facts\", \"a b\"]\n[[api.tcp.scoped_token]]\nsha256 = \"the-token-itself\"\nplaybooks = []\n"
        ))
        .unwrap_err();
        let found: Vec<(usize, &str)> = errs.iter().map(|e| (e.0, e.2.as_str())).collect();
        for (line, want) in [
            (6, "not a playbook name"),
            (7, "`facts` cannot be a scoped variable"),
            (7, "`a b` cannot be a scoped variable"),
            (5, "listed twice"),
            (9, "SHA-256 hash"),
            (8, "at least one playbook"),
        ] {
            assert!(
                found.iter().any(|(l, m)| *l == line && m.contains(want)),
                "{want} at line {line}: {found:?}"
            );
        }
        assert!(
            errs.iter().all(|e| !e.2.contains("the-token-itself")),
            "{errs:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_and_tokens_are_not_echoed() {
        let errs = parse_str(
            "queue_limit = -1\nshutdown_timeout = \"soon\"\n[api.tcp]\nlisten = \"nowhere\"\ntokens = [\"s3cret-token\"]\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.0).collect();
        assert_eq!(lines, vec![1, 2, 4, 5], "{errs:?}");
        assert!(errs.iter().all(|e| !e.2.contains("s3cret")), "{errs:?}");
    }
}
