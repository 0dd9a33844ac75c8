//! `authorized_key`: SSH public keys are (or are not) in a user's `authorized_keys`.
//!
//! ```toml
//! authorized_key = { user = "deploy", key = "ssh-ed25519 AAAAC3Nz... ops@laptop" }
//! authorized_key = { user = "deploy", key = "{{ team_keys }}", exclusive = true }
//! authorized_key = { user = "deploy", key = "ssh-ed25519 AAAAC3Nz... old", state = "absent" }
//! ```
//! `key` holds one key line or several (one per line; blank lines and `#` comments are
//! ignored), each as `authorized_keys` has it: optional options (`from="10.0.0.0/8",no-pty`),
//! type, base64 key, optional comment. A key is identified by its type and key data: a line
//! for the same key with other options or another comment is replaced in place by the line as
//! given (so options written in `key` are what the file gets); lines of other keys, comments
//! and blank lines are kept byte for byte. With `exclusive = true` every other key line is
//! removed. `state = "absent"` removes the lines of the given keys.
//!
//! The file is `~user/.ssh/authorized_keys` (the home from the account database): `.ssh` is
//! created with mode 0700 and the file written atomically with mode 0600, both owned by the
//! user and their primary group. Deliberate differences from Ansible's `authorized_key`: key
//! URLs (`https://github.com/x.keys`), `key_options`, `path`, `manage_dir = false` and
//! `follow` are not offered; `exclusive` with `state = "absent"` is refused.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ActionArgs;
use super::common::Presence;
use super::user::account_name_problem;
use crate::jinja::is_templated;

/// Arguments of `authorized_key`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedKeyArgs {
    /// Whose `authorized_keys`: an existing user.
    pub user: String,
    /// One or more public key lines (`[options] type base64 [comment]`).
    pub key: String,
    /// `present` (default) or `absent`.
    #[serde(default)]
    pub state: Presence,
    /// Remove every key not in `key` (default false).
    #[serde(default)]
    pub exclusive: bool,
}

/// The key lines of `key`: what is left once blank lines and `#` comments are dropped,
/// trimmed.
pub fn key_lines(key: &str) -> impl Iterator<Item = &str> {
    key.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Key types OpenSSH accepts in `authorized_keys` (certificate types end `-cert-v01@openssh.com`).
pub fn is_key_type(token: &str) -> bool {
    let base = token.strip_suffix("-cert-v01@openssh.com").unwrap_or(token);
    matches!(
        base,
        "ssh-ed25519"
            | "ssh-rsa"
            | "ssh-dss"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
            | "sk-ssh-ed25519@openssh.com"
            | "sk-ecdsa-sha2-nistp256@openssh.com"
            | "rsa-sha2-256"
            | "rsa-sha2-512"
    )
}

/// Whether `line` has a key type followed by base64 data somewhere (a shape check for
/// validation; the agent parses the key itself).
pub fn looks_like_key_line(line: &str) -> bool {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    tokens.windows(2).any(|w| {
        is_key_type(w[0])
            && w[1].len() >= 16
            && w[1]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    })
}

impl ActionArgs for AuthorizedKeyArgs {
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        problems.extend(account_name_problem("user", &self.user));
        if !is_templated(&self.key) {
            let lines: Vec<&str> = key_lines(&self.key).collect();
            if lines.is_empty() {
                problems.push("`key` holds no key line".into());
            }
            for (i, line) in lines.iter().enumerate() {
                if !looks_like_key_line(line) {
                    problems.push(format!(
                        "`key` line {} is not a public key line (`[options] ssh-ed25519 AAAA... [comment]`)",
                        i + 1
                    ));
                }
            }
        }
        if self.exclusive && self.state == Presence::Absent {
            problems.push("`exclusive` means nothing with `state = \"absent\"`".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lines_are_recognised_with_options_and_comments() {
        assert!(looks_like_key_line(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE1x a@b"
        ));
        assert!(looks_like_key_line(
            "from=\"10.0.0.0/8\",no-pty ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB"
        ));
        assert!(!looks_like_key_line("ssh-ed25519"));
        assert!(!looks_like_key_line(
            "hello world AAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        ));
        assert_eq!(
            key_lines("\n# c\n ssh-rsa X \n").collect::<Vec<_>>(),
            ["ssh-rsa X"]
        );
    }
}
