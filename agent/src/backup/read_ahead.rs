//! A reader on a thread of its own, a bounded number of chunks ahead of its consumer.
//!
//! `mysql_backup` streams a dump through three stages: the dump tool writing a pipe, bosund
//! reading (and scanning, [`super::dump_scan`]) it, and zstd. With the read on the compressor's
//! thread, the dump tool stalled on a full pipe whenever zstd was busy, and the scan added to
//! zstd's time: the three ran one after another more than side by side. Reading ahead on its
//! own thread lets the tool, the scan and zstd overlap, as `mysqldump | zstd` does with
//! processes. Memory stays bounded: at most `depth` chunks wait, plus one being filled.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// The consumer's end: a [`Read`] (and [`BufRead`], so a consumer can take whole chunks
/// without copying them) over the chunks the thread read. Spent chunks go back to the thread
/// to be filled again.
pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    spent: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Starts a thread reading `input` in chunks of `chunk_size` bytes (a chunk is filled before it
/// is handed over, unless the input ends), at most `depth` chunks ahead. The handle gives
/// `input` back once it ended, failed, or the [`ReadAhead`] was dropped.
pub fn read_ahead<R: Read + Send + 'static>(
    input: R,
    chunk_size: usize,
    depth: usize,
) -> io::Result<(ReadAhead, JoinHandle<R>)> {
    let (tx, rx) = sync_channel(depth);
    let (spent, recycled) = sync_channel(depth + 2);
    let handle = std::thread::Builder::new()
        .name("bosund-read-ahead".into())
        .spawn(move || fill(input, chunk_size, tx, recycled))?;
    Ok((
        ReadAhead {
            rx,
            spent,
            chunk: Vec::new(),
            pos: 0,
            done: false,
        },
        handle,
    ))
}

fn fill<R: Read>(
    mut input: R,
    chunk_size: usize,
    tx: SyncSender<io::Result<Vec<u8>>>,
    recycled: Receiver<Vec<u8>>,
) -> R {
    loop {
        // A spent chunk if there is one (already sized: no zeroing), else a new one.
        let mut chunk = recycled.try_recv().unwrap_or_default();
        chunk.resize(chunk_size, 0);
        let mut len = 0;
        let mut result = Ok(());
        while len < chunk_size {
            match input.read(&mut chunk[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        chunk.truncate(len);
        let end = len < chunk_size;
        if len > 0 && tx.send(Ok(chunk)).is_err() {
            return input; // the consumer is gone
        }
        if let Err(e) = result {
            let _ = tx.send(Err(e));
            return input;
        }
        if end {
            return input; // dropping `tx` is the end of the stream
        }
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.chunk.len() {
            if self.done {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let spent = std::mem::replace(&mut self.chunk, chunk);
                    if spent.capacity() > 0 {
                        // The thread may have ended, or have enough: either way it is fine.
                        let _ = self.spent.try_send(spent);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.chunk.len());
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out `data` a few bytes per read, then fails if told to.
    struct Dribble {
        data: Vec<u8>,
        pos: usize,
        fail_at_end: bool,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.data.len() {
                return if self.fail_at_end {
                    Err(io::Error::other("the dump broke"))
                } else {
                    Ok(0)
                };
            }
            let n = buf.len().min(7).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    #[test]
    fn every_byte_arrives_in_order_and_the_input_comes_back() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let input = Dribble {
            data: data.clone(),
            pos: 0,
            fail_at_end: false,
        };
        let (mut reader, handle) = read_ahead(input, 1000, 2).unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(handle.join().unwrap().pos, data.len());
    }

    #[test]
    fn whole_chunks_are_lent_and_spent_ones_reused() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let input = Dribble {
            data: data.clone(),
            pos: 0,
            fail_at_end: false,
        };
        let (mut reader, handle) = read_ahead(input, 4096, 2).unwrap();
        let mut got = Vec::new();
        loop {
            let chunk = reader.fill_buf().unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() == 4096 || got.len() + chunk.len() == data.len());
            got.extend_from_slice(chunk);
            let n = chunk.len();
            reader.consume(n);
        }
        assert_eq!(got, data);
        handle.join().unwrap();
    }

    #[test]
    fn an_error_reaches_the_consumer_after_the_bytes_before_it() {
        let input = Dribble {
            data: vec![1; 2500],
            pos: 0,
            fail_at_end: true,
        };
        let (mut reader, handle) = read_ahead(input, 1000, 1).unwrap();
        let mut got = Vec::new();
        let e = reader.read_to_end(&mut got).unwrap_err();
        assert_eq!(e.to_string(), "the dump broke");
        assert_eq!(got.len(), 2500);
        handle.join().unwrap();
    }

    #[test]
    fn a_consumer_that_stops_releases_the_thread() {
        let input = Dribble {
            data: vec![1; 1_000_000],
            pos: 0,
            fail_at_end: false,
        };
        let (mut reader, handle) = read_ahead(input, 1000, 1).unwrap();
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).unwrap();
        drop(reader);
        let input = handle.join().unwrap();
        assert!(input.pos < 1_000_000, "the thread read everything anyway");
    }
}
