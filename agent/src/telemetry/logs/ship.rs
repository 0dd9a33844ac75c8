//! The shipper: a source's events queued per stream, cut into [`LogBatch`]es, sent to a
//! [`LogSink`] with backoff, and the positions of what was accepted handed back as [`Acks`]
//! for the source to checkpoint.
//!
//! Generic over the sink, so batching, retry and acknowledgement are tested here against an
//! in-memory sink; CloudWatch Logs itself is proven by the integration tests
//! (agent/tests/telemetry.rs, against moto).
//!
//! Invariants:
//! - A batch's acknowledgements are returned only after the sink accepted it, and in the
//!   order the batches were accepted; a batch that was not accepted is acknowledged never
//!   (after a restart it is read again from the last checkpoint).
//! - A failed batch is sent again, the same batch, until accepted or the stop deadline would
//!   pass during the next backoff; nothing is dropped on error.
//! - Queued bytes never pass the source's budget by more than one read turn: the source stops
//!   reading while [`Shipper::full`].
//!
//! The shipper reads tokio's clock (`tokio::time::Instant`), which is the system's monotonic
//! clock except in tests that pause it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::batch::{Acks, LogBatch, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use super::event::{self, Filter, LogEvent, MAX_EVENT_BYTES, Origin, now_ms, split_oversize};
use crate::telemetry::config::LogSourceConfig;
use crate::telemetry::sinks::{
    self,
    cloudwatch_logs::{CloudWatchLogs, Rejected},
};
use crate::telemetry::stats;
use crate::telemetry::stop::Stop;

/// Where a source's batches go: CloudWatch Logs in bosund, an in-memory sink in tests.
pub(crate) trait LogSink {
    /// Sends `batch` to `stream`, creating the stream when missing. `Ok`: accepted, except the
    /// events counted in [`Rejected`] (outside the time window the service accepts; they are
    /// never sent again). `Err`: not accepted, with what failed; the shipper sends the same
    /// batch again after a backoff. Every error is retried: a missing permission, a missing
    /// group or an unreachable endpoint may be fixed while bosund runs.
    async fn put(&mut self, stream: &str, batch: &LogBatch) -> Result<Rejected, String>;
}

impl LogSink for CloudWatchLogs {
    async fn put(&mut self, stream: &str, batch: &LogBatch) -> Result<Rejected, String> {
        let events = batch
            .events
            .iter()
            .map(|e| (e.timestamp_ms, e.message.as_str()));
        CloudWatchLogs::put(self, stream, events).await
    }
}

/// Events waiting for one stream.
#[derive(Debug, Default)]
struct StreamQueue {
    pending: VecDeque<LogEvent>,
    bytes: usize,
    /// When the oldest event waiting was queued (the start of its flush interval).
    oldest: Option<Instant>,
}

impl StreamQueue {
    fn push(&mut self, e: LogEvent, now: Instant) {
        self.bytes += e.cost();
        self.oldest.get_or_insert(now);
        self.pending.push_back(e);
    }

    /// Whether a batch is due: a full one, the oldest event waited `flush`, or stopping.
    fn ready(&self, flush: Duration, now: Instant, stopping: bool) -> bool {
        !self.pending.is_empty()
            && (stopping
                || self.bytes >= MAX_BATCH_BYTES
                || self.pending.len() >= MAX_BATCH_EVENTS
                || self.oldest.is_some_and(|o| now.duration_since(o) >= flush))
    }

    fn take(&mut self, now: Instant) -> LogBatch {
        let b = LogBatch::take(&mut self.pending);
        self.bytes -= b.bytes;
        self.oldest = (!self.pending.is_empty()).then_some(now);
        b
    }
}

/// A source's events on their way to the sink: filtered, timestamped, queued per stream,
/// sent in batches.
pub(crate) struct Shipper<S> {
    cfg: LogSourceConfig,
    filter: Filter,
    streams: BTreeMap<String, StreamQueue>,
    sink: S,
    budget: usize,
    queued: usize,
}

impl<S: LogSink> Shipper<S> {
    /// A shipper for the source `cfg` (its id, filters, timestamp rule and flush interval),
    /// sending to `sink`, holding at most about `budget` bytes of events.
    pub(crate) fn new(cfg: LogSourceConfig, sink: S, budget: usize) -> Self {
        Self {
            filter: Filter {
                include: cfg.include.clone(),
                exclude: cfg.exclude.clone(),
            },
            cfg,
            streams: BTreeMap::new(),
            sink,
            budget,
            queued: 0,
        }
    }

    /// The source's configuration.
    pub(crate) fn cfg(&self) -> &LogSourceConfig {
        &self.cfg
    }

    /// Queues an event for `stream`: dropped when the filter says so, its time from `ts`, else
    /// the source's timestamp rule, else now; split into marked parts when too large.
    pub(crate) fn emit(&mut self, stream: &str, text: String, ts: Option<i64>, origin: Origin) {
        if !self.filter.keeps(&text) {
            // A dropped event still moves the checkpoint, through an empty marker-less ack:
            // the next accepted event of the file carries a later offset anyway.
            return;
        }
        let ts = ts
            .or_else(|| {
                self.cfg
                    .timestamp
                    .as_ref()
                    .and_then(|r| event::extract_timestamp(r, &text))
            })
            .unwrap_or_else(now_ms);
        let now = Instant::now();
        let q = self.streams.entry(stream.to_string()).or_default();
        let parts = split_oversize(text, MAX_EVENT_BYTES);
        if parts.len() > 1 {
            stats::add(&stats::STATS.log_events_split, 1);
        }
        for message in parts {
            let e = LogEvent {
                timestamp_ms: ts,
                message,
                origin: origin.clone(),
            };
            self.queued += e.cost();
            q.push(e, now);
        }
    }

    /// Whether the queued events reached the budget (the source stops reading until sent).
    pub(crate) fn full(&self) -> bool {
        self.queued >= self.budget
    }

    /// Whether no event is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Whether events of `stream` are waiting.
    pub(crate) fn holds(&self, stream: &str) -> bool {
        self.streams.contains_key(stream)
    }

    /// How long after `now` the next batch is due by the flush interval; `None` when nothing
    /// is waiting.
    pub(crate) fn until_flush(&self, now: Instant) -> Option<Duration> {
        self.streams
            .values()
            .filter_map(|q| q.oldest)
            .map(|o| {
                self.cfg
                    .flush_interval
                    .saturating_sub(now.duration_since(o))
            })
            .min()
    }

    /// Publishes the queue's gauges (bytes waiting, age of the oldest) for `GET /metrics`.
    pub(crate) fn publish_gauges(&self) {
        let now = Instant::now();
        let lag = self
            .streams
            .values()
            .filter_map(|q| q.oldest)
            .map(|o| now.duration_since(o))
            .max()
            .unwrap_or_default();
        stats::set_source(&self.cfg.id, self.queued as u64, lag);
    }

    /// Sends every batch that is due (all that is queued once stopping), stream by stream in
    /// name order; returns the acknowledgements of the accepted batches in the order they
    /// were accepted, or `None` when stopped before a batch was accepted (then nothing that
    /// was not accepted may be checkpointed; the caller stops).
    pub(crate) async fn send_ready(&mut self, stop: &mut Stop) -> Option<Vec<Acks>> {
        let mut acks = Vec::new();
        let names: Vec<String> = self.streams.keys().cloned().collect();
        for name in names {
            loop {
                let now = Instant::now();
                let stopping = stop.borrow().is_some();
                let Some(q) = self.streams.get_mut(&name) else {
                    break;
                };
                if !q.ready(self.cfg.flush_interval, now, stopping) {
                    break;
                }
                let batch = q.take(now);
                if q.pending.is_empty() {
                    self.streams.remove(&name);
                }
                self.queued = self.queued.saturating_sub(batch.bytes);
                let accepted = self.deliver(&name, &batch, stop).await;
                if !accepted {
                    return None;
                }
                acks.push(batch.acks());
            }
        }
        Some(acks)
    }

    /// Sends one batch until accepted (backoff with jitter); `false` when the stop deadline
    /// came first, or the stop channel closed.
    async fn deliver(&mut self, stream: &str, batch: &LogBatch, stop: &mut Stop) -> bool {
        let mut delays = sinks::backoff();
        loop {
            match self.sink.put(stream, batch).await {
                Ok(rejected) => {
                    let n = batch.events.len() as u64;
                    let s = &stats::STATS;
                    stats::add(&s.log_events_shipped, n);
                    stats::add(&s.log_bytes_shipped, batch.bytes as u64);
                    let refused = rejected.too_old + rejected.too_new + rejected.expired;
                    if refused > 0 {
                        stats::add(&s.log_rejected_too_old, rejected.too_old as u64);
                        stats::add(&s.log_rejected_too_new, rejected.too_new as u64);
                        stats::add(&s.log_rejected_expired, rejected.expired as u64);
                        tracing::warn!(
                            source = %self.cfg.id,
                            stream,
                            too_old = rejected.too_old,
                            too_new = rejected.too_new,
                            expired = rejected.expired,
                            "CloudWatch Logs refused events outside its time window (more than 14 days old, past the retention, or over 2 hours ahead); they are not retried: check the host clock and the timestamp_format"
                        );
                    }
                    return true;
                }
                Err(e) => {
                    stats::add(&stats::STATS.log_errors, 1);
                    let delay = delays.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(source = %self.cfg.id, "{e}; retrying in {delay:?}");
                    let deadline = *stop.borrow();
                    if let Some(d) = deadline
                        && Instant::now() + delay > Instant::from_std(d)
                    {
                        tracing::warn!(
                            source = %self.cfg.id,
                            "stopping with {} events unsent; they are sent again after the restart",
                            batch.events.len()
                        );
                        return false;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        changed = stop.changed() => {
                            if changed.is_err() {
                                return false;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use tokio::sync::watch;

    use super::*;
    use crate::telemetry::config::{DEFAULT_STREAM, LogKind};
    use crate::telemetry::logs::event::FileId;

    const FLUSH: Duration = Duration::from_secs(5);

    /// What the in-memory sink saw.
    #[derive(Debug, Default)]
    struct Seen {
        /// Every call: when, to which stream, the messages, and whether it was accepted.
        calls: Vec<(Instant, String, Vec<String>, bool)>,
        /// Calls still to fail before the sink accepts.
        failures_left: usize,
        /// What each accepted call reports as refused.
        rejected: Rejected,
    }

    /// A sink that records every call and fails the first `failures_left`.
    #[derive(Clone, Default)]
    struct MemorySink(Rc<RefCell<Seen>>);

    impl MemorySink {
        fn failing(n: usize) -> Self {
            let s = MemorySink::default();
            s.0.borrow_mut().failures_left = n;
            s
        }

        /// (stream, messages) of the accepted calls, in order.
        fn accepted(&self) -> Vec<(String, Vec<String>)> {
            let seen = self.0.borrow();
            let ok = seen.calls.iter().filter(|c| c.3);
            ok.map(|c| (c.1.clone(), c.2.clone())).collect()
        }

        fn attempts(&self) -> Vec<Instant> {
            self.0.borrow().calls.iter().map(|c| c.0).collect()
        }
    }

    impl LogSink for MemorySink {
        async fn put(&mut self, stream: &str, batch: &LogBatch) -> Result<Rejected, String> {
            let mut seen = self.0.borrow_mut();
            let ok = seen.failures_left == 0;
            seen.failures_left = seen.failures_left.saturating_sub(1);
            let messages = batch.events.iter().map(|e| e.message.clone()).collect();
            seen.calls
                .push((Instant::now(), stream.to_string(), messages, ok));
            if ok {
                Ok(seen.rejected)
            } else {
                Err(format!("PutLogEvents to g/{stream}: service unavailable"))
            }
        }
    }

    fn source() -> LogSourceConfig {
        LogSourceConfig {
            id: "file:/var/log/app.log".into(),
            kind: LogKind::File,
            path: "/var/log/app.log".into(),
            log_group: "g".into(),
            log_stream: DEFAULT_STREAM.into(),
            multiline_start: None,
            timestamp: None,
            include: Vec::new(),
            exclude: Vec::new(),
            retention_days: None,
            flush_interval: FLUSH,
            instance_id: None,
        }
    }

    fn shipper(sink: &MemorySink) -> Shipper<MemorySink> {
        Shipper::new(source(), sink.clone(), 2 * MAX_BATCH_BYTES)
    }

    /// Event `end` of the file: its text is `line <end>`, its position `end`.
    fn emit_line(s: &mut Shipper<MemorySink>, stream: &str, end: u64) {
        let origin = Origin::File {
            id: FileId { dev: 1, ino: 7 },
            generation: 0,
            end,
        };
        s.emit(stream, format!("line {end}"), Some(1_000), origin);
    }

    fn running() -> (watch::Sender<Option<std::time::Instant>>, Stop) {
        watch::channel(None)
    }

    /// The furthest file position each ack acknowledges, in order.
    fn ends(acks: &[Acks]) -> Vec<u64> {
        acks.iter()
            .map(|a| a.files.values().copied().max().unwrap_or(0))
            .collect()
    }

    fn lines(ends: impl IntoIterator<Item = u64>) -> Vec<String> {
        ends.into_iter().map(|e| format!("line {e}")).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_for_the_flush_interval_then_go_in_one_batch_per_stream() {
        let sink = MemorySink::default();
        let mut s = shipper(&sink);
        let (_tx, mut stop) = running();
        emit_line(&mut s, "b", 3);
        emit_line(&mut s, "a", 1);
        emit_line(&mut s, "a", 2);

        assert_eq!(s.send_ready(&mut stop).await, Some(vec![]));
        tokio::time::advance(FLUSH - Duration::from_millis(1)).await;
        assert_eq!(s.send_ready(&mut stop).await, Some(vec![]));
        assert!(
            sink.attempts().is_empty(),
            "nothing is sent before the interval"
        );
        assert_eq!(
            s.until_flush(Instant::now()),
            Some(Duration::from_millis(1))
        );

        tokio::time::advance(Duration::from_millis(1)).await;
        let acks = s.send_ready(&mut stop).await.expect("accepted");
        assert_eq!(
            sink.accepted(),
            vec![("a".into(), lines([1, 2])), ("b".into(), lines([3]))]
        );
        assert_eq!(ends(&acks), vec![2, 3]);
        assert!(s.is_empty() && s.until_flush(Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_and_the_rest_waits_for_the_interval() {
        let sink = MemorySink::default();
        let mut s = shipper(&sink);
        let (_tx, mut stop) = running();
        for end in 1..=MAX_BATCH_EVENTS as u64 + 2 {
            emit_line(&mut s, "a", end);
        }

        let acks = s.send_ready(&mut stop).await.expect("accepted");
        assert_eq!(ends(&acks), vec![MAX_BATCH_EVENTS as u64]);
        assert!(s.holds("a"), "two events wait for their interval");

        tokio::time::advance(FLUSH).await;
        let acks = s.send_ready(&mut stop).await.expect("accepted");
        let n = MAX_BATCH_EVENTS as u64;
        assert_eq!(ends(&acks), vec![n + 2]);
        assert_eq!(sink.accepted()[1].1, lines([n + 1, n + 2]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_sink_is_retried_with_growing_delays_and_nothing_is_acked_until_accepted() {
        let sink = MemorySink::failing(4);
        let mut s = shipper(&sink);
        let (_tx, mut stop) = running();
        emit_line(&mut s, "a", 1);
        tokio::time::advance(FLUSH).await;
        let start = Instant::now();

        let mut send = std::pin::pin!(s.send_ready(&mut stop));
        // The second retry comes 600 ms after the first attempt at the earliest.
        let early = tokio::time::timeout(Duration::from_millis(590), &mut send).await;
        assert!(early.is_err(), "no acknowledgement while the sink fails");
        assert_eq!(sink.attempts().len(), 2);
        assert!(sink.accepted().is_empty());

        let acks = send.await.expect("accepted in the end");
        assert_eq!(ends(&acks), vec![1], "acknowledged once accepted");
        assert_eq!(sink.accepted(), vec![("a".into(), lines([1]))]);
        let times = sink.attempts();
        assert_eq!(times.len(), 5, "the same batch until accepted");
        assert_eq!(times[0], start, "the first attempt at once");
        // Exponential from 200 ms, each delay plus up to as much again of jitter.
        for (i, w) in times.windows(2).enumerate() {
            let base = Duration::from_millis(200) * 2u32.pow(i as u32);
            let gap = w[1] - w[0];
            assert!(gap >= base && gap <= 2 * base, "retry {i} after {gap:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acknowledgements_come_in_the_order_batches_were_accepted() {
        let sink = MemorySink::failing(1);
        let mut s = shipper(&sink);
        let (_tx, mut stop) = running();
        let n = MAX_BATCH_EVENTS as u64;
        for end in 1..=2 * n + 5 {
            emit_line(&mut s, "a", end);
        }
        for end in [100_001, 100_002] {
            emit_line(&mut s, "b", end);
        }
        tokio::time::advance(FLUSH).await;

        // The first batch fails once and is sent again before the second; the five left of
        // "a" start a new interval when the second batch is cut.
        let acks = s.send_ready(&mut stop).await.expect("accepted");
        assert_eq!(ends(&acks), vec![n, 2 * n, 100_002]);
        tokio::time::advance(FLUSH).await;
        let acks = s.send_ready(&mut stop).await.expect("accepted");
        assert_eq!(ends(&acks), vec![2 * n + 5]);

        let sizes: Vec<(String, usize)> = sink
            .accepted()
            .into_iter()
            .map(|(stream, m)| (stream, m.len()))
            .collect();
        let full = MAX_BATCH_EVENTS;
        let expected = [("a", full), ("a", full), ("b", 2), ("a", 5)];
        assert_eq!(sizes, expected.map(|(s, n)| (s.to_string(), n)));
        let first = &sink.accepted()[0].1;
        assert_eq!(first[0], "line 1", "lines in the order read");
        assert_eq!(first[full - 1], format!("line {n}"));
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_while_the_sink_fails_gives_up_by_the_deadline_and_acks_nothing() {
        let sink = MemorySink::failing(usize::MAX);
        let mut s = shipper(&sink);
        let (tx, mut stop) = running();
        emit_line(&mut s, "a", 1);
        tokio::time::advance(FLUSH).await;
        let deadline = Instant::now() + Duration::from_secs(3);

        let stopper = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            tx.send(Some(deadline.into_std()))
                .expect("the shipper listens");
        };
        let (sent, ()) = tokio::join!(s.send_ready(&mut stop), stopper);

        assert_eq!(sent, None, "stopped before the batch was accepted");
        assert!(Instant::now() <= deadline, "gave up by the deadline");
        assert!(sink.attempts().len() >= 3 && sink.accepted().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_sends_what_is_queued_without_waiting_for_the_interval() {
        let sink = MemorySink::default();
        let mut s = shipper(&sink);
        let (tx, mut stop) = running();
        emit_line(&mut s, "a", 1);
        tx.send(Some((Instant::now() + FLUSH).into_std())).unwrap();

        let acks = s.send_ready(&mut stop).await.expect("accepted");
        assert_eq!(ends(&acks), vec![1]);
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn events_refused_as_outside_the_time_window_are_acked_not_retried() {
        let sink = MemorySink::default();
        sink.0.borrow_mut().rejected = Rejected {
            too_old: 1,
            ..Rejected::default()
        };
        let mut s = shipper(&sink);
        let (_tx, mut stop) = running();
        emit_line(&mut s, "a", 1);
        tokio::time::advance(FLUSH).await;

        let acks = s.send_ready(&mut stop).await.expect("accepted");
        assert_eq!(ends(&acks), vec![1]);
        assert_eq!(sink.attempts().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn filtered_events_are_not_queued_and_large_ones_are_split() {
        let sink = MemorySink::default();
        let mut cfg = source();
        cfg.exclude = vec![crate::telemetry::config::Pattern(
            regex::Regex::new("^DEBUG").unwrap(),
        )];
        let mut s = Shipper::new(cfg, sink.clone(), 4 * MAX_BATCH_BYTES);
        let (_tx, mut stop) = running();
        let origin = Origin::Journal {
            seq: 1,
            cursor: "c1".into(),
        };
        s.emit("a", "DEBUG noise".into(), None, origin.clone());
        assert!(s.is_empty());
        s.emit("a", "x".repeat(MAX_EVENT_BYTES + 1), None, origin);
        tokio::time::advance(FLUSH).await;

        let acks = s.send_ready(&mut stop).await.expect("accepted");
        assert_eq!(sink.accepted()[0].1.len(), 2, "split in two parts");
        assert_eq!(acks[0].cursor, Some((1, "c1".to_string())));
    }
}
