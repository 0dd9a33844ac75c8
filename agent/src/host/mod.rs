//! The only layer that touches the operating system directly: files and their attributes,
//! processes, and facts about the machine. Steps call it; it calls nothing above it.
//!
//! The clients of the programs bosund drives (`helm`, `k3s kubectl`, `systemctl`, the package
//! managers) live here too: they own the command line and the parsing of the program's output;
//! what the answers mean for a step stays in the step.

pub(crate) mod accounts;
pub(crate) mod archive;
pub mod bundle;
pub(crate) mod download;
pub mod facts;
pub(crate) mod fs;
pub(crate) mod helm;
pub(crate) mod k3s;
pub(crate) mod mounts;
pub(crate) mod packages;
pub mod process;
pub(crate) mod swap;
pub(crate) mod sysctl;
pub(crate) mod systemd;
pub(crate) mod unpack;

/// Test support: writes an executable script (mode 0755) without this process ever holding it
/// open for writing. A script a test writes itself can fail to start with ETXTBSY ("Text file
/// busy") when another test thread forks while the write is open (the child keeps the
/// descriptor until it execs), so `sh` writes it instead, from stdin.
#[cfg(test)]
pub(crate) fn write_script(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("/bin/sh")
        .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("starting /bin/sh");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("writing the script to sh");
    let status = child.wait().expect("waiting for sh");
    assert!(status.success(), "writing {} failed", path.display());
}
