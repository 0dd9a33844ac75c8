//! The file and CRI sources: files matching a glob, each read by a [`Tail`], their lines
//! decoded into events (multi-line assembly, or CRI partial lines joined), shipped, and their
//! accepted positions checkpointed in the journal.
//!
//! The source's loop, once per turn: look for rotation, expand the glob for new files (every
//! [`DISCOVER_EVERY`], at once after a rotation), read every file a turn, complete events that
//! waited long enough, send what is due, checkpoint what was accepted, close rotated files
//! read to their end. It stops reading while the shipper is full, so a slow or absent peer
//! stops the reading (the files are the buffer).
//!
//! Invariant: a file's checkpoint advances only to the end of events the sink accepted
//! (`FileSource::ack`); a file is registered in the journal before anything of it is sent, so
//! a rotation while bosund is down still finds it by identity after the restart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Identity;
use super::POLL;
use super::batch::Acks;
use super::cri;
use super::event::{Assembler, FileId, Origin};
use super::ship::{LogSink, Shipper};
use super::tail::{self, Line, Tail};
use crate::journal::{FileCheckpoint, Journal};
use crate::telemetry::config::{LogKind, LogSourceConfig, render_stream};
use crate::telemetry::stats;
use crate::telemetry::stop::{Stop, pause};

/// How often the glob is expanded again for new files.
const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// Bytes read from one file per turn.
const READ_TURN: usize = 256 * 1024;

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

/// Runs one file or CRI source until stopped, sending to `sink`, with about `budget` bytes of
/// events queued at most.
pub(crate) async fn run_files<S: LogSink>(
    cfg: LogSourceConfig,
    ident: Identity,
    journal: Rc<RefCell<Journal>>,
    sink: S,
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
        src.shipper.publish_gauges();
        match src.shipper.send_ready(&mut stop).await {
            Some(acks) => src.ack(acks, &journal),
            None => break,
        }
        src.close_finished(Instant::now(), &journal);
        if stopping && src.shipper.is_empty() {
            break;
        }
        if !more && !pause(POLL, &mut stop).await {
            break;
        }
    }
    stats::set_source(&src.shipper.cfg().id, 0, Duration::ZERO);
}

/// A file or CRI source: its shipper and the files it reads.
struct FileSource<S> {
    shipper: Shipper<S>,
    ident: Identity,
    tails: BTreeMap<FileId, Tracked>,
}

impl<S: LogSink> FileSource<S> {
    fn decoder(&self) -> Decoder {
        match self.shipper.cfg().kind {
            LogKind::Cri => Decoder::Cri(cri::CriJoiner::default()),
            _ => Decoder::Plain(Assembler::new(self.shipper.cfg().multiline_start.clone())),
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
        if let Some((ns, pod, container)) = tail::pod_of(path) {
            vars.push(("namespace", ns));
            vars.push(("pod", pod));
            vars.push(("container", container));
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        render_stream(&self.shipper.cfg().log_stream, &vars)
    }

    fn track(&mut self, mut tail: Tail, stream: Option<String>) {
        tail.stream = stream.unwrap_or_else(|| self.stream_for(&tail.path));
        let decoder = self.decoder();
        self.tails.insert(tail.id, Tracked { tail, decoder });
    }

    /// Picks up where the journal says each file was left, including files renamed or copied
    /// while bosund was not running.
    fn resume(&mut self, journal: &Journal) {
        let id = self.shipper.cfg().id.clone();
        let checkpoints = match journal.file_checkpoints(&id) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(source = %id, "reading log checkpoints: {e:#}; files are read from their start");
                Vec::new()
            }
        };
        let matched = tail::glob(&self.shipper.cfg().path);
        let now = Instant::now();
        for cp in checkpoints {
            let tracked: BTreeMap<FileId, ()> = self.tails.keys().map(|k| (*k, ())).collect();
            match tail::locate(&cp, &tracked) {
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
                .map(|m| tail::file_id(&m) == t.tail.id)
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
            .save_file_checkpoints(&self.shipper.cfg().id, &[cp])
        {
            tracing::error!(source = %self.shipper.cfg().id, "saving a log checkpoint: {e:#}");
        }
    }

    /// Starts tailing files newly matching the glob (from their start).
    fn discover(&mut self, now: Instant, journal: &Rc<RefCell<Journal>>) {
        for path in tail::glob(&self.shipper.cfg().path) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let id = tail::file_id(&meta);
            if let Some(t) = self.tails.get_mut(&id) {
                // Known (maybe renamed into another matched name): keep reading it.
                if t.tail.rotated.is_some() && t.tail.path != path {
                    t.tail.path = path;
                }
                continue;
            }
            match Tail::open(&path, 0, now) {
                Ok(tail) => {
                    tracing::info!(source = %self.shipper.cfg().id, path = %path.display(), "tailing");
                    self.track(tail, None);
                    self.register(id, journal);
                }
                Err(e) => {
                    tracing::warn!(source = %self.shipper.cfg().id, path = %path.display(), "cannot open: {e}")
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
            emit_file_events(&mut self.shipper, &stream, id, generation, events);
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
            self.shipper.emit(&stream, text, None, origin);
        }
        let tracked: BTreeMap<FileId, ()> = self.tails.keys().map(|k| (*k, ())).collect();
        match tail::locate(&cp, &tracked) {
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
        emit_file_events(&mut self.shipper, &stream, id, generation, events);
    }

    /// Completes multi-line events that waited long enough (all when stopping, and the last
    /// line of a rotated file that ended without a newline).
    fn flush_idle(&mut self, now: Instant, stopping: bool) {
        let idle = if stopping {
            Duration::ZERO
        } else {
            self.shipper.cfg().flush_interval
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
                && now.duration_since(t.tail.last_growth) >= tail::ROTATE_GRACE
                && t.tail.size().is_ok_and(|s| s <= t.tail.read_pos);
            if drained && let Some(Line { text, end }) = t.tail.take_partial() {
                decode(&mut t.decoder, text, end, now, &mut events);
                if let Some((text, end)) = flush_decoder(&mut t.decoder) {
                    events.push((None, text, end));
                }
            }
            let generation = t.tail.generation;
            let stream = t.tail.stream.clone();
            emit_file_events(&mut self.shipper, &stream, id, generation, events);
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
            .save_file_checkpoints(&self.shipper.cfg().id, &checkpoints)
        {
            stats::add(&stats::STATS.log_errors, 1);
            tracing::error!(source = %self.shipper.cfg().id, "saving log checkpoints: {e:#}; lines already sent may be sent again after a restart");
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
                        && !self.shipper.holds(&t.tail.stream)
                        && now.duration_since(t.tail.last_growth) >= tail::ROTATE_GRACE
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
                        .forget_file_checkpoint(&self.shipper.cfg().id, id.dev, id.ino);
            }
        }
    }
}

/// Hands a file's decoded events (timestamp, text, end offset) to the shipper, each marked with
/// where in which generation of the file it ends, for the checkpoint.
fn emit_file_events<S: LogSink>(
    shipper: &mut Shipper<S>,
    stream: &str,
    id: FileId,
    generation: u32,
    events: Vec<(Option<i64>, String, u64)>,
) {
    for (ts, text, end) in events {
        shipper.emit(
            stream,
            text,
            ts,
            Origin::File {
                id,
                generation,
                end,
            },
        );
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
