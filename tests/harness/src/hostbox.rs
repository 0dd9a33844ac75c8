//! [`HostBox`]: a real Debian bookworm host, booted with systemd under `systemd-nspawn`, for
//! tests of steps that need a whole machine (packages, systemd units, Docker, swap).
//!
//! How it works (see the "A real host in a box" recipe in TESTING.md):
//! - The root file system comes from `debootstrap --variant=minbase` and is cached as a tarball
//!   under `$HOME/.cache/bosun/rootfs/`, named after a hash of what went into it. It is built
//!   once (≈ 40 s to 2 min, network-bound), under a lock file so that tests starting together
//!   wait for one build instead of racing; it is written under a temporary name and renamed
//!   into place, so a killed build never leaves a half tarball behind.
//! - Each box extracts the tarball into its own temporary directory and boots it with
//!   `systemd-nspawn --boot --register=no --keep-unit --capability=all` under a unique machine
//!   name. `boot()` returns once `systemctl is-system-running` answers `running` or `degraded`.
//! - Commands run inside through `nsenter -t <the container's systemd> -a`, with a clean
//!   environment.
//! - Dropping the box halts it (SIGTERM to nspawn: a clean systemd shutdown), kills it if it
//!   has not stopped within [`HALT_TIMEOUT`], and removes its directory.
//!
//! What the box shares with the machine running the tests, by design of the recipe: the
//! network namespace (apt inside reaches the package mirror; servers on the host's loopback
//! are reachable) and the kernel. Kernel-global state changed inside is changed for the host
//! too: swap in particular (`swapon` is allowed under `--capability=all`). Dropping a box turns
//! off any swap file of its own before halting it, so a test that enables swap leaves none
//! behind. `/proc/sys` is read-only inside, so sysctls cannot be set there.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::process::{find_program, is_root, log_tail, random_hex};

/// Debian suite the box runs.
const SUITE: &str = "bookworm";
/// Packages added to debootstrap's minimal base: enough to boot with systemd, talk to it, have
/// a network tool, and reach HTTPS mirrors.
const INCLUDE: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "ca-certificates",
];
/// Default package mirror; `BOSUN_HOSTBOX_MIRROR` overrides it (part of the cache key).
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Environment variable naming another Debian mirror for the rootfs build.
pub const MIRROR_ENV: &str = "BOSUN_HOSTBOX_MIRROR";

/// How long a box may take from `systemd-nspawn` to `running`/`degraded`.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a box may take to halt after SIGTERM before it is killed.
pub const HALT_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_PAUSE: Duration = Duration::from_millis(100);

/// `PATH` of commands run in the box (Debian's default for root).
const BOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const DEBOOTSTRAP_HINT: &str =
    "run scripts/test, which installs debootstrap (or: apt-get install debootstrap)";
const NSPAWN_HINT: &str =
    "run scripts/test, which installs systemd-container (or: apt-get install systemd-container)";
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// What a box boots with besides the base rootfs: extra Debian packages baked into its cached
/// rootfs (each set is its own tarball in the cache, built once like the base one), and files
/// written into the rootfs *before* it boots (e.g. a cloud-init NoCloud seed, which must be
/// there when systemd starts).
#[derive(Debug, Clone, Default)]
pub struct BoxSpec {
    packages: Vec<String>,
    files: Vec<(String, Vec<u8>, u32)>,
    boot_timeout: Option<Duration>,
    network: Option<BoxNetwork>,
}

/// Where a box with its own network sits: a [`crate::PrivateNet`]'s namespace and bridge, an
/// address on it and the gateway.
#[derive(Debug, Clone)]
struct BoxNetwork {
    netns: String,
    address: String,
    gateway: String,
}

impl BoxSpec {
    /// The base box: what [`HostBox::boot`] boots.
    pub fn new() -> BoxSpec {
        BoxSpec::default()
    }

    /// Adds Debian packages (and their dependencies) to the rootfs, at build time.
    pub fn packages(mut self, names: &[&str]) -> BoxSpec {
        self.packages.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Writes `content` to `path` (absolute, inside the box) with `mode` before the box boots,
    /// creating parent directories (0755). No component of `path` may be a symlink (it would
    /// resolve on the host).
    pub fn file(mut self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> BoxSpec {
        self.files.push((path.to_string(), content.into(), mode));
        self
    }

    /// Boots the box on `net`'s bridge with `address` (one of [`crate::PrivateNet::address`])
    /// instead of in the host's network namespace: `systemd-nspawn` runs inside the namespace
    /// with `--network-bridge`, and `host0` gets the address and a default route through the
    /// gateway once the box is up. The box then reaches its neighbours on the bridge and what
    /// the net forwards, nothing else (no package mirror: bake packages in with
    /// [`packages`](Self::packages)).
    pub fn network(mut self, net: &crate::PrivateNet, address: &str) -> BoxSpec {
        self.network = Some(BoxNetwork {
            netns: net.name().to_string(),
            address: address.to_string(),
            gateway: net.gateway(),
        });
        self
    }

    /// How long booting may take instead of [`BOOT_TIMEOUT`]: systemd is `running` only once
    /// every boot job has finished, so a box whose boot does real work (cloud-init's final
    /// stage installing packages) needs longer.
    pub fn boot_timeout(mut self, timeout: Duration) -> BoxSpec {
        self.boot_timeout = Some(timeout);
        self
    }
}

/// A booted Debian host in a container. See the module documentation for the contract.
#[derive(Debug)]
pub struct HostBox {
    nspawn: Option<Child>,
    leader: Pid,
    machine: String,
    rootfs: PathBuf,
    boot_log: PathBuf,
    nsenter: PathBuf,
    booted_in: Duration,
    // Last: removed after the container is gone (fields drop in order, after `Drop::drop`).
    _dir: TempDir,
}

impl HostBox {
    /// Checks that everything a box needs is here: root, `debootstrap`, `systemd-nspawn`,
    /// `nsenter` and `tar`. The error lists every missing piece and how to get it, so a test
    /// fails (it never skips) with the fix in its message.
    pub fn available() -> Result<()> {
        let mut missing = Vec::new();
        if !is_root() {
            missing.push(
                "root: systemd-nspawn and nsenter need it (run the tests as root, e.g. in CI)"
                    .to_string(),
            );
        }
        for (program, hint) in [
            ("debootstrap", DEBOOTSTRAP_HINT),
            ("systemd-nspawn", NSPAWN_HINT),
            ("nsenter", "install util-linux"),
            ("tar", "install tar"),
        ] {
            if let Err(e) = find_program(program, SYSTEM_DIRS, hint) {
                missing.push(format!("{e:#}"));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            bail!(
                "cannot boot a host box; missing:\n  - {}",
                missing.join("\n  - ")
            )
        }
    }

    /// Extracts the cached rootfs (building it first if needed) and boots it. Returns once
    /// systemd inside says `running` or `degraded`; fails with the boot log after
    /// [`BOOT_TIMEOUT`].
    pub fn boot() -> Result<HostBox> {
        Self::boot_with(&BoxSpec::new())
    }

    /// [`boot`](Self::boot) a rootfs with `spec`'s extra packages and files.
    pub fn boot_with(spec: &BoxSpec) -> Result<HostBox> {
        Self::available()?;
        let nspawn_bin = find_program("systemd-nspawn", SYSTEM_DIRS, NSPAWN_HINT)?;
        let nsenter = find_program("nsenter", SYSTEM_DIRS, "install util-linux")?;
        let extra: Vec<&str> = spec.packages.iter().map(String::as_str).collect();
        let tarball = rootfs_tarball_with(&extra)?;
        ensure_nspawn_run_dir()?;

        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("bosun-hostbox-")
            .tempdir()
            .context("cannot create a temporary directory for the host box")?;
        let rootfs = dir.path().join("rootfs");
        fs::create_dir(&rootfs).with_context(|| format!("cannot create {}", rootfs.display()))?;
        run_quiet(
            Command::new("tar")
                .arg("--numeric-owner")
                .arg("-xpf")
                .arg(&tarball)
                .arg("-C")
                .arg(&rootfs),
            "extracting the rootfs tarball",
        )?;
        for (path, content, mode) in &spec.files {
            write_before_boot(&rootfs, path, content, *mode)?;
        }

        // Unique per box: nspawn keeps per-machine state under /run/systemd/nspawn/propagate/
        // named after it, and it becomes the box's hostname.
        let machine = format!("bosun-{}", random_hex(4)?);
        let boot_log = dir.path().join("boot.log");
        let log = File::create(&boot_log)
            .with_context(|| format!("cannot create {}", boot_log.display()))?;
        // In a private net, nspawn runs inside its network namespace and plugs the box into
        // the bridge. `nsenter --net` (it execs, so the child's pid is nspawn's) changes only
        // the network namespace: `ip netns exec` would also mount a new /sys without the
        // cgroup hierarchy nspawn needs.
        let mut command = match &spec.network {
            Some(net) => {
                let mut c = Command::new(&nsenter);
                c.arg(format!("--net=/run/netns/{}", net.netns))
                    .arg("--")
                    .arg(&nspawn_bin);
                c.arg(format!("--network-bridge={}", crate::netns::BRIDGE));
                c
            }
            None => Command::new(&nspawn_bin),
        };
        let child = command
            .args(["-q", "-D"])
            .arg(&rootfs)
            .arg(format!("--machine={machine}"))
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--capability=all",
                "--link-journal=no",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", nspawn_bin.display()))?;

        let mut hostbox = HostBox {
            nspawn: Some(child),
            leader: Pid::from_raw(0),
            machine,
            rootfs,
            boot_log,
            nsenter,
            booted_in: Duration::ZERO,
            _dir: dir,
        };
        hostbox.wait_booted(started, spec.boot_timeout.unwrap_or(BOOT_TIMEOUT))?;
        if let Some(net) = &spec.network {
            hostbox
                .sh(&format!(
                    "ip addr add {}/24 dev host0 && ip link set host0 up && ip route add default via {}",
                    net.address, net.gateway
                ))
                .context("giving the box its address on the private net")?;
        }
        hostbox.booted_in = started.elapsed();
        Ok(hostbox)
    }

    /// The box's root directory as seen from the host: read results through it. Write through
    /// [`write_file`](Self::write_file) or [`copy_in`](Self::copy_in) instead: a write through
    /// this path would follow the box's absolute symlinks on the host.
    pub fn root(&self) -> &Path {
        &self.rootfs
    }

    /// `path` (absolute, as seen inside the box) as a host path under [`root`](Self::root).
    pub fn path(&self, path: &str) -> PathBuf {
        self.rootfs.join(path.trim_start_matches('/'))
    }

    /// The machine name (also the box's hostname).
    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// The host pid of the box's systemd (PID 1 inside).
    pub fn leader_pid(&self) -> u32 {
        self.leader.as_raw().unsigned_abs()
    }

    /// How long `boot()` took: extracting the rootfs plus booting it.
    pub fn boot_time(&self) -> Duration {
        self.booted_in
    }

    /// What the box printed on its console so far (systemd's boot and shutdown messages).
    pub fn boot_log(&self) -> String {
        fs::read_to_string(&self.boot_log).unwrap_or_default()
    }

    /// Runs `argv` inside the box (all its namespaces, its root, `/` as working directory)
    /// with a clean environment (`PATH`, `HOME=/root`, `LANG=C.UTF-8`) and returns what it
    /// printed and its status, whatever the exit code. Errors only when `nsenter` cannot run.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        self.exec_env(argv, &[])
    }

    /// [`exec`](Self::exec) with extra environment variables.
    pub fn exec_env(&self, argv: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        self.command(argv, env)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {argv:?} in host box {}", self.machine))
    }

    /// Runs a shell line inside the box and returns its stdout; fails, quoting stdout and
    /// stderr, when it exits non-zero.
    pub fn sh(&self, script: &str) -> Result<String> {
        let out = self.exec(&["/bin/sh", "-c", script])?;
        if !out.status.success() {
            bail!(
                "in host box {}: `{script}` failed ({})\nstdout: {}\nstderr: {}",
                self.machine,
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Copies the host file `host_path` to `box_path` (absolute, inside the box) with the same
    /// permission bits, creating parent directories. Written by a process inside the box, so
    /// symlinks resolve as the box sees them, and renamed into place (a running program of
    /// that name is replaced, not overwritten).
    pub fn copy_in(&self, host_path: &Path, box_path: &str) -> Result<()> {
        let mode = fs::metadata(host_path)
            .with_context(|| format!("cannot read {}", host_path.display()))?
            .permissions()
            .mode()
            & 0o7777;
        let file = File::open(host_path)
            .with_context(|| format!("cannot open {}", host_path.display()))?;
        self.install(Stdio::from(file), None, box_path, mode)
            .with_context(|| format!("copying {} into the box", host_path.display()))
    }

    /// Writes `content` to `box_path` (absolute, inside the box) with `mode`, like
    /// [`copy_in`](Self::copy_in).
    pub fn write_file(&self, box_path: &str, content: &[u8], mode: u32) -> Result<()> {
        self.install(Stdio::piped(), Some(content), box_path, mode)
    }

    fn install(
        &self,
        stdin: Stdio,
        content: Option<&[u8]>,
        box_path: &str,
        mode: u32,
    ) -> Result<()> {
        if !box_path.starts_with('/') {
            bail!("{box_path:?}: give an absolute path inside the box");
        }
        let script = r#"set -e
d=$(dirname -- "$1"); mkdir -p -- "$d"
t="$1.bosun-copy.$$"
cat > "$t"; chmod "$2" "$t"; mv -f -- "$t" "$1""#;
        let mode = format!("{mode:o}");
        let mut child = self
            .command(&["/bin/sh", "-c", script, "sh", box_path, &mode], &[])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run nsenter into host box {}", self.machine))?;
        if let Some(bytes) = content {
            let mut pipe = child
                .stdin
                .take()
                .context("stdin of the copy was not piped")?;
            pipe.write_all(bytes)
                .with_context(|| format!("writing {box_path} in the box"))?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "writing {box_path} in host box {} failed ({}): {}",
                self.machine,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The [`Command`] that runs `argv` inside the box with the environment of
    /// [`exec`](Self::exec) plus `env`, for callers that stream or pipe its output themselves.
    pub fn command(&self, argv: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(&self.nsenter);
        cmd.env_clear()
            .env("PATH", BOX_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .envs(env.iter().copied())
            .arg("-t")
            .arg(self.leader.to_string())
            .args(["-a", "--"])
            .args(argv);
        cmd
    }

    /// Finds the container's systemd, then polls `systemctl is-system-running`.
    fn wait_booted(&mut self, started: Instant, timeout: Duration) -> Result<()> {
        let deadline = started + timeout;
        let npid = self.nspawn_pid()?;
        loop {
            self.fail_if_exited("while starting")?;
            if let Some(pid) = child_named(npid, "systemd") {
                self.leader = pid;
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the container's systemd did not appear within {timeout:?}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(POLL_PAUSE);
        }
        loop {
            self.fail_if_exited("while booting")?;
            let out = self.exec(&["systemctl", "is-system-running"])?;
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last = format!("{state:?} {}", String::from_utf8_lossy(&out.stderr).trim());
                bail!(
                    "host box {} did not finish booting within {timeout:?}; \
                     `systemctl is-system-running` last said {last}\n{}",
                    self.machine,
                    self.log_tail()
                );
            }
            thread::sleep(POLL_PAUSE);
        }
    }

    fn nspawn_pid(&self) -> Result<Pid> {
        let child = self.nspawn.as_ref().context("the box is not running")?;
        Ok(Pid::from_raw(i32::try_from(child.id())?))
    }

    fn fail_if_exited(&mut self, when: &str) -> Result<()> {
        let status = match self.nspawn.as_mut() {
            Some(child) => child.try_wait()?,
            None => bail!("host box {} is not running", self.machine),
        };
        match status {
            None => Ok(()),
            Some(status) => Err(anyhow!(
                "systemd-nspawn exited ({status}) {when}\n{}",
                self.log_tail()
            )),
        }
    }

    fn log_tail(&self) -> String {
        log_tail(std::slice::from_ref(&self.boot_log))
    }

    /// Turns off swap files of this box: `/proc/swaps` inside lists every swap of the kernel,
    /// with paths relative to their own file system's root, so a host's `/swapfile` shows up
    /// as `/swapfile` too. `swapoff PATH` run *inside* resolves PATH in the box, so it turns
    /// off only a file of the box (for any other it fails harmlessly).
    fn swapoff_own(&self) {
        let script = r#"tail -n +2 /proc/swaps | while read -r f t rest; do
  [ "$t" = file ] && [ -f "$f" ] && swapoff "$f" 2>/dev/null; done; true"#;
        let _ = self.exec(&["/bin/sh", "-c", script]);
    }

    fn halt(&mut self) {
        let Some(mut child) = self.nspawn.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            self.swapoff_own();
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + HALT_TIMEOUT;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(POLL_PAUSE);
            }
        }
        if matches!(child.try_wait(), Ok(None)) {
            // The container's PID 1 ends its whole pid namespace when killed.
            if self.leader.as_raw() > 0 {
                let _ = kill(self.leader, Signal::SIGKILL);
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for HostBox {
    fn drop(&mut self) {
        self.halt();
        // `dir` (the rootfs) is removed when the field drops, after this.
    }
}

/// A child of `parent` whose command name is `name` (from /proc/PID/stat).
fn child_named(parent: Pid, name: &str) -> Option<Pid> {
    let entries = fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((comm, ppid)) = parse_stat(&stat)
            && ppid == parent.as_raw()
            && comm == name
        {
            return Some(Pid::from_raw(pid));
        }
    }
    None
}

/// `(comm, ppid)` from a /proc/PID/stat line: `pid (comm) state ppid ...`; comm may hold
/// spaces and parentheses, so it ends at the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// The mirror the rootfs is built from.
fn mirror() -> String {
    std::env::var(MIRROR_ENV)
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// `$HOME/.cache/bosun/rootfs`.
fn cache_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: cannot find the rootfs cache ($HOME/.cache/bosun/rootfs)")?;
    Ok(PathBuf::from(home).join(".cache/bosun/rootfs"))
}

/// File name of the cached tarball: the suite and a hash of everything that went into it.
fn tarball_name(suite: &str, include: &[&str], mirror: &str) -> String {
    let key = format!("{suite}|minbase|{}|{mirror}", include.join(","));
    format!("{suite}-{:016x}.tar", fnv1a64(key.as_bytes()))
}

/// FNV-1a, 64 bits: a stable hash for cache names (not for security).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a file into a rootfs that is not running yet, refusing symlinks on the way (they
/// would resolve against the host's root).
fn write_before_boot(rootfs: &Path, path: &str, content: &[u8], mode: u32) -> Result<()> {
    let rel = path
        .strip_prefix('/')
        .filter(|r| !r.is_empty())
        .with_context(|| format!("{path:?}: give an absolute file path inside the box"))?;
    let mut at = rootfs.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == "." || *part == ".." {
            bail!("{path:?}: no . or .. in paths written into the box");
        }
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                bail!("{path:?}: {} is a symlink in the box", at.display())
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && i + 1 < parts.len() => {
                fs::create_dir(&at).with_context(|| format!("cannot create {}", at.display()))?;
                fs::set_permissions(&at, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", at.display())),
        }
    }
    fs::write(&at, content).with_context(|| format!("cannot write {}", at.display()))?;
    fs::set_permissions(&at, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", at.display()))
}

/// The cached rootfs tarball, built first when missing. Concurrent callers (tests in other
/// threads or processes) serialise on a lock file beside it, so exactly one builds it.
pub fn rootfs_tarball() -> Result<PathBuf> {
    rootfs_tarball_with(&[])
}

/// [`rootfs_tarball`] with `extra` packages besides the base ones: its own tarball (the
/// package list is part of the cache key). The extras are installed with apt in a chroot after
/// debootstrap (whose own resolver cannot follow virtual packages, e.g. cloud-init's
/// python3-cffi-backend-api-*), without recommends.
pub fn rootfs_tarball_with(extra: &[&str]) -> Result<PathBuf> {
    let mut extra: Vec<&str> = extra
        .iter()
        .copied()
        .filter(|p| !INCLUDE.contains(p))
        .collect();
    extra.sort_unstable();
    extra.dedup();
    let mut include: Vec<&str> = INCLUDE.to_vec();
    include.extend(extra.iter().copied());
    let dir = cache_dir()?;
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mirror = mirror();
    let name = tarball_name(SUITE, &include, &mirror);
    let tarball = dir.join(&name);
    if tarball.is_file() {
        return Ok(tarball);
    }
    let lock_path = dir.join(format!("{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    // Another test may have built it while we waited for the lock.
    if tarball.is_file() {
        return Ok(tarball);
    }
    let started = Instant::now();
    build_tarball(&dir, &tarball, &mirror, &extra)?;
    eprintln!(
        "hostbox: built {} in {:.1} s (cached for later runs)",
        tarball.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(tarball)
    // `lock` is released when dropped.
}

fn build_tarball(dir: &Path, tarball: &Path, mirror: &str, extra: &[&str]) -> Result<()> {
    let debootstrap = find_program("debootstrap", SYSTEM_DIRS, DEBOOTSTRAP_HINT)?;
    let build = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a build directory in {}", dir.display()))?;
    let target = build.path().join("rootfs");
    let log = build.path().join("debootstrap.log");
    let out = File::create(&log)?;
    let status = Command::new(&debootstrap)
        .arg("--variant=minbase")
        .arg(format!("--include={}", INCLUDE.join(",")))
        .arg(SUITE)
        .arg(&target)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("cannot run {}", debootstrap.display()))?;
    if !status.success() {
        bail!(
            "debootstrap of {SUITE} from {mirror} failed ({status}); is the mirror reachable? \
             (set {MIRROR_ENV} to use another)\n{}",
            log_tail(&[log, target.join("debootstrap/debootstrap.log")])
        );
    }
    if !extra.is_empty() {
        let chroot = find_program("chroot", SYSTEM_DIRS, "install coreutils")?;
        let out = File::options().append(true).open(&log)?;
        // No systemd runs in the chroot, so package scripts enable units but start nothing.
        let status = Command::new(&chroot)
            .arg(&target)
            .args(["/bin/sh", "-c"])
            .arg(format!(
                "apt-get update -qq && apt-get install -y -qq --no-install-recommends {} \
                 && apt-get clean",
                extra.join(" ")
            ))
            .env_clear()
            .env("PATH", BOX_PATH)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .with_context(|| format!("cannot run {}", chroot.display()))?;
        if !status.success() {
            bail!(
                "installing {} into the rootfs failed ({status})\n{}",
                extra.join(" "),
                log_tail(&[log])
            );
        }
    }
    // Without /etc/hostname the box takes its machine name as hostname (debootstrap copies
    // the build host's).
    let _ = fs::remove_file(target.join("etc/hostname"));
    let partial = dir.join(format!(
        ".{}.partial-{}",
        tarball
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let tarred = run_quiet(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-cpf")
            .arg(&partial)
            .arg("-C")
            .arg(&target)
            .arg("."),
        "packing the rootfs",
    )
    .and_then(|()| {
        File::open(&partial)?.sync_all()?;
        fs::rename(&partial, tarball)
            .with_context(|| format!("cannot rename {} into place", partial.display()))
    });
    if tarred.is_err() {
        let _ = fs::remove_file(&partial);
    }
    tarred
}

/// Mounts a tmpfs on `/run/systemd/nspawn` unless one is there. nspawn keeps per-machine
/// directories under it and, when it is on a disk file system (no tmpfs on /run, as on this
/// kind of machine), refuses to remove them at exit ("Attempted to remove disk file system
/// ... and we can't allow that"), so they would pile up. Serialised by a lock file, so two
/// tests never mount it twice.
fn ensure_nspawn_run_dir() -> Result<()> {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    let dir = Path::new("/run/systemd/nspawn");
    let is_tmpfs = |d: &Path| statfs(d).is_ok_and(|s| s.filesystem_type() == TMPFS_MAGIC);
    if is_tmpfs(dir) {
        return Ok(());
    }
    let lock_path = cache_dir()?.join("nspawn-run.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if is_tmpfs(dir) {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    run_quiet(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs"])
            .arg(dir),
        "mounting a tmpfs on /run/systemd/nspawn",
    )
}

/// Runs a helper to completion; fails with its output when it exits non-zero.
fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what} ({cmd:?})"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(
            parse_stat("42 (systemd) S 7 42 42 0 -1"),
            Some(("systemd", 7))
        );
        assert_eq!(parse_stat("9 (a) b (c)) R 3 9"), Some(("a) b (c)", 3)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_cache_name_changes_with_what_goes_into_the_rootfs() {
        let a = tarball_name("bookworm", &["systemd", "dbus"], DEFAULT_MIRROR);
        assert!(
            a.starts_with("bookworm-") && a.ends_with(".tar") && a.len() == 29,
            "{a}"
        );
        assert_eq!(
            a,
            tarball_name("bookworm", &["systemd", "dbus"], DEFAULT_MIRROR)
        );
        assert_ne!(a, tarball_name("bookworm", &["systemd"], DEFAULT_MIRROR));
        assert_ne!(
            a,
            tarball_name("bookworm", &["systemd", "dbus"], "http://other/debian")
        );
    }
}
