//! A backup object streamed out of S3 into a database: SHA-256 on the way, zstd decompression on
//! a blocking thread, the client reading SQL on stdin. Shared by `backup_verify` (into a scratch
//! database) and `bosund backups restore` (into the database asked for).
//!
//! Memory stays bounded whatever the object's size: at most four downloaded chunks wait for the
//! decompressor, and the decompressor writes into the client's pipe as it goes.

use std::io::Read;

use anyhow::Context;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::manifest::{Manifest, TableStats};
use super::mysql::{Client, Dumper, Exit, StreamingChild, dump_argv};
use crate::aws::describe_error;

/// How a streamed restore went. `problems` is empty when the object's SHA-256 matched, it
/// decompressed and the client exited 0.
#[derive(Debug, Clone)]
pub struct Streamed {
    /// SHA-256 of the object as fetched, lowercase hex.
    pub sha256: String,
    /// Bytes of SQL fed to the client.
    pub sql_bytes: u64,
    /// What went wrong: a SHA-256 mismatch first, then decompression and client errors
    /// (the client's quoted as [`super::mysql::tool_error`] allows).
    pub problems: Vec<String>,
    /// The client's whole stderr when it failed (capped, password redacted): for `register`
    /// only, as it can repeat the data it failed on.
    pub client_output: Option<bosun_model::event::CommandOutput>,
}

/// Reads the chunks a channel brings, for the blocking decompressor.
struct ChannelReader<B> {
    rx: mpsc::Receiver<B>,
    chunk: B,
    pos: usize,
}

impl<B: AsRef<[u8]>> Read for ChannelReader<B> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.as_ref().len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let rest = &self.chunk.as_ref()[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Streams `s3://bucket/key` (zstd-compressed SQL) into `database` through `client`, comparing
/// the object's SHA-256 with `expected_sha256`. Errors are for what stopped the stream (S3
/// unreachable, the client not starting); what the data or the tools got wrong is in
/// [`Streamed::problems`]. The database must exist; what a failed restore left in it is the
/// caller's to drop.
pub async fn stream_into(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    expected_sha256: &str,
    client: &Client,
    database: &str,
) -> anyhow::Result<Streamed> {
    let restore = client.spawn_restore(database)?;
    stream_into_child(s3, bucket, key, expected_sha256, restore, Exit::message).await
}

/// [`stream_into`] for any client already started reading SQL on its stdin (`restore`);
/// `message` says what an error may quote of its stderr (the tool's own `tool_error`).
pub async fn stream_into_child(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    expected_sha256: &str,
    mut restore: StreamingChild,
    message: fn(&Exit) -> String,
) -> anyhow::Result<Streamed> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("reading s3://{bucket}/{key}: {}", describe_error(&e)))?;
    let mut body = object.body;
    let mut stdin = restore.take_stdin()?;
    // Four chunks in flight between the download and the decompressor bound the memory.
    let (tx, rx) = mpsc::channel(4);
    let decompress = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let reader = ChannelReader {
            rx,
            chunk: Default::default(),
            pos: 0,
        };
        let mut decoder = zstd::stream::read::Decoder::new(reader)?;
        let n = std::io::copy(&mut decoder, &mut stdin)?;
        Ok(n)
    });
    let mut hasher = Sha256::new();
    let mut feeding = true;
    while let Some(chunk) = body
        .try_next()
        .await
        .with_context(|| format!("downloading s3://{bucket}/{key}"))?
    {
        hasher.update(&chunk);
        // After the decompressor stopped (bad data), keep hashing: the SHA-256 verdict is
        // the clearest one.
        if feeding && tx.send(chunk).await.is_err() {
            feeding = false;
        }
    }
    drop(tx);
    let sha256 = hex::encode(hasher.finalize());
    let decompressed = decompress.await.context("the decompressor thread failed")?;
    let program = restore.program().to_string();
    let exit = restore.wait().await?;

    let mut problems = Vec::new();
    if sha256 != expected_sha256 {
        problems.push(format!(
            "sha256 mismatch: manifest says {expected_sha256}, object is {sha256}"
        ));
    }
    let sql_bytes = match decompressed {
        Ok(n) => n,
        // The client stopped reading because it failed: its error says why.
        Err(e) if !exit.success() && is_broken_pipe(&e) => 0,
        Err(e) => {
            problems.push(format!("decompressing: {e:#}"));
            0
        }
    };
    let mut client_output = None;
    if !exit.success() {
        problems.push(format!(
            "{program} failed to restore (exit code {}): {}",
            exit.code(),
            message(&exit)
        ));
        client_output = Some(exit.output());
    }
    Ok(Streamed {
        sha256,
        sql_bytes,
        problems,
        client_output,
    })
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The tables of `database` as restored, in the terms `manifest` uses: for format 2, dumped
/// again with `dump_command` (default `mariadb-dump`/`mysqldump`) and scanned for row counts
/// and digests; for format 1, `COUNT(*)` and `CHECKSUM TABLE` on the server.
pub async fn restored_tables(
    manifest: &Manifest,
    client: &Client,
    dump_command: &Option<Vec<String>>,
    database: &str,
) -> anyhow::Result<Vec<TableStats>> {
    if manifest.has_digests() {
        let dumper = Dumper {
            argv: dump_argv(dump_command)?,
            conn: client.conn.clone(),
        };
        dumper.table_digests(database).await
    } else {
        client.table_stats(database).await
    }
    .context("reading the restored tables")
}
