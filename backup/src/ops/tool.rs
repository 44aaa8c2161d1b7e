//! Running the PostgreSQL tools (`pg_dump`, `pg_restore`) as child processes.

use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use super::{io, Error};
use crate::pg::PgTarget;

/// Pipe capacity to request for the streams to and from `pg_dump`/`pg_restore`: the Linux
/// default of 64 KiB makes every 256 KiB chunk several partial writes, each a wake-up of both
/// processes. 1 MiB is the default `fs.pipe-max-size`, so unprivileged processes may ask for it.
const PIPE_CAPACITY: usize = 1 << 20;

/// Best effort: a kernel that refuses (lower `fs.pipe-max-size`) leaves the default size,
/// which is only slower.
pub(super) fn widen_pipe(fd: impl std::os::fd::AsFd) {
    let _ = rustix::pipe::fcntl_setpipe_size(fd, PIPE_CAPACITY);
}

/// Starts `cmd`, the PostgreSQL tool `tool`, killed when dropped, with its stderr collected
/// ([`collect_stderr`]); with a `target`, connected to it (`--no-password --dbname <url>` after
/// the arguments already given, and its environment).
pub(super) fn spawn_tool(
    tool: &'static str,
    cmd: &mut Command,
    target: Option<&PgTarget>,
) -> Result<(Child, tokio::task::JoinHandle<String>), Error> {
    if let Some(target) = target {
        cmd.arg("--no-password")
            .arg("--dbname")
            .arg(target.libpq_url());
        target.apply_env(cmd);
    }
    cmd.stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|source| Error::Spawn { tool, source })?;
    let stderr = collect_stderr(&mut child);
    Ok((child, stderr))
}

/// Collects a child's stderr (bounded) to explain failures.
fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let stderr = child.stderr.take();
    tokio::spawn(async move {
        let Some(mut stderr) = stderr else {
            return String::new();
        };
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 8192 {
                        let cut = kept.len() - 4096;
                        kept.drain(..cut);
                    }
                }
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

/// The most useful single line of a tool's stderr.
fn summarize(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.contains("error:"))
        .or(lines.last())
        .map(|l| l.chars().take(300).collect())
        .unwrap_or_else(|| "no error output".to_string())
}

pub(super) async fn finish_tool(
    tool: &'static str,
    mut child: Child,
    stderr: tokio::task::JoinHandle<String>,
) -> Result<(), Error> {
    let status = child
        .wait()
        .await
        .map_err(io("waiting for a child process"))?;
    let stderr = stderr.await.unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool,
            status: status.to_string(),
            message: summarize(&stderr),
        })
    }
}
