//! The per-user session folder: where `lumen start` records each node it runs (address, pid,
//! and on the head the cluster token and certificate fingerprint), so that `lumen stop`,
//! `lumen status` and local drivers find the cluster without being told. The folder is
//! readable only by its user.

use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `lumen-<uid>` in the temp folder (or `$LUMEN_SESSION_DIR`).
pub fn user_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LUMEN_SESSION_DIR") {
        return PathBuf::from(d);
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("lumen-{uid}"))
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
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::invalid(format!("cannot create {}: {e}", dir.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::invalid(format!("cannot restrict {}: {e}", dir.display())))
}

/// Records a node (file `nodes/<pid>.json`, mode 0600).
pub fn write_node(record: &NodeRecordFile) -> Result<PathBuf, Error> {
    create_private_dir(&user_dir())?;
    create_private_dir(&nodes_dir())?;
    let path = nodes_dir().join(format!("{}.json", record.pid));
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| Error::invalid(format!("cannot encode the node record: {e}")))?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| Error::invalid(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// Removes a node's record.
pub fn remove_node(pid: u32) {
    let _ = std::fs::remove_file(nodes_dir().join(format!("{pid}.json")));
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

/// Every node recorded on this machine whose process is alive (stale records are removed).
pub fn nodes() -> Vec<NodeRecordFile> {
    let Ok(dir) = std::fs::read_dir(nodes_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match serde_json::from_str::<NodeRecordFile>(&text) {
            Ok(r) if process_alive(r.pid) => out.push(r),
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
