//! [`LogBatch`]: events cut to PutLogEvents' limits. Pure; no I/O.
//!
//! Limits (PutLogEvents API reference): at most 10,000 events; at most 1,048,576 bytes counted
//! as the UTF-8 messages plus 26 bytes per event; events in chronological order; a batch may
//! not span more than 24 hours.

use std::collections::{BTreeMap, VecDeque};

use super::event::{FileId, LogEvent, Origin};

/// Most events in one request.
pub(crate) const MAX_BATCH_EVENTS: usize = 10_000;
/// Most bytes in one request (messages + 26 per event).
pub(crate) const MAX_BATCH_BYTES: usize = 1_048_576;
/// Widest time span of one request, in milliseconds (strictly under 24 h).
pub(crate) const MAX_BATCH_SPAN_MS: i64 = 24 * 3600 * 1000 - 1;

/// Events for one stream, within the limits, sorted by timestamp (stable: lines with equal
/// times keep their order).
#[derive(Debug, Default)]
pub(crate) struct LogBatch {
    /// The events, oldest first.
    pub events: Vec<LogEvent>,
    /// Their cost against [`MAX_BATCH_BYTES`].
    pub bytes: usize,
}

/// Positions a batch acknowledges once accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Acks {
    /// Per file and generation: the largest end offset in the batch.
    pub files: BTreeMap<(FileId, u32), u64>,
    /// The last journald cursor read (by reading order).
    pub cursor: Option<(u64, String)>,
}

impl LogBatch {
    /// Takes events from the front of `pending` while they fit, in reading order, then sorts
    /// them by time. Never returns an empty batch when `pending` is not empty (every event is
    /// at most [`super::event::MAX_EVENT_BYTES`]).
    pub fn take(pending: &mut VecDeque<LogEvent>) -> LogBatch {
        let mut batch = LogBatch::default();
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        while let Some(e) = pending.front() {
            let cost = e.cost();
            let (nlo, nhi) = (lo.min(e.timestamp_ms), hi.max(e.timestamp_ms));
            if !batch.events.is_empty()
                && (batch.events.len() >= MAX_BATCH_EVENTS
                    || batch.bytes + cost > MAX_BATCH_BYTES
                    || nhi - nlo > MAX_BATCH_SPAN_MS)
            {
                break;
            }
            let Some(e) = pending.pop_front() else { break };
            batch.bytes += cost;
            (lo, hi) = (nlo, nhi);
            batch.events.push(e);
        }
        batch.events.sort_by_key(|e| e.timestamp_ms);
        batch
    }

    /// What accepting this batch acknowledges.
    pub fn acks(&self) -> Acks {
        let mut acks = Acks::default();
        for e in &self.events {
            match &e.origin {
                Origin::File {
                    id,
                    generation,
                    end,
                } => {
                    let v = acks.files.entry((*id, *generation)).or_insert(0);
                    *v = (*v).max(*end);
                }
                Origin::Journal { seq, cursor } => {
                    if acks.cursor.as_ref().is_none_or(|(s, _)| seq > s) {
                        acks.cursor = Some((*seq, cursor.clone()));
                    }
                }
            }
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::logs::event::MAX_EVENT_BYTES;

    fn ev(ts: i64, len: usize, end: u64) -> LogEvent {
        LogEvent {
            timestamp_ms: ts,
            message: "x".repeat(len),
            origin: Origin::File {
                id: FileId { dev: 1, ino: 2 },
                generation: 0,
                end,
            },
        }
    }

    #[test]
    fn batches_respect_count_bytes_and_span() {
        let mut q: VecDeque<_> = (0..25_000).map(|i| ev(i, 10, i as u64)).collect();
        let b = LogBatch::take(&mut q);
        assert_eq!(b.events.len(), MAX_BATCH_EVENTS);
        assert_eq!(q.len(), 15_000);

        let mut q: VecDeque<_> = (0..10).map(|i| ev(i, MAX_EVENT_BYTES, i as u64)).collect();
        let b = LogBatch::take(&mut q);
        assert!(b.bytes <= MAX_BATCH_BYTES, "{}", b.bytes);
        assert_eq!(b.events.len(), 4);

        let day = 24 * 3600 * 1000;
        let mut q: VecDeque<_> = [ev(0, 1, 1), ev(day - 1, 1, 2), ev(day, 1, 3)].into();
        let b = LogBatch::take(&mut q);
        assert_eq!(b.events.len(), 2);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn batches_are_sorted_stably_and_ack_the_furthest_offset() {
        let mut q: VecDeque<_> = [ev(5, 1, 10), ev(3, 2, 20), ev(5, 3, 30)].into();
        let b = LogBatch::take(&mut q);
        let lens: Vec<_> = b.events.iter().map(|e| e.message.len()).collect();
        assert_eq!(lens, vec![2, 1, 3]);
        let acks = b.acks();
        assert_eq!(acks.files.values().copied().collect::<Vec<_>>(), vec![30]);
    }
}
