//! A byte stream, compressed with zstd, into one S3 object through a multipart upload, in
//! bounded memory.
//!
//! Memory: the compressor thread fills part buffers of [`PartPlan::part_size`] bytes; a buffer
//! exists only while it holds a permit of a budget of [`PartPlan::buffers`] permits, and
//! `part_size * buffers <= MEMORY_BUDGET` (24 MiB), which keeps the whole of bosund under 64 MiB
//! resident while it streams a dump of any size (`tests/backup_memory.rs` bounds its anonymous
//! memory at 48 MiB, 30 MiB measured; `scripts/bench-backup` measures the release build's whole
//! RSS, 38 MiB for a 1 GiB dump). A buffer is freed when its part is uploaded,
//! so uploads run concurrently (`buffers - 1` at most) while the next part fills, and a slow
//! network stalls the compressor (and so the dump, through its pipe) instead of growing memory.
//!
//! Visibility: the object exists only after [`MultipartUpload::complete`]. Dropping a
//! [`MultipartUpload`] that was neither completed nor aborted (error, timeout, cancellation)
//! aborts it before the drop returns, from a thread of its own.

use std::io::{BufRead, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::aws::{Aws, describe_error};

// How parts are sized is the model's: `mysql_backup`'s `max_size` is checked against it.
pub use bosun_model::backup::parts::{
    MAX_PARTS, MEMORY_BUDGET, MIN_PART_SIZE, PartPlan, plan_parts,
};

/// Bytes of input per zstd frame, at most (see [`compress`]): the read-ahead's chunk size.
pub const FRAME_SIZE: usize = 2 << 20;

/// What went into an uploaded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    /// Bytes read from the source (uncompressed).
    pub raw_size: u64,
    /// Bytes of the object (compressed).
    pub size: u64,
    /// SHA-256 of the object, lowercase hex.
    pub sha256: String,
    /// Parts uploaded.
    pub parts: usize,
}

/// Counting semaphore for part buffers, usable from a blocking thread.
struct Budget {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One part buffer's share of the [`Budget`], returned on drop.
struct Permit(Arc<Budget>);

impl Drop for Permit {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(|e| e.into_inner());
        *free += 1;
        self.0.freed.notify_one();
    }
}

impl Budget {
    /// Waits for a free buffer; `None` once `gone()` says nobody will take parts any more.
    fn acquire(self: &Arc<Self>, gone: impl Fn() -> bool) -> Option<Permit> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if gone() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Permit(Arc::clone(self)));
            }
            free = self
                .freed
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A full (or last) part on its way to S3, holding its buffer's permit.
struct Part {
    number: i32,
    data: Vec<u8>,
    _permit: Permit,
}

/// The compressor's output side: cuts the compressed stream into parts and hashes it.
struct PartSink {
    part_size: usize,
    budget: Arc<Budget>,
    tx: mpsc::UnboundedSender<Part>,
    current: Option<(Vec<u8>, Permit)>,
    next_number: i32,
    hasher: Sha256,
    size: u64,
}

impl PartSink {
    fn send_current(&mut self) -> std::io::Result<()> {
        let Some((data, permit)) = self.current.take() else {
            return Ok(());
        };
        if i64::from(self.next_number) > MAX_PARTS as i64 {
            return Err(std::io::Error::other(format!(
                "the backup is larger than {} parts of {} bytes: raise max_size",
                MAX_PARTS, self.part_size
            )));
        }
        let part = Part {
            number: self.next_number,
            data,
            _permit: permit,
        };
        self.next_number += 1;
        self.tx
            .send(part)
            .map_err(|_| std::io::Error::other("the upload stopped"))
    }
}

impl Write for PartSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.is_none() {
            let tx = &self.tx;
            let permit = self
                .budget
                .acquire(|| tx.is_closed())
                .ok_or_else(|| std::io::Error::other("the upload stopped"))?;
            self.current = Some((Vec::with_capacity(self.part_size), permit));
        }
        let Some((data, _)) = self.current.as_mut() else {
            return Ok(0);
        };
        let n = buf.len().min(self.part_size - data.len());
        data.extend_from_slice(&buf[..n]);
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        if data.len() == self.part_size {
            self.send_current()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads `input` to its end through zstd into parts. Runs on a blocking thread. `input` is a
/// [`BufRead`] so its buffers go to zstd as they are, without another copy; each buffer it
/// lends is one frame, so it should lend about [`FRAME_SIZE`] bytes at a time.
fn compress<R: BufRead>(
    mut input: R,
    level: i32,
    plan: PartPlan,
    tx: mpsc::UnboundedSender<Part>,
) -> anyhow::Result<(Streamed, R)> {
    let mut sink = PartSink {
        part_size: plan.part_size,
        budget: Arc::new(Budget {
            free: Mutex::new(plan.buffers),
            freed: Condvar::new(),
        }),
        tx,
        current: None,
        next_number: 1,
        hasher: Sha256::new(),
        size: 0,
    };
    // Each piece of input (a read-ahead chunk, [`FRAME_SIZE`]) becomes one zstd frame,
    // compressed from its own contiguous buffer; the object is the frames one after another,
    // which every zstd decoder reads as one stream. Why not one streaming frame: zstd's
    // streaming API copies input into a ring buffer and then matches across its wrap with a
    // slower variant ("extDict": 31% of a backup's CPU under perf). The zstd CLI avoids it
    // by compressing whole jobs on a worker thread (`zstd -3` 6.3 s of CPU for 1 GiB of SQL,
    // `zstd --single-thread -3` 7.8 s); zstd's own worker (zstdmt) with its default 8 MiB jobs
    // added about 30 MiB of RSS in tests/backup_memory.rs, frames need no thread or buffers of
    // their own. Frames may cost a little ratio (each starts without history); on the bench
    // data the object came out 0.8% smaller than one streamed frame.
    let mut zstd = zstd::bulk::Compressor::new(level).context("starting zstd")?;
    let mut out = Vec::new();
    let mut raw_size = 0u64;
    loop {
        let piece = match input.fill_buf() {
            Ok([]) => break,
            Ok(piece) => piece,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the dump"),
        };
        let n = piece.len();
        raw_size += n as u64;
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(n));
        zstd.compress_to_buffer(piece, &mut out)
            .context("compressing")?;
        input.consume(n);
        sink.write_all(&out).context("cutting parts")?;
    }
    sink.send_current().context("sending the last part")?;
    let streamed = Streamed {
        raw_size,
        size: sink.size,
        sha256: hex::encode(sink.hasher.finalize()),
        parts: usize::try_from(sink.next_number - 1).unwrap_or(0),
    };
    Ok((streamed, input))
}

/// What a new object carries besides its bytes.
#[derive(Debug, Clone, Default)]
pub struct ObjectOptions {
    /// `Content-Type` (S3's default, `binary/octet-stream`, when `None`).
    pub content_type: Option<String>,
    /// Storage class (the bucket's default, STANDARD, when `None`).
    pub storage_class: Option<aws_sdk_s3::types::StorageClass>,
    /// User metadata (`x-amz-meta-*`).
    pub metadata: std::collections::HashMap<String, String>,
}

/// An open multipart upload. Dropped without [`complete`](Self::complete) or
/// [`abort`](Self::abort), it is aborted in the background (see the module doc).
pub struct MultipartUpload {
    aws: Aws,
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
    open: bool,
}

impl MultipartUpload {
    /// Starts an upload of a zstd stream to `s3://bucket/key`.
    pub async fn create(aws: &Aws, bucket: &str, key: &str) -> anyhow::Result<MultipartUpload> {
        let options = ObjectOptions {
            content_type: Some("application/zstd".into()),
            ..ObjectOptions::default()
        };
        Self::create_with(aws, bucket, key, &options).await
    }

    /// Starts an upload to `s3://bucket/key` of an object with `options`.
    pub async fn create_with(
        aws: &Aws,
        bucket: &str,
        key: &str,
        options: &ObjectOptions,
    ) -> anyhow::Result<MultipartUpload> {
        let s3 = aws.s3();
        let out = s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_content_type(options.content_type.clone())
            .set_storage_class(options.storage_class.clone())
            .set_metadata((!options.metadata.is_empty()).then(|| options.metadata.clone()))
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "starting the upload to s3://{bucket}/{key}: {} (check the bucket name, region and the role's s3:PutObject permission)",
                    describe_error(&e)
                )
            })?;
        let upload_id = out
            .upload_id
            .context("S3 started a multipart upload without an upload id")?;
        Ok(MultipartUpload {
            aws: aws.clone(),
            s3,
            bucket: bucket.into(),
            key: key.into(),
            upload_id,
            parts: Vec::new(),
            open: true,
        })
    }

    /// Uploads bytes `offset..offset + len` of the file at `path` as part `number`, streamed
    /// from the file (no part buffer in memory).
    pub async fn upload_file_part(
        &mut self,
        number: i32,
        path: &std::path::Path,
        offset: u64,
        len: u64,
    ) -> anyhow::Result<()> {
        let body = ByteStream::read_from()
            .path(path)
            .offset(offset)
            .length(aws_sdk_s3::primitives::Length::Exact(len))
            .build()
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        let out = self
            .s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "uploading part {number} of s3://{}/{}: {}",
                    self.bucket,
                    self.key,
                    describe_error(&e)
                )
            })?;
        self.parts.push(
            CompletedPart::builder()
                .set_e_tag(out.e_tag)
                .part_number(number)
                .build(),
        );
        Ok(())
    }

    /// Compresses `input` (read on a blocking thread until its end) at zstd `level` and uploads
    /// it as parts, and hands `input` back (a reader that looked at the bytes has its findings).
    /// The object is not visible until [`complete`](Self::complete).
    pub async fn stream<R: BufRead + Send + 'static>(
        &mut self,
        input: R,
        level: i32,
        plan: PartPlan,
    ) -> anyhow::Result<(Streamed, R)> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Part>();
        let compressor = tokio::task::spawn_blocking(move || compress(input, level, plan, tx));
        let mut uploads: JoinSet<anyhow::Result<CompletedPart>> = JoinSet::new();
        loop {
            tokio::select! {
                part = rx.recv() => match part {
                    Some(part) => {
                        let (s3, bucket, key, id) = (self.s3.clone(), self.bucket.clone(), self.key.clone(), self.upload_id.clone());
                        uploads.spawn(async move { upload_part(&s3, &bucket, &key, &id, part).await });
                    }
                    None => break,
                },
                Some(done) = uploads.join_next(), if !uploads.is_empty() => {
                    self.parts.push(done.context("a part upload task failed")??);
                }
            }
        }
        while let Some(done) = uploads.join_next().await {
            self.parts.push(done.context("a part upload task failed")??);
        }
        let (streamed, input) = compressor.await.context("the compressor thread failed")??;
        if streamed.parts != self.parts.len() {
            bail!(
                "{} parts were cut but {} uploaded",
                streamed.parts,
                self.parts.len()
            );
        }
        Ok((streamed, input))
    }

    /// Completes the upload: the object becomes visible, whole.
    /// Returns the object's ETag (when S3 gives one).
    pub async fn complete(mut self) -> anyhow::Result<Option<String>> {
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_by_key(|p| p.part_number);
        let result = self
            .s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(out) => {
                self.open = false;
                Ok(out.e_tag)
            }
            // Still open: dropping self aborts it.
            Err(e) => bail!(
                "completing the upload of s3://{}/{}: {}",
                self.bucket,
                self.key,
                describe_error(&e)
            ),
        }
    }

    /// Aborts the upload: S3 discards the parts, no object appears.
    pub async fn abort(mut self) -> anyhow::Result<()> {
        self.open = false;
        abort(&self.s3, &self.bucket, &self.key, &self.upload_id).await
    }
}

async fn abort(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, id: &str) -> anyhow::Result<()> {
    s3.abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(id)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "aborting the upload of s3://{bucket}/{key} (upload id {id}): {}; the bucket's lifecycle rule for incomplete uploads will remove it",
                describe_error(&e)
            )
        })?;
    Ok(())
}

impl Drop for MultipartUpload {
    fn drop(&mut self) {
        if !self.open {
            return;
        }
        // The step's future is being dropped (timeout, cancellation) or returned an error
        // without aborting. Abort now, on a thread with its own runtime and connection pool,
        // and wait for it (at most 60 s): the step's runtime is this thread, so it cannot drive
        // the request itself, and it may be about to shut down.
        let s3 = self.aws.s3_detached();
        let (bucket, key, id) = (
            self.bucket.clone(),
            self.key.clone(),
            self.upload_id.clone(),
        );
        let job = move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot abort the upload of s3://{bucket}/{key}: {e}");
                    return;
                }
            };
            let done = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), abort(&s3, &bucket, &key, &id)).await
            });
            match done {
                Ok(Ok(())) => {
                    tracing::info!("aborted the unfinished upload of s3://{bucket}/{key}")
                }
                Ok(Err(e)) => tracing::error!("{e:#}"),
                Err(_) => tracing::error!(
                    "aborting the upload of s3://{bucket}/{key} timed out; the bucket's lifecycle rule for incomplete uploads will remove it"
                ),
            }
        };
        // Joined, not detached: a detached thread (or a queued `spawn_blocking` task, which a
        // runtime shutting down cancels) may never run if bosund exits right after the step.
        if std::thread::spawn(job).join().is_err() {
            tracing::error!("the thread aborting an unfinished upload panicked");
        }
    }
}

async fn upload_part(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    part: Part,
) -> anyhow::Result<CompletedPart> {
    let Part {
        number,
        data,
        _permit: permit,
    } = part;
    let out = s3
        .upload_part()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .part_number(number)
        .body(ByteStream::from(data))
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "uploading part {number} of s3://{bucket}/{key}: {}",
                describe_error(&e)
            )
        })?;
    // The buffer (inside the request, now sent) and its permit are freed here.
    drop(permit);
    Ok(CompletedPart::builder()
        .set_e_tag(out.e_tag)
        .part_number(number)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressor_cuts_full_parts_hashes_the_object_and_round_trips() {
        // 3 MiB of poorly compressible bytes into 1 MiB parts with 2 buffers: the compressor
        // waits for this consumer whenever both buffers are out.
        let mut data = Vec::with_capacity(3 << 20);
        let mut x: u32 = 1;
        for _ in 0..(3 << 20) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            data.push(x as u8);
        }
        let plan = PartPlan {
            part_size: 1 << 20,
            buffers: 2,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let input = std::io::Cursor::new(data.clone());
        let worker = std::thread::spawn(move || compress(input, 1, plan, tx));
        let mut parts = Vec::new();
        while let Some(part) = rx.blocking_recv() {
            parts.push((part.number, part.data.clone()));
        }
        let (streamed, _) = worker.join().unwrap().unwrap();
        let numbers: Vec<i32> = parts.iter().map(|p| p.0).collect();
        assert_eq!(numbers, (1..=parts.len() as i32).collect::<Vec<_>>());
        let (last, full) = parts.split_last().unwrap();
        assert!(full.iter().all(|p| p.1.len() == plan.part_size));
        assert!(!last.1.is_empty() && last.1.len() <= plan.part_size);
        let object: Vec<u8> = parts.into_iter().flat_map(|p| p.1).collect();
        assert_eq!(streamed.raw_size, 3 << 20);
        assert_eq!(streamed.size, object.len() as u64);
        assert_eq!(streamed.sha256, hex::encode(Sha256::digest(&object)));
        assert!(streamed.parts >= 3);
        assert_eq!(zstd::stream::decode_all(&object[..]).unwrap(), data);
    }
}
