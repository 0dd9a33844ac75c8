//! Retention policies: how many backups `backup_prune` keeps, by rule. Which backups a policy
//! keeps is decided by the agent (`bosun_agent::backup::retention`), over what it lists.

/// How many backups to keep, by rule. All zero would delete everything but the newest verified
/// backup; [`Policy::problem`] refuses that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N backups.
    pub keep_last: u32,
    /// The newest backup of each of this many days.
    pub daily: u32,
    /// The newest backup of each of this many ISO weeks.
    pub weekly: u32,
    /// The newest backup of each of this many months.
    pub monthly: u32,
}

impl Policy {
    /// Why this policy is refused, if it is.
    pub fn problem(&self) -> Option<String> {
        (self.keep_last == 0 && self.daily == 0 && self.weekly == 0 && self.monthly == 0).then(
            || {
                "the retention policy keeps nothing: set at least one of keep_last, daily, weekly, monthly"
                    .to_string()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_policy_is_refused() {
        assert!(
            Policy::default()
                .problem()
                .unwrap()
                .contains("keeps nothing")
        );
        assert!(
            Policy {
                monthly: 1,
                ..Policy::default()
            }
            .problem()
            .is_none()
        );
    }
}
