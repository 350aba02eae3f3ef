//! A node's log folder, read for others: which logs it has (its own `node-<pid>.<date>.log`,
//! what its worker processes printed as `worker-<pid>.out` / `.err`), the last lines of one, and
//! what was added to one after a position (to follow it from another machine, by polling).
//! Only plain files right in the folder are ever read: a name is never a path.

pub(crate) use crate::protocol::raylet::LogFile;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

/// Bytes read from the end of a log, at most, to find its last lines.
pub(crate) const MAX_TAIL_BYTES: u64 = 1 << 20;

/// The plain files of `dir`, by name.
pub(crate) fn list_logs(dir: &Path) -> Vec<LogFile> {
    let mut files: Vec<LogFile> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            let name = e.file_name().into_string().ok()?;
            (!name.starts_with('.')).then_some(())?;
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            Some(LogFile {
                name,
                bytes: meta.len(),
                modified_ms,
            })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// The path of log `name` in `dir`, if it is one [`list_logs`] lists: a plain file right in the
/// folder (no path, no hidden file, no link).
pub(crate) fn log_path(dir: &Path, name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return None;
    }
    let path = dir.join(name);
    std::fs::symlink_metadata(&path)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| path)
}

/// The last `lines` lines of the file at `path` (read from at most its last
/// [`MAX_TAIL_BYTES`]).
pub(crate) fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    tail_and_end(path, lines).map(|(text, _)| text)
}

/// The last `lines` lines of the file at `path`, and the position they end at (where following
/// it starts).
pub(crate) fn tail_and_end(path: &Path, lines: usize) -> std::io::Result<(String, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let from = len.saturating_sub(MAX_TAIL_BYTES);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(len - from).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    // A read that started mid-file starts mid-line: that line is left out.
    let first = usize::from(from > 0 && all.len() > 1);
    let start = all.len().saturating_sub(lines).max(first);
    let mut out = all[start..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Ok((out, len))
}

/// What was added to a log after a position: the text and the position it ends at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Added {
    pub(crate) text: String,
    pub(crate) end: u64,
    /// The file was shorter than the position asked for (truncated, or replaced by a new
    /// one): the text is read from its start.
    pub(crate) restarted: bool,
}

/// What the file at `path` holds from byte `from` on, at most [`MAX_TAIL_BYTES`] of it, ending
/// before a character cut in two (that one comes with the next read). A file now shorter than
/// `from` is read from its start.
pub(crate) fn read_from(path: &Path, from: u64) -> std::io::Result<Added> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let restarted = len < from;
    let from = if restarted { 0 } else { from };
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take((len - from).min(MAX_TAIL_BYTES))
        .read_to_end(&mut bytes)?;
    let keep = match std::str::from_utf8(&bytes) {
        Ok(_) => bytes.len(),
        // Only a character cut at the end waits; bytes that are not UTF-8 at all pass (lossily).
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    };
    let text = String::from_utf8_lossy(&bytes[..keep]).into_owned();
    Ok(Added {
        text,
        end: from + keep as u64,
        restarted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lumen-logs-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create");
        dir
    }

    #[test]
    fn only_plain_files_right_in_the_folder_are_logs() {
        let dir = folder("names");
        std::fs::write(dir.join("worker-1.out"), "a\n").expect("write");
        std::fs::write(dir.join(".hidden"), "x").expect("write");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link.out")).expect("link");
        let names: Vec<String> = list_logs(&dir).into_iter().map(|f| f.name).collect();
        assert_eq!(names, ["worker-1.out"]);
        assert!(log_path(&dir, "worker-1.out").is_some());
        for bad in ["", ".hidden", "../worker-1.out", "sub", "link.out", "nope"] {
            assert!(log_path(&dir, bad).is_none(), "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tail_is_the_last_lines() {
        let dir = folder("tail");
        let path = dir.join("worker-2.out");
        std::fs::write(&path, "one\ntwo\nthree\n").expect("write");
        assert_eq!(tail(&path, 2).expect("tail"), "two\nthree\n");
        assert_eq!(tail(&path, 10).expect("tail"), "one\ntwo\nthree\n");
        assert_eq!(tail(&path, 0).expect("tail"), "");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn following_reads_what_was_added_and_starts_over_when_the_file_shrank() {
        let dir = folder("follow");
        let path = dir.join("worker-3.out");
        std::fs::write(&path, "one\ntwo\n").expect("write");
        let (text, end) = tail_and_end(&path, 1).expect("tail");
        assert_eq!((text.as_str(), end), ("two\n", 8));
        let nothing = read_from(&path, end).expect("read");
        assert_eq!(
            (nothing.text.as_str(), nothing.end, nothing.restarted),
            ("", 8, false)
        );
        // A character cut in two waits for its second half.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        std::io::Write::write_all(&mut f, b"three \xc3").expect("append");
        let added = read_from(&path, end).expect("read");
        assert_eq!((added.text.as_str(), added.end), ("three ", 14));
        std::io::Write::write_all(&mut f, b"\xa9\n").expect("append");
        let rest = read_from(&path, added.end).expect("read");
        assert_eq!((rest.text.as_str(), rest.end), ("\u{e9}\n", 17));
        // Truncated (or replaced by a shorter file): from its start.
        std::fs::write(&path, "new\n").expect("truncate");
        let again = read_from(&path, rest.end).expect("read");
        assert_eq!(
            (again.text.as_str(), again.end, again.restarted),
            ("new\n", 4, true)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
