//! A node's log folder, read for others: which logs it has (its own `node-<pid>.<date>.log`,
//! what its worker processes printed as `worker-<pid>.out` / `.err`) and the last lines of one.
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
    Ok(out)
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
}
