//! The per-user session folder: where `lumen start` records each node it runs (address, pid,
//! and on the head the cluster token and certificate fingerprint), so that `lumen stop`,
//! `lumen status` and local drivers find the cluster without being told.
//!
//! What is in the folder is trusted: it says which processes `lumen stop` signals, where
//! `lumen status` connects, and which cached executables a node runs. So the folder is made
//! 0700 and used only when [`checked_user_dir`] finds it safe: owned by this user, not a
//! symlink, writable by no one else (another user could have made it first in a shared temp
//! folder). Pids read from records are used only when they name a running lumen node
//! ([`is_lumen_node`]).

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The session folder: `$LUMEN_SESSION_DIR`, else `lumen` in `$XDG_RUNTIME_DIR` (a folder only
/// this user can enter), else `lumen-<uid>` in the temp folder. Not checked: use
/// [`checked_user_dir`] before trusting what is in it.
pub fn user_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LUMEN_SESSION_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        if d.is_dir() {
            return d.join("lumen");
        }
    }
    std::env::temp_dir().join(format!("lumen-{}", my_uid()))
}

fn my_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// Why a session folder is not safe to use, from what `lstat` says of it.
fn unsafe_because(uid: u32, mode: u32, symlink: bool, dir: bool, me: u32) -> Option<String> {
    if symlink {
        return Some("it is a symbolic link".into());
    }
    if !dir {
        return Some("it is not a folder".into());
    }
    if uid != me {
        return Some(format!(
            "it belongs to user {uid}, not to you (user {me}): another user may have made it to \
             take over your cluster"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "other users can write to it (mode {:o})",
            mode & 0o777
        ));
    }
    None
}

/// Checks a session folder (which must exist) before anything in it is trusted.
pub fn check_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::invalid(format!("cannot inspect {}: {e}", dir.display())))?;
    match unsafe_because(
        meta.uid(),
        meta.mode(),
        meta.file_type().is_symlink(),
        meta.is_dir(),
        my_uid(),
    ) {
        None => Ok(()),
        Some(why) => Err(Error::invalid(format!(
            "refusing the lumen session folder {}: {why}. Remove it (or set LUMEN_SESSION_DIR to \
             a folder of your own, mode 0700) and start the cluster again",
            dir.display()
        ))),
    }
}

/// The session folder, made (0700) if missing, once it is found safe ([`check_dir`]).
pub fn checked_user_dir() -> Result<PathBuf, Error> {
    let dir = user_dir();
    if std::fs::symlink_metadata(&dir).is_err() {
        create_private_dir(&dir)?;
    }
    check_dir(&dir)?;
    Ok(dir)
}

/// A folder inside the session folder (made 0700 if missing).
pub fn session_subdir(name: &str) -> Result<PathBuf, Error> {
    let dir = checked_user_dir()?.join(name);
    if std::fs::symlink_metadata(&dir).is_err() {
        create_private_dir(&dir)?;
    }
    check_dir(&dir)?;
    Ok(dir)
}

fn nodes_dir() -> PathBuf {
    user_dir().join("nodes")
}

/// What `lumen start` records of a node it runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeRecordFile {
    /// The daemon's process id.
    pub pid: u32,
    /// `HOST:PORT` of the node's endpoint.
    pub address: String,
    /// Whether it is the head (runs the GCS).
    pub head: bool,
    /// The GCS address (the head's own address on the head).
    pub gcs: String,
    /// The cluster token (hex).
    pub token: String,
    /// The node's id.
    pub node_id: String,
    /// BLAKE3 fingerprint of the node's TLS certificate (hex): local peers pin it.
    #[serde(default)]
    pub fingerprint: String,
    /// Where the head serves its dashboard (`HOST:PORT`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dashboard: Option<String>,
    /// Where the node serves Prometheus metrics (`HOST:PORT`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

/// Makes `dir` (its parents as usual) with mode 0700 from the start: there is no moment when
/// another user could open it.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::invalid(format!(
            "cannot create {}: {e}",
            dir.display()
        ))),
    }
}

/// Records a node (file `nodes/<pid>.json`, mode 0600). The record is written under a temporary
/// name and renamed into place, so a reader (`lumen start` polls for it) sees either no record
/// or the whole of it — never a half-written file it would take for a bogus one and remove.
pub fn write_node(record: &NodeRecordFile) -> Result<PathBuf, Error> {
    write_record(&session_subdir("nodes")?, record)
}

fn write_record(dir: &Path, record: &NodeRecordFile) -> Result<PathBuf, Error> {
    let path = dir.join(format!("{}.json", record.pid));
    let partial = dir.join(format!(".{}.json.partial", record.pid));
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| Error::invalid(format!("cannot encode the node record: {e}")))?;
    let cannot =
        |p: &Path, e: std::io::Error| Error::invalid(format!("cannot write {}: {e}", p.display()));
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| cannot(&partial, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| cannot(&partial, e))?;
    std::fs::rename(&partial, &path).map_err(|e| cannot(&path, e))?;
    Ok(path)
}

/// Removes a node's record.
pub fn remove_node(pid: u32) {
    let _ = std::fs::remove_file(nodes_dir().join(format!("{pid}.json")));
    let _ = std::fs::remove_file(nodes_dir().join(format!(".{pid}.json.partial")));
}

/// Whether process `pid` is alive (a process that exited but was not yet reaped is not).
pub fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    if pid == 0 || unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
        return false;
    }
    // /proc/<pid>/stat: "pid (comm) S ..."; state Z (zombie) or X (dead) means it has exited.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        ),
        Err(_) => true,
    }
}

/// Whether `pid` may be a process id to signal: above 1 (0 and 1 are the caller's process group
/// and init) and at most `i32::MAX` (a larger `u32` turns negative as a `pid_t`, and `kill(-1)`
/// signals every process).
pub fn valid_pid(pid: u32) -> bool {
    pid > 1 && pid <= i32::MAX as u32
}

/// Whether process `pid` is a running lumen node: a valid pid ([`valid_pid`]), alive, and its
/// command line that of a node (`lumen __node …`, or `lumen start … --block`). What a record
/// says is checked against this before the process is signalled or the record believed.
pub fn is_lumen_node(pid: u32) -> bool {
    if !valid_pid(pid) || !process_alive(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let has = |a: &str| args.iter().skip(1).any(|x| *x == a.as_bytes());
    args.get(1).is_some_and(|a| *a == b"__node") || (has("start") && has("--block"))
}

/// Every node recorded on this machine whose process is alive (stale records are removed).
/// Nothing when the session folder is not safe to use ([`try_nodes`] says why).
pub fn nodes() -> Vec<NodeRecordFile> {
    try_nodes().unwrap_or_default()
}

/// Every node recorded on this machine whose process is a running lumen node ([`is_lumen_node`]);
/// stale or bogus records are removed. An error when the session folder is not safe to use.
pub fn try_nodes() -> Result<Vec<NodeRecordFile>, Error> {
    let dir = user_dir();
    if std::fs::symlink_metadata(&dir).is_err() {
        return Ok(Vec::new());
    }
    check_dir(&dir)?;
    if std::fs::symlink_metadata(nodes_dir()).is_err() {
        return Ok(Vec::new());
    }
    check_dir(&nodes_dir())?;
    Ok(read_records(&nodes_dir(), is_lumen_node))
}

/// The records in `dir` whose process `running` says is a node; the others are removed.
fn read_records(dir: &Path, running: impl Fn(u32) -> bool) -> Vec<NodeRecordFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        // Only whole records: one being written has a hidden name until it is renamed.
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match serde_json::from_str::<NodeRecordFile>(&text) {
            Ok(r) if running(r.pid) => out.push(r),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out.sort_by_key(|r| (!r.head, r.pid));
    out
}

/// The token of the cluster whose GCS is at `address` (or, with no address, of the one head
/// running here), from the session folder.
pub fn local_token(address: Option<&str>) -> Option<String> {
    let nodes = nodes();
    let port = |a: &str| a.rsplit(':').next().map(str::to_string);
    nodes
        .iter()
        .find(|n| match address {
            Some(a) => n.gcs == a || (port(&n.gcs) == port(a) && n.head),
            None => n.head,
        })
        .map(|n| n.token.clone())
}

/// The certificate fingerprint of the head at `address` recorded on this machine, to pin.
pub(crate) fn local_fingerprint(address: std::net::SocketAddr) -> Option<[u8; 32]> {
    let rec = nodes()
        .into_iter()
        .find(|n| n.head && n.address == address.to_string())?;
    let bytes = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(rec.fingerprint.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    bytes.try_into().ok()
}

/// A fingerprint as hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The GCS address of the head running on this machine, if any.
pub fn local_head() -> Option<String> {
    nodes().into_iter().find(|n| n.head).map(|n| n.gcs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_of_another_user_a_link_or_an_open_folder_is_refused() {
        let me = 1000;
        assert_eq!(unsafe_because(me, 0o40700, false, true, me), None);
        assert_eq!(unsafe_because(me, 0o40755, false, true, me), None);
        let other = unsafe_because(0, 0o40700, false, true, me).expect("another user's");
        assert!(other.contains("belongs to user 0"), "{other}");
        assert!(unsafe_because(me, 0o120777, true, false, me)
            .expect("a link")
            .contains("symbolic link"));
        assert!(unsafe_because(me, 0o40777, false, true, me)
            .expect("world-writable")
            .contains("777"));
        assert!(unsafe_because(me, 0o40770, false, true, me).is_some());
        assert!(unsafe_because(me, 0o100600, false, false, me).is_some());
    }

    #[test]
    fn pids_that_would_signal_a_group_or_everyone_are_never_valid() {
        for bad in [0, 1, u32::MAX, 4_294_939_918, i32::MAX as u32 + 1] {
            assert!(!valid_pid(bad), "{bad}");
            assert!(!is_lumen_node(bad), "{bad}");
        }
        assert!(valid_pid(2) && valid_pid(i32::MAX as u32));
        // This test process is alive, but it is not a lumen node.
        assert!(!is_lumen_node(std::process::id()));
    }

    /// `lumen start` polls for the record while its node writes it: a reader never sees half
    /// a record (and so never removes one as bogus), and a partial file is not a record.
    #[test]
    fn a_record_being_written_is_never_read_half_or_removed() {
        let dir = std::env::temp_dir().join(format!("lumen-records-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir(&dir).expect("create");
        let record = NodeRecordFile {
            pid: 4242,
            address: "127.0.0.1:1".into(),
            head: true,
            gcs: "127.0.0.1:1".into(),
            token: "ab".repeat(32),
            node_id: "cd".repeat(16),
            fingerprint: "ef".repeat(32),
            dashboard: None,
            metrics: None,
        };
        std::fs::write(dir.join(".7.json.partial"), "{").expect("partial");
        let writer = {
            let (dir, record) = (dir.clone(), record.clone());
            std::thread::spawn(move || {
                for _ in 0..300 {
                    write_record(&dir, &record).expect("write");
                }
            })
        };
        let mut seen = false;
        while !writer.is_finished() {
            let read = read_records(&dir, |_| true);
            assert!(read.is_empty() || read == [record.clone()], "{read:?}");
            seen |= !read.is_empty();
            assert!(
                !seen || read.len() == 1,
                "a record went missing once written"
            );
        }
        writer.join().expect("writer");
        assert_eq!(read_records(&dir, |_| true), [record]);
        assert!(
            dir.join(".7.json.partial").exists(),
            "a partial file is not read"
        );
        assert!(read_records(&dir, |_| false).is_empty());
        assert!(
            !dir.join("4242.json").exists(),
            "a record of no node is removed"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_session_folder_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lumen-session-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        create_private_dir(&dir.join("nodes")).expect("create");
        for d in [dir.clone(), dir.join("nodes")] {
            let mode = std::fs::metadata(&d).expect("made").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.display());
            check_dir(&d).expect("a folder this process made is safe");
        }
        let link = dir.with_extension("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&dir, &link).expect("symlink");
        let e = check_dir(&link).expect_err("a link is refused").to_string();
        assert!(
            e.contains("symbolic link") && e.contains("LUMEN_SESSION_DIR"),
            "{e}"
        );
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
