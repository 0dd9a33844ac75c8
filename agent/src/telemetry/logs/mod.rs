//! Log sources → CloudWatch Logs. One task per `[[logs]]` entry; each reads, batches and sends
//! in turn, so a slow or absent CloudWatch stops the reading (the files are the buffer) and
//! memory stays bounded by the source's share of the budget.
//!
//! Invariant: a position (file offset, journald cursor) is written to the journal only after
//! PutLogEvents accepted every event before it. After a crash the source resumes there: lines
//! are sent again at most once per batch in flight, never lost.

pub mod batch;
pub mod cri;
pub mod event;
pub mod file;
pub mod journald;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::journal::{FileCheckpoint, Journal};
use crate::telemetry::config::{LogKind, LogSourceConfig, render_stream};
use crate::telemetry::sinks::{self, cloudwatch_logs::CloudWatchLogs};
use crate::telemetry::stats;
use batch::{Acks, LogBatch, MAX_BATCH_BYTES, MAX_BATCH_EVENTS};
use event::{Assembler, FileId, Filter, LogEvent, MAX_EVENT_BYTES, Origin, now_ms, split_oversize};
use file::{Line, Tail};

/// How often files are looked at when idle.
pub const POLL: Duration = Duration::from_millis(250);
/// How often the glob is expanded again for new files.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// Bytes read from one file per turn.
const READ_TURN: usize = 256 * 1024;

/// Who this host is, for stream names.
#[derive(Debug, Clone)]
pub struct Identity {
    /// EC2 instance id (or the configured one, or the host name).
    pub instance_id: String,
    /// Host name.
    pub hostname: String,
}

/// The stop signal: `None` while running, `Some(deadline)` once stopping (flush until then).
pub type Stop = watch::Receiver<Option<Instant>>;

/// Events waiting for one stream.
#[derive(Debug, Default)]
struct StreamQueue {
    pending: VecDeque<LogEvent>,
    bytes: usize,
    oldest: Option<Instant>,
}

impl StreamQueue {
    fn push(&mut self, e: LogEvent, now: Instant) {
        self.bytes += e.cost();
        self.oldest.get_or_insert(now);
        self.pending.push_back(e);
    }

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

/// How a file's lines become events.
#[derive(Debug)]
enum Decoder {
    Plain(Assembler),
    Cri(cri::CriJoiner),
}

#[derive(Debug)]
struct Tracked {
    tail: Tail,
    decoder: Decoder,
}

/// Shared by the pieces of a source: config, filter, who we are, the events waiting.
struct Shipper {
    cfg: LogSourceConfig,
    filter: Filter,
    streams: BTreeMap<String, StreamQueue>,
    sink: CloudWatchLogs,
    budget: usize,
    queued: usize,
}

impl Shipper {
    fn new(cfg: LogSourceConfig, sink: CloudWatchLogs, budget: usize) -> Self {
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

    /// Queues an event (filtered, timestamped, split when too large).
    fn emit(&mut self, stream: &str, text: String, ts: Option<i64>, origin: Origin, now: Instant) {
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

    fn full(&self) -> bool {
        self.queued >= self.budget
    }

    fn publish_gauges(&self, now: Instant) {
        let lag = self
            .streams
            .values()
            .filter_map(|q| q.oldest)
            .map(|o| now.duration_since(o))
            .max()
            .unwrap_or_default();
        stats::set_source(&self.cfg.id, self.queued as u64, lag);
    }

    /// Sends every ready batch; returns the acknowledgements, or `None` when stopped before
    /// a batch was accepted.
    async fn send_ready(&mut self, stop: &mut Stop) -> Option<Vec<Acks>> {
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
    /// came first.
    async fn deliver(&mut self, stream: &str, batch: &LogBatch, stop: &mut Stop) -> bool {
        let mut delays = sinks::backoff();
        loop {
            match self
                .sink
                .put(&self.cfg.log_group, stream, self.cfg.retention_days, batch)
                .await
            {
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
                        && Instant::now() + delay > d
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

/// Waits for `d` or a stop request; `false` when the stop channel is gone.
async fn pause(d: Duration, stop: &mut Stop) -> bool {
    if stop.borrow().is_some() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        changed = stop.changed() => changed.is_ok(),
    }
}

/// Runs one file or CRI source until stopped.
pub async fn run_files(
    cfg: LogSourceConfig,
    ident: Identity,
    journal: Rc<RefCell<Journal>>,
    sink: CloudWatchLogs,
    budget: usize,
    mut stop: Stop,
) {
    let mut src = FileSource {
        shipper: Shipper::new(cfg, sink, budget),
        ident,
        tails: BTreeMap::new(),
    };
    src.resume(&journal.borrow());
    let mut last_discover: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let stopping = stop.borrow().is_some();
        if src.check_rotation(now)
            || last_discover.is_none_or(|t| now.duration_since(t) >= DISCOVER_EVERY)
        {
            src.discover(now, &journal);
            last_discover = Some(now);
        }
        let more = if stopping {
            false
        } else {
            src.read_all(now, &journal)
        };
        src.flush_idle(now, stopping);
        src.shipper.publish_gauges(now);
        match src.shipper.send_ready(&mut stop).await {
            Some(acks) => src.ack(acks, &journal),
            None => break,
        }
        src.close_finished(Instant::now(), &journal);
        if stopping && src.shipper.streams.is_empty() {
            break;
        }
        if !more && !pause(POLL, &mut stop).await {
            break;
        }
    }
    stats::set_source(&src.shipper.cfg.id, 0, Duration::ZERO);
}

struct FileSource {
    shipper: Shipper,
    ident: Identity,
    tails: BTreeMap<FileId, Tracked>,
}

impl FileSource {
    fn decoder(&self) -> Decoder {
        match self.shipper.cfg.kind {
            LogKind::Cri => Decoder::Cri(cri::CriJoiner::default()),
            _ => Decoder::Plain(Assembler::new(self.shipper.cfg.multiline_start.clone())),
        }
    }

    fn stream_for(&self, path: &std::path::Path) -> String {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut vars: Vec<(&str, String)> = vec![
            ("instance_id", self.ident.instance_id.clone()),
            ("hostname", self.ident.hostname.clone()),
            ("file", file),
        ];
        if let Some((ns, pod, container)) = file::pod_of(path) {
            vars.push(("namespace", ns));
            vars.push(("pod", pod));
            vars.push(("container", container));
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        render_stream(&self.shipper.cfg.log_stream, &vars)
    }

    fn track(&mut self, mut tail: Tail, stream: Option<String>) {
        tail.stream = stream.unwrap_or_else(|| self.stream_for(&tail.path));
        let decoder = self.decoder();
        self.tails.insert(tail.id, Tracked { tail, decoder });
    }

    /// Picks up where the journal says each file was left, including files renamed or copied
    /// while bosund was not running.
    fn resume(&mut self, journal: &Journal) {
        let id = self.shipper.cfg.id.clone();
        let checkpoints = match journal.file_checkpoints(&id) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(source = %id, "reading log checkpoints: {e:#}; files are read from their start");
                Vec::new()
            }
        };
        let matched = file::glob(&self.shipper.cfg.path);
        let now = Instant::now();
        for cp in checkpoints {
            let tracked: BTreeMap<FileId, ()> = self.tails.keys().map(|k| (*k, ())).collect();
            match file::locate(&cp, &tracked) {
                Some((path, _)) => match Tail::open(&path, cp.offset, now) {
                    Ok(mut tail) => {
                        // A file no longer at a matched path (rotated while down) is drained.
                        let stream = if matched.contains(&path) {
                            None
                        } else {
                            // Rotated while bosund was down: drained into the stream of the
                            // name it was read under, which its checkpoint keeps.
                            tail.rotated = Some(now);
                            tail.path = PathBuf::from(&cp.path);
                            Some(self.stream_for(&tail.path))
                        };
                        tracing::debug!(source = %id, path = %path.display(), offset = cp.offset, "resuming");
                        self.track(tail, stream);
                    }
                    Err(e) => {
                        tracing::warn!(source = %id, path = %path.display(), "cannot reopen: {e}")
                    }
                },
                None => {
                    tracing::info!(source = %id, path = %cp.path, "a checkpointed file is gone; forgetting it");
                    let _ = journal.forget_file_checkpoint(&id, cp.dev, cp.ino);
                }
            }
        }
    }

    /// Marks tails whose path now names another file (or nothing) as rotated; `true` when
    /// one was found (look for the new file at once).
    fn check_rotation(&mut self, now: Instant) -> bool {
        let mut any = false;
        for t in self.tails.values_mut() {
            if t.tail.rotated.is_some() {
                continue;
            }
            let same = std::fs::metadata(&t.tail.path)
                .map(|m| file::file_id(&m) == t.tail.id)
                .unwrap_or(false);
            if !same {
                t.tail.rotated = Some(now);
                any = true;
            }
        }
        any
    }

    /// Records where a file is being read from before anything of it is accepted, so a
    /// rotation while bosund is down still finds it (by inode) after the restart.
    fn register(&mut self, id: FileId, journal: &Rc<RefCell<Journal>>) {
        let Some(t) = self.tails.get_mut(&id) else {
            return;
        };
        let cp = t.tail.checkpoint();
        if let Err(e) = journal
            .borrow_mut()
            .save_file_checkpoints(&self.shipper.cfg.id, &[cp])
        {
            tracing::error!(source = %self.shipper.cfg.id, "saving a log checkpoint: {e:#}");
        }
    }

    /// Starts tailing files newly matching the glob (from their start).
    fn discover(&mut self, now: Instant, journal: &Rc<RefCell<Journal>>) {
        for path in file::glob(&self.shipper.cfg.path) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = file::file_id(&meta);
            if let Some(t) = self.tails.get_mut(&id) {
                // Known (maybe renamed into another matched name): keep reading it.
                if t.tail.rotated.is_some() && t.tail.path != path {
                    t.tail.path = path;
                }
                continue;
            }
            match Tail::open(&path, 0, now) {
                Ok(tail) => {
                    tracing::info!(source = %self.shipper.cfg.id, path = %path.display(), "tailing");
                    self.track(tail, None);
                    self.register(id, journal);
                }
                Err(e) => {
                    tracing::warn!(source = %self.shipper.cfg.id, path = %path.display(), "cannot open: {e}")
                }
            }
        }
    }

    /// Reads every file a turn; `true` when some file has more waiting.
    ///
    /// A stream's lines keep their order across a rename rotation: rotated files are read
    /// first (oldest rotation first), and a stream's current file waits while a rotated file
    /// of the same stream still has more to read. (Reading in inode order interleaved the new
    /// file's first lines with the old file's last ones whenever the new inode sorted first.)
    fn read_all(&mut self, now: Instant, journal: &Rc<RefCell<Journal>>) -> bool {
        let mut more = false;
        let mut ids: Vec<FileId> = self.tails.keys().copied().collect();
        ids.sort_by_key(|id| {
            let rotated = self.tails[id].tail.rotated;
            (rotated.is_none(), rotated)
        });
        let mut behind: Vec<String> = Vec::new();
        let mut lines = Vec::new();
        for id in ids {
            if self.shipper.full() {
                return true;
            }
            let Some(t) = self.tails.get_mut(&id) else {
                continue;
            };
            if t.tail.rotated.is_none() && behind.contains(&t.tail.stream) {
                more = true;
                continue;
            }
            lines.clear();
            let outcome = match t.tail.read(READ_TURN, now, &mut lines) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(path = %t.tail.path.display(), "reading: {e}");
                    continue;
                }
            };
            more |= outcome.more;
            if outcome.more && t.tail.rotated.is_some() {
                behind.push(t.tail.stream.clone());
            }
            let generation = t.tail.generation;
            let stream = t.tail.stream.clone();
            let mut events = Vec::new();
            for Line { text, end } in lines.drain(..) {
                decode(&mut t.decoder, text, end, now, &mut events);
            }
            for (ts, text, end) in events {
                let origin = Origin::File {
                    id,
                    generation,
                    end,
                };
                self.shipper.emit(&stream, text, ts, origin, now);
            }
            if outcome.truncated {
                self.truncated(id, now, journal);
            }
        }
        more
    }

    /// Copytruncate (or a shrink): read the rest from the copy, then start over.
    fn truncated(&mut self, id: FileId, now: Instant, journal: &Rc<RefCell<Journal>>) {
        let Some(t) = self.tails.get_mut(&id) else {
            return;
        };
        let generation = t.tail.generation;
        let stream = t.tail.stream.clone();
        let held = flush_decoder(&mut t.decoder);
        let from = t.tail.line_start();
        let cp = FileCheckpoint {
            offset: from,
            ..t.tail.checkpoint()
        };
        let path = t.tail.path.clone();
        tracing::info!(path = %path.display(), at = from, "file truncated (copytruncate): reading the rest from the copy, then from the start");
        if let Err(e) = t.tail.restart() {
            tracing::warn!(path = %path.display(), "after truncation: {e}");
        }
        if let Some((text, end)) = held {
            let origin = Origin::File {
                id,
                generation,
                end,
            };
            self.shipper.emit(&stream, text, None, origin, now);
        }
        let tracked: BTreeMap<FileId, ()> = self.tails.keys().map(|k| (*k, ())).collect();
        match file::locate(&cp, &tracked) {
            Some((copy, _)) => match Tail::open(&copy, from, now) {
                Ok(mut tail) => {
                    tail.rotated = Some(now);
                    // Checkpointed under the original name: its stream after a restart.
                    tail.path = path.clone();
                    let copy_id = tail.id;
                    self.track(tail, Some(stream));
                    self.register(copy_id, journal);
                    // Its lines come before what is written to the truncated file now: queue
                    // them first, so read times (and CloudWatch's order) follow the file.
                    self.drain_now(copy_id, now);
                }
                Err(e) => tracing::warn!(path = %copy.display(), "cannot open the copy: {e}"),
            },
            None => tracing::warn!(
                path = %path.display(),
                "truncated with unread lines and no copy found next to it: lines written between the last read and the truncation are lost (prefer rotation by rename)"
            ),
        }
    }

    /// Reads a (rotated) file to its current end at once, final partial line included.
    fn drain_now(&mut self, id: FileId, now: Instant) {
        let Some(t) = self.tails.get_mut(&id) else {
            return;
        };
        let mut lines = Vec::new();
        loop {
            match t.tail.read(READ_TURN, now, &mut lines) {
                Ok(o) if o.more => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(path = %t.tail.path.display(), "reading: {e}");
                    break;
                }
            }
        }
        lines.extend(t.tail.take_partial());
        let mut events = Vec::new();
        for Line { text, end } in lines {
            decode(&mut t.decoder, text, end, now, &mut events);
        }
        if let Some((text, end)) = flush_decoder(&mut t.decoder) {
            events.push((None, text, end));
        }
        let (generation, stream) = (t.tail.generation, t.tail.stream.clone());
        for (ts, text, end) in events {
            let origin = Origin::File {
                id,
                generation,
                end,
            };
            self.shipper.emit(&stream, text, ts, origin, now);
        }
    }

    /// Completes multi-line events that waited long enough (all when stopping, and the last
    /// line of a rotated file that ended without a newline).
    fn flush_idle(&mut self, now: Instant, stopping: bool) {
        let idle = if stopping {
            Duration::ZERO
        } else {
            self.shipper.cfg.flush_interval
        };
        let ids: Vec<FileId> = self.tails.keys().copied().collect();
        for id in ids {
            let Some(t) = self.tails.get_mut(&id) else {
                continue;
            };
            let mut events = Vec::new();
            if let Decoder::Plain(a) = &mut t.decoder
                && let Some((text, end)) = a.flush_idle(idle, now)
            {
                events.push((None, text, end));
            }
            let drained = t.tail.rotated.is_some()
                && now.duration_since(t.tail.last_growth) >= file::ROTATE_GRACE
                && t.tail.size().is_ok_and(|s| s <= t.tail.read_pos);
            if drained && let Some(Line { text, end }) = t.tail.take_partial() {
                decode(&mut t.decoder, text, end, now, &mut events);
                if let Some((text, end)) = flush_decoder(&mut t.decoder) {
                    events.push((None, text, end));
                }
            }
            let generation = t.tail.generation;
            let stream = t.tail.stream.clone();
            for (ts, text, end) in events {
                let origin = Origin::File {
                    id,
                    generation,
                    end,
                };
                self.shipper.emit(&stream, text, ts, origin, now);
            }
        }
    }

    /// Advances and journals the accepted positions.
    fn ack(&mut self, acks: Vec<Acks>, journal: &Rc<RefCell<Journal>>) {
        let mut checkpoints = Vec::new();
        for a in acks {
            for ((id, generation), end) in a.files {
                if let Some(t) = self.tails.get_mut(&id)
                    && t.tail.generation == generation
                    && end > t.tail.acked
                {
                    t.tail.acked = end;
                    checkpoints.retain(|c: &FileCheckpoint| (c.dev, c.ino) != (id.dev, id.ino));
                    checkpoints.push(t.tail.checkpoint());
                }
            }
        }
        if checkpoints.is_empty() {
            return;
        }
        if let Err(e) = journal
            .borrow_mut()
            .save_file_checkpoints(&self.shipper.cfg.id, &checkpoints)
        {
            stats::add(&stats::STATS.log_errors, 1);
            tracing::error!(source = %self.shipper.cfg.id, "saving log checkpoints: {e:#}; lines already sent may be sent again after a restart");
        }
    }

    /// Closes rotated files read to their end and accepted, and forgets their checkpoints.
    fn close_finished(&mut self, now: Instant, journal: &Rc<RefCell<Journal>>) {
        // A file with events still assembling, or filtered-out tail lines, is finished only
        // once nothing is held: filtered events never get an ack, so compare positions read.
        let done: Vec<FileId> = self
            .tails
            .iter()
            .filter(|(_, t)| {
                let holds = match &t.decoder {
                    Decoder::Plain(a) => a.holds(),
                    Decoder::Cri(c) => c.holds(),
                };
                !holds && t.tail.finished(now)
                    || (!holds
                        && t.tail.rotated.is_some()
                        && !self.shipper.streams.contains_key(&t.tail.stream)
                        && now.duration_since(t.tail.last_growth) >= file::ROTATE_GRACE
                        && t.tail.size().is_ok_and(|s| s <= t.tail.read_pos))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            if let Some(t) = self.tails.remove(&id) {
                tracing::info!(path = %t.tail.path.display(), "rotated file read to its end; closed");
                let _ =
                    journal
                        .borrow()
                        .forget_file_checkpoint(&self.shipper.cfg.id, id.dev, id.ino);
            }
        }
    }
}

fn decode(
    decoder: &mut Decoder,
    text: String,
    end: u64,
    now: Instant,
    out: &mut Vec<(Option<i64>, String, u64)>,
) {
    match decoder {
        Decoder::Plain(a) => {
            if let Some((t, e)) = a.push(text, end, now) {
                out.push((None, t, e));
            }
        }
        Decoder::Cri(j) => {
            if let Some((ts, t)) = j.push(&text) {
                out.push((ts, t, end));
            }
        }
    }
}

fn flush_decoder(decoder: &mut Decoder) -> Option<(String, u64)> {
    match decoder {
        Decoder::Plain(a) => a.flush_idle(Duration::ZERO, Instant::now()),
        Decoder::Cri(_) => None,
    }
}

/// The journalctl program: `$BOSUN_JOURNALCTL` or `journalctl`.
fn journalctl() -> PathBuf {
    std::env::var_os("BOSUN_JOURNALCTL")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("journalctl"))
}

/// Runs the journald source until stopped: `journalctl -o json --follow` after the last
/// accepted cursor; restarted (after the last cursor read) when it exits.
pub async fn run_journald(
    cfg: LogSourceConfig,
    ident: Identity,
    journal: Rc<RefCell<Journal>>,
    sink: CloudWatchLogs,
    budget: usize,
    mut stop: Stop,
) {
    use tokio::io::AsyncBufReadExt;
    let id = cfg.id.clone();
    let stream = render_stream(
        &cfg.log_stream,
        &[
            ("instance_id", &ident.instance_id),
            ("hostname", &ident.hostname),
        ],
    );
    let mut shipper = Shipper::new(cfg, sink, budget);
    let mut last_read = journal.borrow().log_cursor(&id).unwrap_or_else(|e| {
        tracing::error!(source = %id, "reading the journald cursor: {e:#}");
        None
    });
    let mut seq = 0u64;
    let mut restarts = sinks::backoff();
    'outer: while stop.borrow().is_none() {
        let program = journalctl();
        let mut child = match tokio::process::Command::new(&program)
            .args(journald::args(last_read.as_deref()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let d = restarts.next().unwrap_or(Duration::from_secs(30));
                tracing::error!(source = %id, "starting {}: {e}; retrying in {d:?} (is systemd's journalctl installed?)", program.display());
                if !pause(d, &mut stop).await {
                    break;
                }
                continue;
            }
        };
        let Some(stdout) = child.stdout.take() else {
            break;
        };
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        loop {
            let now = Instant::now();
            let stopping = stop.borrow().is_some();
            shipper.publish_gauges(now);
            match shipper.send_ready(&mut stop).await {
                Some(acks) => {
                    if let Some((_, cursor)) = acks
                        .into_iter()
                        .filter_map(|a| a.cursor)
                        .max_by_key(|(s, _)| *s)
                        && let Err(e) = journal.borrow().save_log_cursor(&id, &cursor)
                    {
                        tracing::error!(source = %id, "saving the journald cursor: {e:#}");
                    }
                }
                None => break 'outer,
            }
            if stopping {
                break 'outer;
            }
            let wait = shipper
                .streams
                .values()
                .filter_map(|q| q.oldest)
                .map(|o| {
                    shipper
                        .cfg
                        .flush_interval
                        .saturating_sub(now.duration_since(o))
                })
                .min()
                .unwrap_or(POLL * 4);
            if shipper.full() {
                if !pause(wait.max(Duration::from_millis(10)), &mut stop).await {
                    break 'outer;
                }
                continue;
            }
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Some(entry) = journald::parse(&line) {
                            seq += 1;
                            last_read = Some(entry.cursor.clone());
                            let origin = Origin::Journal { seq, cursor: entry.cursor };
                            shipper.emit(&stream, entry.message, entry.timestamp_ms, origin, Instant::now());
                        }
                    }
                    Ok(None) | Err(_) => {
                        let d = restarts.next().unwrap_or(Duration::from_secs(30));
                        tracing::warn!(source = %id, "journalctl ended; restarting in {d:?}");
                        let _ = child.kill().await;
                        // Flush what was read before restarting after it.
                        if let Some(acks) = shipper.send_ready(&mut stop).await
                            && let Some((_, cursor)) = acks.into_iter().filter_map(|a| a.cursor).max_by_key(|(s, _)| *s)
                        {
                            let _ = journal.borrow().save_log_cursor(&id, &cursor);
                        }
                        if !pause(d, &mut stop).await {
                            break 'outer;
                        }
                        break;
                    }
                },
                _ = tokio::time::sleep(wait) => {}
                changed = stop.changed() => if changed.is_err() { break 'outer },
            }
        }
    }
    stats::set_source(&id, 0, Duration::ZERO);
}
