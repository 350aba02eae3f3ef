//! Job executables, content-addressed: a driver's executable is hashed (BLAKE3) and uploaded to
//! the GCS once; nodes fetch it by hash and keep it in a cache folder, from which they start the
//! job's worker processes.

use crate::error::Error;
use bytes::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How many executables a cache keeps.
pub(crate) const KEEP: usize = 8;

/// A folder of executables named by their hash.
#[derive(Clone, Debug)]
pub(crate) struct BinaryCache {
    dir: PathBuf,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::invalid(format!(
        "{what} {}: {}",
        path.display(),
        crate::error::describe_io(&e)
    ))
}

/// Whether `hash` looks like a BLAKE3 hex digest (so it is safe as a file name).
fn valid_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

impl BinaryCache {
    /// The cache in `dir` (created, readable only by this user).
    pub(crate) fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(BinaryCache { dir })
    }

    /// Where the executable with this hash is (or would be).
    pub(crate) fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    /// Whether the executable is cached.
    pub(crate) fn has(&self, hash: &str) -> bool {
        valid_hash(hash) && self.path(hash).is_file()
    }

    /// Whether the cached executable is there and its content still has this hash. One that
    /// does not (changed on disk since it was stored) is deleted, so that it is fetched again:
    /// a node runs only what the driver uploaded. A file that cannot be read (no file
    /// descriptor left, no permission) is an error and is left alone: only a file whose content
    /// is known to differ is deleted.
    pub(crate) fn verified(&self, hash: &str) -> Result<bool, Error> {
        if !self.has(hash) {
            return Ok(false);
        }
        let path = self.path(hash);
        let content = std::fs::File::open(&path).and_then(|f| {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(f)?;
            Ok(hasher.finalize())
        });
        let content = match content {
            Ok(content) => content,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_error("cannot read", &path, e)),
        };
        if content.to_hex().as_str() == hash {
            return Ok(true);
        }
        tracing::warn!(
            path = %path.display(),
            "a cached executable does not match its hash; deleting it and fetching it again"
        );
        let _ = std::fs::remove_file(&path);
        Ok(false)
    }

    /// Stores an executable after checking that its content has this hash.
    pub(crate) fn put(&self, hash: &str, data: &[u8]) -> Result<(), Error> {
        if !valid_hash(hash) {
            return Err(Error::invalid(format!(
                "{hash:?} is not a BLAKE3 hex digest"
            )));
        }
        let actual = blake3::hash(data).to_hex();
        if actual.as_str() != hash {
            return Err(Error::invalid(format!(
                "uploaded executable does not match its hash: announced {hash}, content {actual}"
            )));
        }
        if self.verified(hash)? {
            return Ok(());
        }
        // Write under a temporary name, then rename: a reader never sees a partial file.
        let tmp = self.dir.join(format!(".{hash}.{}.tmp", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| io_error("cannot write", &tmp, e))?;
        f.write_all(data)
            .map_err(|e| io_error("cannot write", &tmp, e))?;
        drop(f);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error("cannot make executable", &tmp, e))?;
        }
        let dest = self.path(hash);
        std::fs::rename(&tmp, &dest).map_err(|e| io_error("cannot store", &dest, e))?;
        self.prune(hash);
        Ok(())
    }

    /// Keeps the [`KEEP`] most recently stored executables (and `keep`), deleting older ones: a
    /// developer rebuilding a driver would otherwise fill the disk. A running worker is unaffected
    /// (its file stays open); a node that needs a pruned one fetches it again.
    fn prune(&self, keep: &str) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = dir
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                valid_hash(&name) && name != keep
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, path) in files.into_iter().skip(KEEP.saturating_sub(1)) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Reads a cached executable. One whose content no longer has its hash is deleted and
    /// refused: a node is never sent what the driver did not upload.
    pub(crate) fn read(&self, hash: &str) -> Result<Bytes, Error> {
        if !self.has(hash) {
            return Err(Error::invalid(format!(
                "no executable {hash} is cached here (it was deleted after it changed on disk, \
                 or pruned to keep the {KEEP} most recent); restart the driver to upload it again"
            )));
        }
        let path = self.path(hash);
        let data = std::fs::read(&path).map_err(|e| io_error("cannot read", &path, e))?;
        if blake3::hash(&data).to_hex().as_str() != hash {
            tracing::warn!(path = %path.display(),
                "a cached executable does not match its hash; deleting it");
            let _ = std::fs::remove_file(&path);
            return Err(Error::invalid(format!(
                "the cached executable {} changed on disk after it was stored, so it was \
                 deleted; restart the driver to upload it again",
                path.display()
            )));
        }
        Ok(Bytes::from(data))
    }
}

/// This process's executable: its path, BLAKE3 hash and file name (computed once).
pub(crate) fn current_exe() -> Result<&'static (PathBuf, String, String), Error> {
    static EXE: OnceLock<Result<(PathBuf, String, String), Error>> = OnceLock::new();
    EXE.get_or_init(|| {
        let path = std::env::current_exe()
            .map_err(|e| Error::invalid(format!("cannot find this program's executable: {e}")))?;
        let data = std::fs::read(&path).map_err(|e| io_error("cannot read", &path, e))?;
        let hash = blake3::hash(&data).to_hex().to_string();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "driver".into());
        Ok((path, hash, name))
    })
    .as_ref()
    .map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_checks_the_hash_and_read_round_trips() {
        let dir = std::env::temp_dir().join(format!("lumen-bin-test-{}", std::process::id()));
        let cache = BinaryCache::open(&dir).unwrap();
        let data = b"#!/bin/sh\necho hi\n";
        let hash = blake3::hash(data).to_hex().to_string();
        assert!(!cache.has(&hash));
        assert!(cache.put(&hash, b"other content").is_err());
        assert!(cache.put("../../etc/passwd", data).is_err());
        cache.put(&hash, data).unwrap();
        assert!(cache.has(&hash));
        assert_eq!(&cache.read(&hash).unwrap()[..], data);
        // Only the most recent KEEP stay.
        let mut hashes = Vec::new();
        for i in 0..KEEP + 3 {
            let d = format!("binary {i}");
            let h = blake3::hash(d.as_bytes()).to_hex().to_string();
            cache.put(&h, d.as_bytes()).unwrap();
            hashes.push(h);
        }
        let kept = hashes.iter().filter(|h| cache.has(h)).count();
        assert!(kept <= KEEP, "{kept} kept");
        assert!(cache.has(hashes.last().unwrap()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_tampered_cached_executable_is_not_used() {
        let dir = std::env::temp_dir().join(format!("lumen-bin-tamper-{}", std::process::id()));
        let cache = BinaryCache::open(&dir).expect("cache");
        let data = b"#!/bin/sh\necho the driver's code\n";
        let hash = blake3::hash(data).to_hex().to_string();
        cache.put(&hash, data).expect("store");
        assert!(cache.verified(&hash).expect("readable"));
        std::fs::write(cache.path(&hash), b"#!/bin/sh\necho planted\n").expect("tamper");
        assert!(
            !cache.verified(&hash).expect("readable"),
            "a changed file must not pass"
        );
        assert!(!cache.has(&hash), "and it is deleted, to be fetched again");
        // Storing it again (what a node does next) brings back the real content.
        cache.put(&hash, data).expect("store again");
        assert!(cache.verified(&hash).expect("readable"));
        // The GCS's read refuses a changed file too, and deletes it.
        std::fs::write(cache.path(&hash), b"#!/bin/sh\necho planted\n").expect("tamper");
        let e = cache.read(&hash).expect_err("a changed file is not sent");
        assert!(e.to_string().contains("changed on disk"), "{e}");
        assert!(!cache.has(&hash));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_unreadable_cached_executable_is_an_error_and_is_kept() {
        let dir = std::env::temp_dir().join(format!("lumen-bin-unread-{}", std::process::id()));
        let cache = BinaryCache::open(&dir).expect("cache");
        let hash = blake3::hash(b"anything").to_hex().to_string();
        // A file that opens but fails to read, for root too: reading address 0 of this
        // process's memory is an I/O error.
        std::os::unix::fs::symlink("/proc/self/mem", cache.path(&hash)).expect("link");
        let e = cache
            .verified(&hash)
            .expect_err("an unreadable file is not verified");
        assert!(e.to_string().contains("cannot read"), "{e}");
        assert!(
            cache.has(&hash),
            "a file that could not be read is not deleted"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
