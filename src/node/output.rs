//! A worker process's output, read by the node that started it: each line the process writes
//! on its stdout or stderr goes to the job's driver as a
//! [`WorkerOutput`](crate::protocol::owner::WorkerOutput), labelled with what ran when it was
//! printed (the name lines of `protocol::output`), in order per stream, batched by what is there
//! to read. Nothing the process wrote is lost when it exits: its pipes are read to their end.
//! Once the job's driver is gone (a detached actor prints on after its job ended), lines go to
//! the node's own stdout or stderr instead, prefixed.

use crate::protocol::output::{self, Line};
use crate::protocol::owner::WorkerOutput;
use crate::protocol::svc;
use crate::transport::net::Net;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

/// Longest line sent as one; a longer one is cut into lines of this size.
const MAX_LINE: usize = 16 * 1024;

/// Most lines in one message.
const MAX_BATCH: usize = 512;

/// Where one worker process's lines go.
#[derive(Clone)]
pub(crate) struct Destination {
    pub(crate) net: Arc<Net>,
    /// The job's driver.
    pub(crate) driver: SocketAddr,
    /// The node: where it listens.
    pub(crate) node: SocketAddr,
    pub(crate) pid: u32,
    /// Set when the job ended: its driver no longer listens.
    pub(crate) driver_gone: Arc<AtomicBool>,
    /// Where the lines are also kept, as `worker-<pid>.out` / `.err` (a `lumen start` node's
    /// log folder), if anywhere.
    pub(crate) log_dir: Option<PathBuf>,
}

impl Destination {
    /// Sends a batch to the driver and waits until it took it (so one batch per stream is in
    /// flight, and a driver that prints slowly slows the worker's pipe, not this node); once
    /// the driver is gone, or when it cannot be reached, prints it here instead.
    async fn send(&self, stderr: bool, lines: Vec<(String, String)>) {
        self.keep(stderr, &lines);
        if !self.driver_gone.load(Ordering::Acquire) {
            let sent = self
                .net
                .target::<svc::Owner>(self.driver)
                .send(WorkerOutput {
                    node: self.node,
                    pid: self.pid,
                    stderr,
                    lines: lines.clone(),
                })
                .await;
            match sent {
                Ok(()) => return,
                Err(e) => {
                    tracing::info!(driver = %self.driver, pid = self.pid,
                        "worker output stays on this node: the driver cannot take it: {e}");
                    self.driver_gone.store(true, Ordering::Release);
                }
            }
        }
        output::print(stderr, self.pid, self.node, &lines);
    }
}

impl Destination {
    /// Appends the lines to the worker's file in the node's log folder, if it has one.
    fn keep(&self, stderr: bool, lines: &[(String, String)]) {
        let Some(dir) = &self.log_dir else {
            return;
        };
        let path = dir.join(log_file_name(self.pid, stderr));
        let mut text = String::new();
        for (name, line) in lines {
            text.push_str(&output::prefix(name, self.pid, self.node));
            text.push(' ');
            text.push_str(line);
            text.push('\n');
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), "cannot keep a worker's output: {e}");
        }
    }
}

/// The name of the file a node keeps a worker process's stdout (or `stderr`) in.
pub(crate) fn log_file_name(pid: u32, stderr: bool) -> String {
    format!("worker-{pid}.{}", if stderr { "err" } else { "out" })
}

/// Labels a stream's lines with the last name line before them.
#[derive(Default)]
struct Labels {
    name: String,
}

impl Labels {
    /// The line as `(name, text)`, or `None` for a name line with nothing before it.
    fn take(&mut self, line: &str) -> Option<(String, String)> {
        match output::parse(line) {
            Line::Text(text) => Some((self.name.clone(), text.to_string())),
            Line::Name { before, name } => {
                let partial = (!before.is_empty()).then(|| (self.name.clone(), before.to_string()));
                self.name = name.to_string();
                partial
            }
        }
    }
}

/// Reads the next line into `line`, without its end (`\n` or `\r\n`), cutting it at
/// [`MAX_LINE`] bytes; false at the end of the stream with nothing read.
async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    line.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(!line.is_empty());
        }
        let room = MAX_LINE - line.len();
        let seen = &available[..available.len().min(room)];
        if let Some(end) = seen.iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&seen[..end]);
            reader.consume(end + 1);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(true);
        }
        let n = seen.len();
        line.extend_from_slice(seen);
        reader.consume(n);
        if line.len() >= MAX_LINE {
            return Ok(true);
        }
    }
}

/// Reads `stream` (the worker's stderr when `stderr`) to its end, sending its lines to `to`:
/// each batch is the lines there were to read when the first of them arrived, sent before the
/// next is read.
pub(crate) async fn forward(stream: impl AsyncRead + Unpin, stderr: bool, to: Destination) {
    read_batches(stream, |batch| to.send(stderr, batch)).await;
}

/// [`forward`]'s reading: hands each batch of labelled lines to `batch` and waits for it.
async fn read_batches<F: std::future::Future<Output = ()>>(
    stream: impl AsyncRead + Unpin,
    mut batch: impl FnMut(Vec<(String, String)>) -> F,
) {
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut labels = Labels::default();
    let mut line = Vec::new();
    loop {
        let mut lines = Vec::new();
        let ended = loop {
            match next_line(&mut reader, &mut line).await {
                Ok(true) => {
                    lines.extend(labels.take(&String::from_utf8_lossy(&line)));
                }
                Ok(false) => break true,
                Err(e) => {
                    tracing::debug!("a worker's output ended: {e}");
                    break true;
                }
            }
            if lines.len() >= MAX_BATCH || reader.buffer().is_empty() {
                break false;
            }
        };
        if !lines.is_empty() {
            batch(lines).await;
        }
        if ended {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batches(input: &[u8]) -> Vec<Vec<(String, String)>> {
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(read_batches(input, |b| {
            out.push(b);
            std::future::ready(())
        }));
        out
    }

    fn flat(input: &[u8]) -> Vec<(String, String)> {
        batches(input).into_iter().flatten().collect()
    }

    fn pair(name: &str, text: &str) -> (String, String) {
        (name.to_string(), text.to_string())
    }

    #[test]
    fn lines_are_labelled_by_the_name_line_before_them() {
        let mark = output::NAME_MARK;
        let input = format!("early\n{mark}square\none\r\ntwo\npart{mark}Counter\nthree");
        assert_eq!(
            flat(input.as_bytes()),
            vec![
                pair("", "early"),
                pair("square", "one"),
                pair("square", "two"),
                pair("square", "part"),
                pair("Counter", "three"),
            ]
        );
    }

    #[test]
    fn what_was_there_to_read_goes_in_bounded_batches_and_long_lines_are_cut() {
        let many: String = (0..1200).map(|i| format!("{i}\n")).collect();
        let got = batches(many.as_bytes());
        assert!(got.iter().all(|b| b.len() <= MAX_BATCH), "{}", got.len());
        let texts: Vec<String> = got.into_iter().flatten().map(|(_, t)| t).collect();
        let want: Vec<String> = (0..1200).map(|i| i.to_string()).collect();
        assert_eq!(texts, want, "every line, in order");
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let cut = flat(&long);
        assert_eq!(
            cut.iter().map(|(_, t)| t.len()).collect::<Vec<_>>(),
            vec![MAX_LINE, MAX_LINE, 5]
        );
        // Bytes that are not UTF-8 arrive, replaced.
        assert_eq!(flat(b"a\xffb\n"), vec![pair("", "a\u{fffd}b")]);
    }
}
