//! Distribution packages: apt and dpkg on Debian and Ubuntu, dnf and rpm on Amazon Linux and
//! Fedora.
//!
//! Queries (`dpkg-query`, `rpm -q`, `apt-cache policy`) never change the host; the verbs
//! (`apt-get install`, `dnf remove`, ...) are run non-interactively, keep existing
//! configuration files, and wait for the package lock instead of failing when a boot-time job
//! (unattended-upgrades, cloud-init) holds it.
//!
//! apt's package lists are refreshed only when older than a given age. Their age is taken from
//! the newest of the success stamp bosun (and Ubuntu's update-notifier) touches after an
//! update, the stamp of apt's own daily job, and the mtime of `/var/lib/apt/lists`. Not from
//! `/var/cache/apt/pkgcache.bin`: apt rebuilds that after every install, so it would make
//! stale lists look fresh. The lists directory alone is too old after an update that fetched
//! nothing new (its mtime does not move), which only costs an extra update; hence the stamp.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};

use super::process;
use bosun_model::event::CommandOutput;

/// Where apt keeps its package lists.
pub const APT_LISTS: &str = "/var/lib/apt/lists";
/// Touched after every successful `apt-get update` bosun runs (the same stamp Ubuntu's
/// update-notifier keeps and Ansible reads).
pub const APT_UPDATE_STAMP: &str = "/var/lib/apt/periodic/update-success-stamp";
/// Touched by apt's own daily job (`apt.systemd.daily`) after it updated the lists.
const APT_DAILY_STAMP: &str = "/var/lib/apt/periodic/update-stamp";
/// How long to wait for the dpkg/apt lock held by another process.
const LOCK_TIMEOUT_SECS: u32 = 300;

pub use bosun_model::steps::package::Manager;

/// Installed version of each of `names` (`None`: not installed). Runs `dpkg-query` or `rpm -q`
/// once for all of them.
pub async fn installed(
    manager: Manager,
    names: &[String],
) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut argv: Vec<String> = match manager {
        Manager::Apt => vec![
            "dpkg-query".into(),
            "-W".into(),
            "-f=${Package}\t${db:Status-Abbrev}\t${Version}\n".into(),
        ],
        Manager::Dnf => vec![
            "rpm".into(),
            "-q".into(),
            "--qf".into(),
            "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}.%{ARCH}\n".into(),
        ],
    };
    argv.push("--".into());
    argv.extend(names.iter().cloned());
    let out = run(&argv, &BTreeMap::new()).await?;
    let found = match manager {
        Manager::Apt => parse_dpkg_query(&out.stdout),
        Manager::Dnf => parse_rpm_query(&out.stdout),
    };
    // Both exit non-zero when some name is not installed; that is an answer, not an error.
    // No answer at all (no dpkg database, a broken rpmdb) is.
    let answered = out.rc == 0
        || match manager {
            Manager::Apt => out.stderr.contains("no packages found"),
            Manager::Dnf => out.stdout.contains("is not installed"),
        };
    if !answered {
        bail!(
            "{} failed (exit code {}): {}",
            argv[0],
            out.rc,
            out.stderr.trim()
        );
    }
    Ok(names
        .iter()
        .map(|n| (n.clone(), found.get(n).cloned()))
        .collect())
}

/// Installed packages from `dpkg-query -W -f '${Package}\t${db:Status-Abbrev}\t${Version}\n'`:
/// only those whose status is "installed" (`ii`, or `hi` when held); `rc` (removed, config
/// files left) is not installed.
pub fn parse_dpkg_query(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let (name, status, version) = (f.next()?, f.next()?, f.next()?);
            let status = status.as_bytes();
            (status.len() >= 2 && status[1] == b'i' && !version.is_empty())
                .then(|| (name.to_string(), version.to_string()))
        })
        .collect()
}

/// Installed packages from `rpm -q --qf '%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}.%{ARCH}\n'`
/// (lines of names that are not installed have no tab and are skipped).
pub fn parse_rpm_query(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (name, version) = line.split_once('\t')?;
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// For `latest`: the names among `names` that the package manager would upgrade, with the
/// version it would install. apt answers from the lists as they are now (refresh them first);
/// dnf refreshes its metadata as its own `metadata_expire` says.
pub async fn upgradable(
    manager: Manager,
    names: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    match manager {
        Manager::Apt => {
            let mut argv = vec!["apt-cache".to_string(), "policy".into(), "--".into()];
            argv.extend(names.iter().cloned());
            let out = run(&argv, &apt_env()).await?;
            if out.rc != 0 {
                bail!(
                    "apt-cache policy failed (exit code {}): {}",
                    out.rc,
                    out.stderr.trim()
                );
            }
            Ok(parse_apt_policy(&out.stdout)
                .into_iter()
                .filter_map(|(name, p)| match (p.installed, p.candidate) {
                    (Some(i), Some(c)) if i != c => Some((name, c)),
                    _ => None,
                })
                .collect())
        }
        Manager::Dnf => {
            let mut argv = vec![
                "dnf".to_string(),
                "-q".into(),
                "check-update".into(),
                "--".into(),
            ];
            argv.extend(names.iter().cloned());
            let out = run(&argv, &BTreeMap::new()).await?;
            // 100: updates are available; 0: none; anything else failed.
            match out.rc {
                0 => Ok(BTreeMap::new()),
                100 => Ok(parse_dnf_check_update(&out.stdout)),
                rc => bail!(
                    "dnf check-update failed (exit code {rc}): {}",
                    out.stderr.trim()
                ),
            }
        }
    }
}

/// What `apt-cache policy` says of one package.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptPolicy {
    /// The installed version; `None` for "(none)".
    pub installed: Option<String>,
    /// The version `apt-get install` would install; `None` for "(none)" (not in any list).
    pub candidate: Option<String>,
}

/// Parses `apt-cache policy NAME...` (package names start a line and end with `:`; their
/// `Installed:` and `Candidate:` lines follow, indented).
pub fn parse_apt_policy(text: &str) -> BTreeMap<String, AptPolicy> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            let name = line.trim_end_matches(':').to_string();
            out.insert(name.clone(), AptPolicy::default());
            current = Some(name);
            continue;
        }
        let Some(entry) = current.as_ref().and_then(|n| out.get_mut(n)) else {
            continue;
        };
        let version = |v: &str| {
            let v = v.trim();
            (v != "(none)" && !v.is_empty()).then(|| v.to_string())
        };
        let trimmed = line.trim_start();
        if let Some(v) = trimmed.strip_prefix("Installed:") {
            entry.installed = version(v);
        } else if let Some(v) = trimmed.strip_prefix("Candidate:") {
            entry.candidate = version(v);
        }
    }
    out
}

/// Parses `dnf check-update` output: `name.arch  version  repo` per line.
pub fn parse_dnf_check_update(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (name_arch, version, _repo) = (f.next()?, f.next()?, f.next()?);
            let name = name_arch.rsplit_once('.').map_or(name_arch, |(n, _)| n);
            Some((name.to_string(), version.to_string()))
        })
        .collect()
}

/// How old apt's package lists are (see the module doc for how it is told); `None` when there
/// are none at all (a fresh image): an update is needed before anything can be installed.
pub fn apt_lists_age(now: SystemTime) -> Option<Duration> {
    let lists = Path::new(APT_LISTS);
    let has_lists = std::fs::read_dir(lists).ok()?.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.contains("_Packages") || name.ends_with("Release")
    });
    if !has_lists {
        return None;
    }
    let newest = [
        Path::new(APT_UPDATE_STAMP),
        Path::new(APT_DAILY_STAMP),
        lists,
    ]
    .iter()
    .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .max()?;
    Some(now.duration_since(newest).unwrap_or(Duration::ZERO))
}

/// Whether lists of `age` (see [`apt_lists_age`]) need refreshing under `max_age`.
pub fn apt_lists_stale(age: Option<Duration>, max_age: Duration) -> bool {
    age.is_none_or(|a| a > max_age)
}

/// `apt-get update`; on success touches [`APT_UPDATE_STAMP`].
pub async fn apt_update() -> anyhow::Result<()> {
    let argv = to_argv(&[
        "apt-get",
        "update",
        "-q",
        &format!("-oDPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"),
    ]);
    let out = run(&argv, &apt_env()).await?;
    if out.rc != 0 {
        bail!(
            "apt-get update failed (exit code {}): {}",
            out.rc,
            last_lines(&out)
        );
    }
    // An update that prints "W: Failed to fetch" still exits 0 with old lists; say so rather
    // than install from them silently.
    if out.stderr.lines().any(|l| l.starts_with("E:")) {
        bail!("apt-get update reported errors: {}", last_lines(&out));
    }
    let stamp = Path::new(APT_UPDATE_STAMP);
    if let Some(dir) = stamp.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::File::create(stamp).with_context(|| format!("touching {}", stamp.display()))?;
    Ok(())
}

/// `apt-get update` of one deb822 `.sources` file only (the other sources are neither read
/// nor their lists removed): what `apt_repository` runs after writing one.
pub async fn apt_update_source(sources: &Path) -> anyhow::Result<()> {
    let argv = to_argv(&[
        "apt-get",
        "update",
        "-q",
        &format!("-oDPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"),
        // apt reads a main list ending in `.sources` as deb822; no parts directory.
        &format!("-oDir::Etc::sourcelist={}", sources.display()),
        "-oDir::Etc::sourceparts=-",
        "-oAPT::Get::List-Cleanup=0",
    ]);
    let out = run(&argv, &apt_env()).await?;
    // A signature that no longer verifies is only a warning when older lists exist ("the
    // previous index files will be used"), and so is a failed fetch: both fail this step.
    let refused = |l: &str| {
        l.starts_with("E:")
            || (l.starts_with("W:")
                && ["GPG error", "signature", "Failed to fetch", "not signed"]
                    .iter()
                    .any(|w| l.contains(w)))
    };
    if out.rc != 0 || out.stderr.lines().any(refused) {
        bail!(
            "apt-get update of {} failed (exit code {}): {}",
            sources.display(),
            out.rc,
            last_lines(&out)
        );
    }
    Ok(())
}

/// `VERSION_CODENAME` from /etc/os-release (`bookworm`, `noble`): the suite of a third-party
/// apt repository.
pub fn os_codename() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .context("reading /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME: cannot tell which suite to use")
}

/// `dpkg --print-architecture` (`amd64`, `arm64`): the architecture apt installs for.
pub async fn dpkg_architecture() -> anyhow::Result<String> {
    let out = run(
        &to_argv(&["dpkg", "--print-architecture"]),
        &BTreeMap::new(),
    )
    .await?;
    if out.rc != 0 || out.stdout.trim().is_empty() {
        bail!("dpkg --print-architecture failed: {}", out.stderr.trim());
    }
    Ok(out.stdout.trim().to_string())
}

/// What to do with a set of packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Install (apt: also upgrades a named package that is installed).
    Install,
    /// Upgrade installed packages to the newest version.
    Upgrade,
    /// Remove.
    Remove,
    /// Remove with configuration files (apt `purge`; dnf removes them anyway).
    Purge,
}

/// Options of an install.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// apt: install recommended packages too.
    pub install_recommends: bool,
}

/// The command line that applies `verb` to `names`.
pub fn command_line(
    manager: Manager,
    verb: Verb,
    names: &[String],
    opts: InstallOptions,
) -> Vec<String> {
    let mut argv = match manager {
        Manager::Apt => {
            let mut a = to_argv(&[
                "apt-get",
                "-y",
                "-q",
                &format!("-oDPkg::Lock::Timeout={LOCK_TIMEOUT_SECS}"),
                // Keep locally changed configuration files, never ask.
                "-oDpkg::Options::=--force-confdef",
                "-oDpkg::Options::=--force-confold",
            ]);
            match verb {
                Verb::Install | Verb::Upgrade => {
                    a.push("install".into());
                    if verb == Verb::Upgrade {
                        a.push("--only-upgrade".into());
                    }
                    if !opts.install_recommends {
                        a.push("--no-install-recommends".into());
                    }
                }
                Verb::Remove => a.push("remove".into()),
                Verb::Purge => a.push("purge".into()),
            }
            a
        }
        Manager::Dnf => {
            let verb = match verb {
                Verb::Install => "install",
                Verb::Upgrade => "upgrade",
                Verb::Remove | Verb::Purge => "remove",
            };
            to_argv(&["dnf", "-y", "-q", verb])
        }
    };
    argv.push("--".into());
    argv.extend(names.iter().cloned());
    argv
}

/// Runs [`command_line`]; fails with the end of its output when it exits non-zero.
pub async fn change(
    manager: Manager,
    verb: Verb,
    names: &[String],
    opts: InstallOptions,
) -> anyhow::Result<CommandOutput> {
    let argv = command_line(manager, verb, names, opts);
    let env = match manager {
        Manager::Apt => apt_env(),
        Manager::Dnf => BTreeMap::new(),
    };
    let out = run(&argv, &env).await?;
    if out.rc != 0 {
        bail!(
            "`{}` failed (exit code {}): {}",
            argv.join(" "),
            out.rc,
            last_lines(&out)
        );
    }
    Ok(out)
}

/// `DEBIAN_FRONTEND=noninteractive`: no debconf question may wait for a terminal.
fn apt_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("DEBIAN_FRONTEND".to_string(), "noninteractive".to_string()),
        ("NEEDRESTART_MODE".to_string(), "a".to_string()),
    ])
}

/// Runs a package tool with `env` and `LC_ALL=C`: its messages are parsed, so they must not
/// be translated.
async fn run(argv: &[String], env: &BTreeMap<String, String>) -> anyhow::Result<CommandOutput> {
    let mut env = env.clone();
    env.insert("LC_ALL".into(), "C".into());
    process::run(argv, None, &env).await.with_context(|| {
        format!(
            "is {} installed? this step needs the distribution's package tools",
            argv[0]
        )
    })
}

fn to_argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The last lines of stderr (or stdout when stderr is empty): where apt and dnf say what
/// went wrong.
fn last_lines(out: &CommandOutput) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_query_counts_only_installed_packages() {
        let text = "bash\tii \t5.2.15-2+b13\njq\trc \t1.6-2.1\nvim\thi \t2:9.0\nnano\tun \t\n";
        let got = parse_dpkg_query(text);
        assert_eq!(got.get("bash").map(String::as_str), Some("5.2.15-2+b13"));
        assert_eq!(got.get("vim").map(String::as_str), Some("2:9.0"));
        assert!(!got.contains_key("jq"), "removed, config files left");
        assert!(!got.contains_key("nano"));
    }

    #[test]
    fn rpm_query_skips_names_that_are_not_installed() {
        let text = "docker\t0:25.0.8-1.amzn2023.0.4.x86_64\npackage jq is not installed\n";
        let got = parse_rpm_query(text);
        assert_eq!(got.len(), 1);
        assert_eq!(got["docker"], "0:25.0.8-1.amzn2023.0.4.x86_64");
    }

    #[test]
    fn apt_policy_gives_installed_and_candidate() {
        let text = "jq:\n  Installed: (none)\n  Candidate: 1.6-2.1+deb12u2\n  Version table:\n     1.6-2.1+deb12u2 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\nbash:\n  Installed: 5.2.15-2+b13\n  Candidate: 5.2.15-2+b14\n  Version table:\n *** 5.2.15-2+b13 500\n";
        let got = parse_apt_policy(text);
        assert_eq!(
            got["jq"],
            AptPolicy {
                installed: None,
                candidate: Some("1.6-2.1+deb12u2".into())
            }
        );
        assert_eq!(got["bash"].installed.as_deref(), Some("5.2.15-2+b13"));
        assert_eq!(got["bash"].candidate.as_deref(), Some("5.2.15-2+b14"));
    }

    #[test]
    fn dnf_check_update_lines_name_the_package_without_arch() {
        let text = "\ndocker.x86_64   25.0.8-1.amzn2023.0.5   amazonlinux\nlibc.so.6.x86_64 2.34 amazonlinux\n";
        let got = parse_dnf_check_update(text);
        assert_eq!(got["docker"], "25.0.8-1.amzn2023.0.5");
        assert_eq!(got["libc.so.6"], "2.34");
    }

    #[test]
    fn lists_are_stale_when_missing_or_older_than_the_limit() {
        let hour = Duration::from_secs(3600);
        assert!(apt_lists_stale(None, hour));
        assert!(apt_lists_stale(Some(2 * hour), hour));
        assert!(!apt_lists_stale(Some(hour / 2), hour));
    }

    #[test]
    fn apt_command_lines_are_noninteractive_and_end_options_before_names() {
        let names = vec!["jq".to_string(), "tree".to_string()];
        let argv = command_line(
            Manager::Apt,
            Verb::Install,
            &names,
            InstallOptions::default(),
        );
        assert_eq!(argv[0], "apt-get");
        assert!(argv.contains(&"-y".to_string()));
        assert!(argv.contains(&"--no-install-recommends".to_string()));
        assert!(argv.contains(&"-oDpkg::Options::=--force-confold".to_string()));
        assert_eq!(&argv[argv.len() - 3..], ["--", "jq", "tree"]);
        let argv = command_line(
            Manager::Apt,
            Verb::Install,
            &names,
            InstallOptions {
                install_recommends: true,
            },
        );
        assert!(!argv.contains(&"--no-install-recommends".to_string()));
        let argv = command_line(Manager::Apt, Verb::Purge, &names, InstallOptions::default());
        assert!(argv.contains(&"purge".to_string()));
        let argv = command_line(
            Manager::Dnf,
            Verb::Upgrade,
            &names,
            InstallOptions::default(),
        );
        assert_eq!(&argv[..4], ["dnf", "-y", "-q", "upgrade"]);
    }
}
