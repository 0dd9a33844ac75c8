//! CloudWatch Logs: PutLogEvents into one log group, creating the stream (and the group, with
//! its retention) when missing. Knows nothing of where events come from: it takes
//! `(timestamp, message)` pairs already within the API's limits (`logs::batch` cuts them).
//!
//! The group is created only when CreateLogStream says it does not exist, so a host whose role
//! may create streams but not groups (the stack's policy) never needs more; retention is set
//! only on a group bosund created (the stack owns its own group's retention).

use std::collections::HashSet;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;

use crate::aws::describe_error;

/// Events CloudWatch accepted the request for but refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rejected {
    /// Older than 14 days or the group's retention.
    pub too_old: usize,
    /// More than 2 hours in the future.
    pub too_new: usize,
    /// Older than the retention period.
    pub expired: usize,
}

/// PutLogEvents into one group, with stream creation.
#[derive(Debug, Clone)]
pub(crate) struct CloudWatchLogs {
    client: Client,
    group: String,
    /// Given to the group when bosund creates it.
    retention_days: Option<u32>,
    /// Streams known to exist.
    ready: HashSet<String>,
}

impl CloudWatchLogs {
    /// A sink over `client` into `group`; `retention_days` is set on the group only when this
    /// sink creates it.
    pub(crate) fn new(client: Client, group: String, retention_days: Option<u32>) -> Self {
        Self {
            client,
            group,
            retention_days,
            ready: HashSet::new(),
        }
    }

    /// Sends `events` (`(milliseconds since the epoch, message)`, in time order, within
    /// PutLogEvents' limits) to `stream`. `Ok` means CloudWatch accepted the request (some
    /// events may still have been rejected as too old or too new: counted in the result).
    /// The error says what failed; the caller retries.
    pub(crate) async fn put<'a>(
        &mut self,
        stream: &str,
        events: impl IntoIterator<Item = (i64, &'a str)>,
    ) -> Result<Rejected, String> {
        let events: Vec<InputLogEvent> = events
            .into_iter()
            .map(|(timestamp_ms, message)| {
                InputLogEvent::builder()
                    .timestamp(timestamp_ms)
                    .message(message)
                    .build()
                    .expect("timestamp and message are set")
            })
            .collect();
        for attempt in 0..2 {
            self.ensure(stream).await?;
            let res = self
                .client
                .put_log_events()
                .log_group_name(&self.group)
                .log_stream_name(stream)
                .set_log_events(Some(events.clone()))
                .send()
                .await;
            match res {
                Ok(out) => {
                    let n = events.len();
                    let mut r = Rejected::default();
                    if let Some(info) = out.rejected_log_events_info() {
                        if let Some(i) = info.too_new_log_event_start_index() {
                            r.too_new = n.saturating_sub(i.max(0) as usize);
                        }
                        if let Some(i) = info.too_old_log_event_end_index() {
                            r.too_old = (i.max(-1) + 1) as usize;
                        }
                        if let Some(i) = info.expired_log_event_end_index() {
                            r.expired = (i.max(-1) + 1) as usize;
                        }
                    }
                    return Ok(r);
                }
                Err(e)
                    if attempt == 0
                        && e.as_service_error()
                            .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    // The stream or group went away (deleted, or a fresh endpoint): recreate.
                    self.ready.remove(stream);
                }
                Err(e) => {
                    return Err(format!(
                        "PutLogEvents to {}/{stream}: {}",
                        self.group,
                        describe_error(&e)
                    ));
                }
            }
        }
        Err(format!(
            "PutLogEvents to {}/{stream}: the stream keeps disappearing",
            self.group
        ))
    }

    async fn ensure(&mut self, stream: &str) -> Result<(), String> {
        if self.ready.contains(stream) {
            return Ok(());
        }
        let group = self.group.as_str();
        let created = self.create_stream(group, stream).await?;
        if !created {
            self.create_group(group, self.retention_days).await?;
            if !self.create_stream(group, stream).await? {
                return Err(format!(
                    "CreateLogStream {group}/{stream}: the log group {group} still does not exist"
                ));
            }
        }
        self.ready.insert(stream.to_string());
        Ok(())
    }

    /// `Ok(false)` when the group does not exist.
    async fn create_stream(&self, group: &str, stream: &str) -> Result<bool, String> {
        match self
            .client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(s) if s.is_resource_already_exists_exception() => Ok(true),
                Some(s) if s.is_resource_not_found_exception() => Ok(false),
                _ => Err(format!(
                    "CreateLogStream {group}/{stream}: {} (the instance role needs logs:CreateLogStream on the group)",
                    describe_error(&e)
                )),
            },
        }
    }

    async fn create_group(&self, group: &str, retention_days: Option<u32>) -> Result<(), String> {
        match self
            .client
            .create_log_group()
            .log_group_name(group)
            .send()
            .await
        {
            Ok(_) => {
                tracing::info!(group, "created the log group");
                if let Some(days) = retention_days {
                    self.client
                        .put_retention_policy()
                        .log_group_name(group)
                        .retention_in_days(days as i32)
                        .send()
                        .await
                        .map_err(|e| {
                            format!(
                                "PutRetentionPolicy {group} ({days} days): {}",
                                describe_error(&e)
                            )
                        })?;
                }
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(format!(
                "CreateLogGroup {group}: {} (create the group, e.g. with `bosun up`, or allow logs:CreateLogGroup)",
                describe_error(&e)
            )),
        }
    }
}
