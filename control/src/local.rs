//! What `bosun` does on the operator's own machine: the files of the operator's it writes (the
//! local digest cache of bosund builds, [`write_atomic`]) and the programs it starts there
//! ([`run_program`]). Every child process `bosun` starts goes through [`run_program`]; work on a
//! host goes over SSH (`remote::ssh`), not through local programs.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context, Result, bail};
use bosun_model::playbook::{self, BaseDir, BaseOrigin, Diagnostics, Playbook, Scope, Source};

/// Loads the playbook at `path` (its `text` already read) as `bosun check` and `bosun run`
/// judge it before any host is contacted: parsed, validated with the variable names given,
/// and every file it names by a relative path (template and copy sources, values files) found
/// beside it. Absolute paths name the host's files, not the operator's, and are not looked at.
pub fn load_playbook(
    path: &Path,
    text: String,
    var_names: &[String],
) -> std::result::Result<Playbook, Diagnostics> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let base = BaseDir {
        path: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
        origin: BaseOrigin::PlaybookDir,
    };
    let source = Source::new(path.display().to_string(), text);
    playbook::load_with_files(
        source,
        var_names,
        &base,
        Scope::RelativeOnly,
        |p| std::fs::metadata(p).map(|m| m.is_dir()),
        &mut |p| std::fs::read_to_string(p).map_err(|e| e.to_string()),
    )
}

/// Writes `bytes` to `path` atomically, mode 0600: a temporary file in the same directory,
/// flushed to disk, then renamed over `path`, so a reader sees the old content or the new,
/// never a mix, even after a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| {
            format!(
                "cannot set the mode of a temporary file in {}",
                dir.display()
            )
        })?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // The rename is durable once the directory is; a failure here loses only a cache entry.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Bytes of a program's stdout kept: the start; the rest is read and dropped.
pub const STDOUT_CAP: usize = 1 << 20;
/// Bytes of a program's stderr kept: the end, where the reason for a failure is.
pub const STDERR_CAP: usize = 4 << 10;

/// How a local program ended and what it printed, each stream capped.
#[derive(Debug)]
pub struct Finished {
    /// The program, as given to [`run_program`] (named in errors).
    pub program: String,
    /// How it exited.
    pub status: ExitStatus,
    /// The first [`STDOUT_CAP`] bytes of its stdout.
    pub stdout: Vec<u8>,
    /// The last [`STDERR_CAP`] bytes of its stderr.
    pub stderr: Vec<u8>,
}

impl Finished {
    /// `self` when the program exited 0; else an error naming the program, its exit status
    /// (or signal) and the end of its stderr.
    pub fn success(self) -> Result<Finished> {
        if self.status.success() {
            return Ok(self);
        }
        let stderr = String::from_utf8_lossy(&self.stderr);
        let stderr = stderr.trim();
        bail!(
            "`{}` failed ({}): {}",
            self.program,
            self.status,
            if stderr.is_empty() {
                "no error output"
            } else {
                stderr
            }
        )
    }
}

/// Runs `program` (looked up on `PATH`) with `args`, with bosun's environment and working
/// directory, writes `stdin` to its standard input and closes it, and waits for it to end.
///
/// Its stdout and stderr are captured, capped ([`STDOUT_CAP`], [`STDERR_CAP`]) and read while it
/// runs, so a chatty program neither blocks on a full pipe nor costs unbounded memory. A
/// program that exits without reading all of `stdin` is not an error. Fails, naming the
/// program, only when it cannot be started or its pipes fail; how it exited is in
/// [`Finished::status`], and [`Finished::success`] makes a failed exit an error.
pub fn run_program(program: &str, args: &[&str], stdin: &[u8]) -> Result<Finished> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{program}`"))?;
    let input = child.stdin.take().expect("stdin is piped");
    let out = child.stdout.take().expect("stdout is piped");
    let err = child.stderr.take().expect("stderr is piped");
    let (written, stdout, stderr) = std::thread::scope(|s| {
        let writer = s.spawn(move || write_input(input, stdin));
        let reader = s.spawn(move || read_head(out, STDOUT_CAP));
        let stderr = read_tail(err, STDERR_CAP);
        (
            writer.join().expect("the stdin writer does not panic"),
            reader.join().expect("the stdout reader does not panic"),
            stderr,
        )
    });
    // Waited for before any pipe error is reported, so no child is left behind unreaped.
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{program}`"))?;
    written.with_context(|| format!("cannot write the input of `{program}`"))?;
    let stdout = stdout.with_context(|| format!("cannot read the output of `{program}`"))?;
    let stderr = stderr.with_context(|| format!("cannot read the error output of `{program}`"))?;
    Ok(Finished {
        program: program.to_string(),
        status,
        stdout,
        stderr,
    })
}

/// Writes all of `bytes`, then closes the pipe (drop); a program that stopped reading is fine.
fn write_input(mut pipe: impl Write, bytes: &[u8]) -> std::io::Result<()> {
    match pipe.write_all(bytes) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Reads `r` to its end, keeping the first `cap` bytes (the rest is read and dropped, so the
/// program never blocks on a full pipe).
fn read_head(mut r: impl Read, cap: usize) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    (&mut r).take(cap as u64).read_to_end(&mut kept)?;
    std::io::copy(&mut r, &mut std::io::sink())?;
    Ok(kept)
}

/// Reads `r` to its end, keeping the last `cap` bytes.
fn read_tail(mut r: impl Read, cap: usize) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(kept),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > cap {
            kept.drain(..kept.len() - cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_whole_with_mode_0600_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("cache.json")]);
    }

    #[test]
    fn a_program_gets_its_input_and_its_output_and_exit_status_are_kept() {
        let f = run_program("sh", &["-c", "cat; echo oops >&2; exit 3"], b"hello").unwrap();
        assert_eq!(f.stdout, b"hello");
        assert_eq!(f.stderr, b"oops\n");
        assert_eq!(f.status.code(), Some(3));
        let err = f.success().unwrap_err().to_string();
        assert_eq!(err, "`sh` failed (exit status: 3): oops");
        let ok = run_program("sh", &["-c", "printf yes"], b"").unwrap();
        assert_eq!(ok.success().unwrap().stdout, b"yes");
    }

    #[test]
    fn output_is_capped_keeping_the_start_of_stdout_and_the_end_of_stderr() {
        // More than a pipe holds on both streams at once: read while the program runs.
        let script = "head -c 3000000 /dev/zero; head -c 200000 /dev/zero | tr '\\0' x >&2; \
                      printf 'the reason' >&2";
        let f = run_program("sh", &["-c", script], b"").unwrap();
        assert!(f.status.success());
        assert_eq!(f.stdout.len(), STDOUT_CAP);
        assert_eq!(f.stderr.len(), STDERR_CAP);
        assert!(f.stderr.ends_with(b"xxthe reason"));
    }

    #[test]
    fn input_the_program_does_not_read_is_not_an_error() {
        let f = run_program("sh", &["-c", "exit 0"], &vec![b'x'; 4 << 20]).unwrap();
        assert!(f.status.success());
    }

    #[test]
    fn a_program_that_cannot_start_is_named() {
        let err = run_program("bosun-no-such-program", &[], b"").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("cannot run `bosun-no-such-program`: "),
            "{text}"
        );
        let f = run_program("sh", &["-c", "kill -9 $$"], b"").unwrap();
        let err = f.success().unwrap_err().to_string();
        assert!(err.starts_with("`sh` failed (signal: 9"), "{err}");
        assert!(err.ends_with("no error output"), "{err}");
    }
}
