//! One SSH connection to one host (russh): host key checked against known_hosts, public-key
//! authentication with key files and ssh-agent, optional `ProxyJump` (one hop, or a chain),
//! and commands run on exec channels with their output streamed back.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use russh::client::{self, Handle};
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, Disconnect, Sig};
use tokio::io::AsyncRead;
use tokio::sync::watch;

use super::known_hosts::{self, Verdict};

/// How long a cancelled command gets to stop and report (bosund ends its step, kills the
/// step's processes and writes its summary) before its channel is closed.
pub const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// Where and how to connect: a host after `~/.ssh/config` and the inventory were applied.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The host name or address to connect to (and to look up in known_hosts).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The remote user.
    pub user: String,
    /// Key files to try first, in order (`-i`, then `IdentityFile`).
    pub identity_files: Vec<PathBuf>,
    /// Only the key files: no agent keys, no default keys (`IdentitiesOnly`).
    pub identities_only: bool,
    /// known_hosts files to check; new keys are appended to the first.
    pub known_hosts: Vec<PathBuf>,
    /// Hosts to go through first, outermost first (`ProxyJump`).
    pub jumps: Vec<Endpoint>,
    /// TCP connect and handshake limit.
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// `user@host:port`, for messages.
    pub fn display(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }
}

/// Policy for keys not in known_hosts.
#[derive(Debug, Clone, Copy)]
pub struct HostKeyPolicy {
    /// Record an unknown key and go on (`--accept-new-host-key`). A changed key is refused
    /// regardless.
    pub accept_new: bool,
}

/// Checks the server's key; remembers why it refused, for the error message.
struct Checker {
    endpoint: Endpoint,
    policy: HostKeyPolicy,
    refusal: Arc<Mutex<Option<String>>>,
    learned: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key = match server_key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => key,
            russh::keys::PublicKeyOrCertificate::Certificate(_) => {
                *self.refusal.lock().expect("not poisoned") = Some(
                    "the server presented a host certificate; bosun checks plain host keys only"
                        .into(),
                );
                return Ok(false);
            }
        };
        let e = &self.endpoint;
        let refuse = |msg: String| {
            *self.refusal.lock().expect("not poisoned") = Some(msg);
            Ok(false)
        };
        let files = &e.known_hosts;
        let name = known_hosts::lookup_name(&e.host, e.port);
        let first = files
            .first()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "~/.ssh/known_hosts".into());
        match known_hosts::check(files, &e.host, e.port, key) {
            Err(err) => refuse(format!("cannot check the host key: {err:#}")),
            Ok(Verdict::Known) => Ok(true),
            Ok(Verdict::Unknown) if self.policy.accept_new => {
                match known_hosts::append(
                    files.first().map_or(&PathBuf::new(), |f| f),
                    &e.host,
                    e.port,
                    key,
                ) {
                    Ok(()) => {
                        *self.learned.lock().expect("not poisoned") = Some(format!(
                            "added {} for {name} to {first}",
                            known_hosts::describe(key)
                        ));
                        Ok(true)
                    }
                    Err(err) => refuse(format!("cannot record the new host key: {err:#}")),
                }
            }
            Ok(Verdict::Unknown) => refuse(format!(
                "the host key of {name} is not known ({}). Check that fingerprint with the host's \
                 owner (e.g. the EC2 console output), then run again with --accept-new-host-key \
                 to record it in {first}",
                known_hosts::describe(key)
            )),
            Ok(Verdict::Changed { file, line }) => refuse(format!(
                "@@@ THE HOST KEY OF {name} HAS CHANGED @@@ It now offers {}, which differs from \
                 the key recorded at {}:{line}. Someone may be intercepting this connection \
                 (man in the middle), or the host was rebuilt. Nothing was run. If the change is \
                 expected, remove the old key with `ssh-keygen -R '{name}' -f {}` and verify the \
                 new fingerprint before accepting it",
                known_hosts::describe(key),
                file.display(),
                file.display()
            )),
            Ok(Verdict::OtherTypes { recorded }) => refuse(format!(
                "the host {name} offered a {} key, but known_hosts records only {} keys for it; \
                 refusing (possible man in the middle). If the host's keys really changed, \
                 remove the old entries with `ssh-keygen -R '{name}'`",
                key.algorithm().as_str(),
                recorded.join(", ")
            )),
            Ok(Verdict::Revoked { file, line }) => refuse(format!(
                "the host key of {name} ({}) is marked @revoked at {}:{line}",
                known_hosts::describe(key),
                file.display()
            )),
        }
    }
}

/// An authenticated SSH connection.
pub struct Ssh {
    handle: Handle<Checker>,
    /// Connections to jump hosts, kept alive for as long as this one.
    _jumps: Vec<Handle<Checker>>,
    /// Set when `--accept-new-host-key` recorded a key, for the operator to see.
    pub learned_host_key: Option<String>,
}

/// What a command printed and how it ended.
#[derive(Debug, Default)]
pub struct Output {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// The exit code; `None` when it was killed by a signal or the channel closed early.
    pub code: Option<u32>,
    /// The signal that ended it.
    pub signal: Option<String>,
    /// It was cancelled (see [`Ssh::exec_lines`]).
    pub cancelled: bool,
}

impl Output {
    /// stderr as text, trimmed, for messages.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

impl Ssh {
    /// Connects (through the jump hosts, if any), checks the host key and authenticates.
    pub async fn connect(endpoint: &Endpoint, policy: HostKeyPolicy) -> Result<Ssh> {
        let mut jumps = Vec::new();
        let mut learned = None;
        let mut previous: Option<&Handle<Checker>> = None;
        for hop in endpoint.jumps.iter().chain(std::iter::once(endpoint)) {
            let stream = match previous {
                None => None,
                Some(h) => Some(
                    h.channel_open_direct_tcpip(
                        hop.host.clone(),
                        u32::from(hop.port),
                        "127.0.0.1",
                        0,
                    )
                    .await
                    .with_context(|| {
                        format!("the jump host cannot reach {}:{}", hop.host, hop.port)
                    })?
                    .into_stream(),
                ),
            };
            let (handle, l) = handshake(hop, policy, stream).await?;
            learned = learned.or(l);
            jumps.push(handle);
            previous = jumps.last();
        }
        let handle = jumps.pop().expect("at least the target");
        Ok(Ssh {
            handle,
            _jumps: jumps,
            learned_host_key: learned,
        })
    }

    /// Runs `command` (a shell command line) with `stdin` as its input, calling `on_stdout`
    /// with each complete line of output as it arrives; stderr is collected.
    ///
    /// When `cancel` turns true the command is sent SIGTERM (sshd signals the session's
    /// process group) and given [`CANCEL_GRACE`] to end and report; then the channel is
    /// closed and [`Output::cancelled`] is set either way.
    pub async fn exec_lines(
        &self,
        command: &str,
        stdin: Option<Box<dyn AsyncRead + Unpin + Send + '_>>,
        on_stdout: &mut (dyn FnMut(&str) + Send),
        mut cancel: Option<watch::Receiver<bool>>,
    ) -> Result<Output> {
        let mut channel = self
            .handle
            .channel_open_session()
            .await
            .context("cannot open an SSH session channel")?;
        channel
            .exec(true, command)
            .await
            .context("cannot start the remote command")?;
        // A command may end without reading its input (a missing bosund build): a failed
        // send is reported only when the command did not say how it ended.
        let mut send_error = None;
        if let Some(input) = stdin
            && let Err(e) = channel.data(input).await
        {
            send_error = Some(e);
        }
        if send_error.is_none() {
            let _ = channel.eof().await;
        }
        let mut out = Output::default();
        let mut pending = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut killed = false;
        loop {
            let cancelled = async {
                match (&mut cancel, deadline) {
                    (_, Some(at)) => tokio::time::sleep_until(at).await,
                    (Some(rx), None) => {
                        if rx.wait_for(|c| *c).await.map(|_| ()).is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    (None, None) => std::future::pending::<()>().await,
                }
            };
            let msg = tokio::select! {
                msg = channel.wait() => msg,
                () = cancelled => {
                    if deadline.is_some() {
                        // The grace is over: stop waiting for it.
                        let _ = channel.close().await;
                        break;
                    }
                    out.cancelled = true;
                    deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                    // sshd refuses `signal` requests in root sessions (no privilege
                    // separation after a root login): a command that announced its process
                    // group is also signalled with `kill` on a second channel.
                    let _ = channel.signal(Sig::TERM).await;
                    if let Some(pgid) = announced_pgid(&out.stderr) {
                        self.fire(&format!("kill -s TERM -- -{pgid}")).await;
                        killed = true;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                ChannelMsg::Data { data } => {
                    pending.extend_from_slice(&data);
                    while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=nl).collect();
                        on_stdout(String::from_utf8_lossy(&line[..nl]).trim_end_matches('\r'));
                        out.stdout.extend_from_slice(&line);
                    }
                }
                ChannelMsg::ExtendedData { data, .. } => {
                    out.stderr.extend_from_slice(&data);
                    // Cancelled before the command said its process group: signal it now.
                    if out.cancelled
                        && !killed
                        && let Some(pgid) = announced_pgid(&out.stderr)
                    {
                        self.fire(&format!("kill -s TERM -- -{pgid}")).await;
                        killed = true;
                    }
                    // Keep the tail only: a chatty stderr must not grow without bound.
                    if out.stderr.len() > 1 << 20 {
                        out.stderr.drain(..out.stderr.len() - (1 << 20));
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => out.code = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    out.signal = Some(format!("{signal_name:?}"));
                }
                _ => {}
            }
        }
        if !pending.is_empty() {
            on_stdout(&String::from_utf8_lossy(&pending));
            out.stdout.extend_from_slice(&pending);
        }
        if announced_pgid(&out.stderr).is_some()
            && let Some(nl) = out.stderr.iter().position(|b| *b == b'\n')
        {
            out.stderr.drain(..=nl);
        }
        if let Some(e) = send_error
            && out.code.is_none()
            && out.signal.is_none()
        {
            return Err(e).context("cannot send input to the remote command");
        }
        Ok(out)
    }

    /// Runs `command` and waits for it to end, ignoring its output and any failure.
    async fn fire(&self, command: &str) {
        if let Ok(mut channel) = self.handle.channel_open_session().await
            && channel.exec(true, command).await.is_ok()
        {
            let _ = channel.eof().await;
            while channel.wait().await.is_some() {}
        }
    }

    /// Opens a channel to a Unix socket on the host (direct-streamlocal forwarding).
    pub async fn open_streamlocal(&self, socket: &str) -> Result<russh::Channel<client::Msg>> {
        Ok(self.handle.channel_open_direct_streamlocal(socket).await?)
    }

    /// Runs `command` and collects its output.
    pub async fn exec(&self, command: &str) -> Result<Output> {
        self.exec_lines(command, None, &mut |_| {}, None).await
    }

    /// Ends the connection politely.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}

/// TCP (or the jump host's channel), key exchange with the host key check, then auth.
async fn handshake(
    e: &Endpoint,
    policy: HostKeyPolicy,
    stream: Option<russh::ChannelStream<client::Msg>>,
) -> Result<(Handle<Checker>, Option<String>)> {
    let refusal = Arc::new(Mutex::new(None));
    let learned = Arc::new(Mutex::new(None));
    let checker = Checker {
        endpoint: e.clone(),
        policy,
        refusal: refusal.clone(),
        learned: learned.clone(),
    };
    let config = Arc::new(client::Config {
        preferred: russh::Preferred {
            key: Cow::Owned(host_key_order(e)),
            ..Default::default()
        },
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    });
    let target = e.display();
    let connecting = async {
        match stream {
            Some(s) => client::connect_stream(config, s, checker).await,
            None => client::connect(config, (e.host.as_str(), e.port), checker).await,
        }
    };
    let mut handle = match tokio::time::timeout(e.connect_timeout, connecting).await {
        Err(_) => bail!(
            "cannot connect to {target}: no answer within {} s (is the host up and port {} open \
             to you?)",
            e.connect_timeout.as_secs(),
            e.port
        ),
        Ok(Err(err)) => {
            if let Some(why) = refusal.lock().expect("not poisoned").take() {
                bail!("{target}: {why}");
            }
            return Err(anyhow!(err)).with_context(|| format!("cannot connect to {target}"));
        }
        Ok(Ok(h)) => h,
    };
    authenticate(&mut handle, e).await?;
    let learned = learned.lock().expect("not poisoned").take();
    Ok((handle, learned))
}

/// Key types known for this host first, so the server shows a key known_hosts can vouch for.
fn host_key_order(e: &Endpoint) -> Vec<Algorithm> {
    let mut order = known_hosts::recorded_algorithms(&e.known_hosts, &e.host, e.port);
    for a in russh::Preferred::DEFAULT.key.iter() {
        // Recorded `ssh-rsa` stands for every RSA signature hash.
        let rsa_recorded = matches!(a, Algorithm::Rsa { .. })
            && order.iter().any(|o| matches!(o, Algorithm::Rsa { .. }));
        if !order.contains(a) && !rsa_recorded {
            order.push(a.clone());
        } else if rsa_recorded && !order.contains(a) {
            let pos = order
                .iter()
                .position(|o| matches!(o, Algorithm::Rsa { .. }))
                .expect("recorded");
            order.insert(pos, a.clone());
        }
    }
    order
}

/// Key files first (`-i`, `IdentityFile`), then the agent's keys, then `~/.ssh/id_*`; stops
/// at the first the server accepts.
async fn authenticate(handle: &mut Handle<Checker>, e: &Endpoint) -> Result<()> {
    let mut tried = Vec::new();
    let mut notes = Vec::new();

    let mut files = e.identity_files.clone();
    if e.identity_files.is_empty()
        && !e.identities_only
        && let Some(home) = std::env::home_dir()
    {
        for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
            files.push(home.join(".ssh").join(name));
        }
    }
    let (explicit, defaults) = files.split_at(e.identity_files.len());

    for f in explicit {
        if try_key_file(handle, e, f, &mut tried, &mut notes).await? {
            return Ok(());
        }
    }
    if !e.identities_only && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        match russh::keys::agent::client::AgentClient::connect_env().await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                for id in ids {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = id else {
                        continue;
                    };
                    let hash = rsa_hash(handle, &key.algorithm()).await;
                    tried.push(format!("agent key {comment}"));
                    match handle
                        .authenticate_publickey_with(&e.user, key, hash, &mut agent)
                        .await
                    {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(_) => {}
                        Err(err) => notes.push(format!("the agent could not sign: {err}")),
                    }
                }
            }
            Err(err) => notes.push(format!("ssh-agent (SSH_AUTH_SOCK) not reachable: {err}")),
        }
    }
    for f in defaults {
        if f.exists() && try_key_file(handle, e, f, &mut tried, &mut notes).await? {
            return Ok(());
        }
    }
    let mut msg = format!(
        "{}: public key authentication as {:?} failed",
        e.display(),
        e.user
    );
    if tried.is_empty() {
        msg.push_str(": no key to offer");
    } else {
        msg.push_str(&format!(" (offered: {})", tried.join(", ")));
    }
    for n in notes {
        msg.push_str(&format!("; {n}"));
    }
    msg.push_str(
        ". Add your key to ssh-agent (ssh-add), pass -i KEY, or set IdentityFile in ~/.ssh/config; \
         check the user (user@host or User in ~/.ssh/config)",
    );
    bail!(msg)
}

async fn try_key_file(
    handle: &mut Handle<Checker>,
    e: &Endpoint,
    file: &std::path::Path,
    tried: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<bool> {
    let key: PrivateKey = match russh::keys::load_secret_key(file, None) {
        Ok(k) => k,
        Err(russh::keys::Error::KeyIsEncrypted) => {
            notes.push(format!(
                "{} is passphrase-protected: add it to ssh-agent (ssh-add {})",
                file.display(),
                file.display()
            ));
            return Ok(false);
        }
        Err(err) => {
            notes.push(format!("cannot load {}: {err}", file.display()));
            return Ok(false);
        }
    };
    let hash = rsa_hash(handle, &key.algorithm()).await;
    tried.push(file.display().to_string());
    let result = handle
        .authenticate_publickey(&e.user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .with_context(|| format!("{}: authentication failed", e.display()))?;
    Ok(result.success())
}

/// The signature hash for RSA keys (what the server's `server-sig-algs` allows); `None`
/// for other key types.
async fn rsa_hash(handle: &Handle<Checker>, alg: &Algorithm) -> Option<HashAlg> {
    if !matches!(alg, Algorithm::Rsa { .. }) {
        return None;
    }
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}

/// The first line a command prints on stderr to say which process group to signal on cancel.
pub const PGID_ANNOUNCEMENT: &str = "echo \"bosun-pgid $$\" >&2";

/// The process group a command announced ([`PGID_ANNOUNCEMENT`]: sshd makes the session's
/// first process a group leader, so `$$` of the command's shell is its group).
fn announced_pgid(stderr: &[u8]) -> Option<u32> {
    let rest = stderr.strip_prefix(b"bosun-pgid ")?;
    let end = rest.iter().position(|b| *b == b'\n')?;
    std::str::from_utf8(&rest[..end])
        .ok()?
        .parse()
        .ok()
        .filter(|p| *p > 1)
}

/// Quotes `s` for a POSIX shell: `'...'`, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_group_announcements() {
        assert_eq!(announced_pgid(b"bosun-pgid 4242\nother"), Some(4242));
        assert_eq!(announced_pgid(b"bosun-pgid 4242"), None, "incomplete line");
        assert_eq!(announced_pgid(b"bosun-pgid 1\n"), None, "never init");
        assert_eq!(announced_pgid(b"error\nbosun-pgid 4242\n"), None);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("plain/path-1.0"), "plain/path-1.0");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
    }
}
