//! Handlers owed by an earlier run. When a run fails after a step notified a handler, the
//! handler does not run (the host is in an unknown state), and on the rerun the notifying step
//! is `ok`, so nothing would notify it again: a service would keep running on a config it never
//! loaded. So the owed handler names are kept in the state directory, per playbook name, and the
//! next run of that playbook starts with them notified. They are cleared once they have run.
//!
//! One small JSON file per playbook, `<state dir>/pending-handlers/<hash of the name>.json`,
//! written atomically. `--check` reads it but never writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::host::fs::{Attrs, write_atomic};

#[derive(Serialize, Deserialize)]
struct Owed {
    playbook: String,
    handlers: Vec<String>,
}

/// The owed-handler record of one playbook.
pub(super) struct PendingHandlers {
    path: PathBuf,
    playbook: String,
}

impl PendingHandlers {
    pub(super) fn new(state_dir: &Path, playbook: &str) -> Self {
        let hash = hex::encode(Sha256::digest(playbook.as_bytes()));
        PendingHandlers {
            path: state_dir
                .join("pending-handlers")
                .join(format!("{}.json", &hash[..16])),
            playbook: playbook.to_string(),
        }
    }

    /// The handler names owed; none when there is no record or it cannot be read (logged).
    pub(super) fn load(&self) -> Vec<String> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!("reading {}: {e}", self.path.display());
                return Vec::new();
            }
        };
        match serde_json::from_slice::<Owed>(&text) {
            Ok(owed) if owed.playbook == self.playbook => owed.handlers,
            Ok(_) => Vec::new(),
            Err(e) => {
                tracing::warn!("ignoring unreadable {}: {e}", self.path.display());
                Vec::new()
            }
        }
    }

    /// Records `handlers` as owed (an empty list removes the record).
    pub(super) fn store(&self, handlers: &[&str]) {
        let result = if handlers.is_empty() {
            match crate::host::fs::remove(&self.path, false) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        } else {
            let owed = Owed {
                playbook: self.playbook.clone(),
                handlers: handlers.iter().map(|h| h.to_string()).collect(),
            };
            let dir = self.path.parent().unwrap_or(Path::new("."));
            crate::host::fs::create_dir_all(dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    let json = serde_json::to_vec_pretty(&owed)?;
                    write_atomic(&self.path, &json, 0o600, &Attrs::default())
                })
        };
        if let Err(e) = result {
            tracing::warn!(
                "recording the handlers owed by playbook {} in {}: {e:#}",
                self.playbook,
                self.path.display()
            );
        }
    }
}
