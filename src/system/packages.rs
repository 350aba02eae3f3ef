//! Working-directory packages (`Config::working_dir`, Ray's `runtime_env={"working_dir": ..}`):
//! a driver packs the directory once at init into a gzipped tar, named by the BLAKE3 hash of its
//! bytes and stored in the GCS like the job's executable ([`binaries`](super::binaries)); each
//! node fetches it by hash and unpacks it once per hash into its session folder, where the job's
//! worker processes then start.
//!
//! Invariants:
//! - Only plain files and directories are packed; symbolic links (never followed, so nothing
//!   outside the directory is read through them), sockets, FIFOs and devices are skipped.
//! - The package is deterministic: entries in name order, times zeroed, modes reduced to
//!   `0o755`/`0o644`, so the same content has the same hash on every run.
//! - Packing stops as soon as the package passes the cap ([`DEFAULT_MAX_BYTES`], Ray's), without
//!   compressing the rest of a huge directory.
//! - Unpacking writes only plain files and directories, only inside the destination (the `tar`
//!   crate refuses `..` and absolute paths), into a temporary folder renamed into place: a
//!   worker never starts in a half-unpacked copy.

use crate::error::{describe_io, Error};
use flate2::write::GzEncoder;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The default cap on a package's (compressed) size: Ray's `GCS_STORAGE_MAX_SIZE`, 100 MiB.
/// (Recent Ray ties it to its largest gRPC message, 500 MiB; lumen keeps 100 MiB, well under its
/// transport's per-connection queue limit of 256 MiB.)
pub(crate) const DEFAULT_MAX_BYTES: u64 = 100 << 20;

/// The environment variable that changes the cap, in bytes (`Config::working_dir_max_bytes`
/// wins over it).
pub(crate) const MAX_BYTES_ENV: &str = "LUMEN_WORKING_DIR_MAX_BYTES";

/// The cap to apply: `configured`, else [`MAX_BYTES_ENV`], else [`DEFAULT_MAX_BYTES`].
pub(crate) fn max_bytes(configured: Option<u64>) -> Result<u64, Error> {
    if let Some(n) = configured {
        return Ok(n);
    }
    match std::env::var(MAX_BYTES_ENV) {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            Error::invalid(format!(
                "{MAX_BYTES_ENV}={v:?} is not a number of bytes (e.g. {MAX_BYTES_ENV}=209715200 \
                 for 200 MiB)"
            ))
        }),
        Err(_) => Ok(DEFAULT_MAX_BYTES),
    }
}

/// A packed working directory.
#[derive(Clone)]
pub(crate) struct Package {
    /// BLAKE3 hex digest of `data`.
    pub(crate) hash: String,
    /// The gzipped tar.
    pub(crate) data: bytes::Bytes,
    /// Entries left out (symbolic links, sockets, FIFOs, devices).
    pub(crate) skipped: usize,
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("hash", &self.hash)
            .field("bytes", &self.data.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

/// A `Vec` that refuses to grow past a cap (so packing stops early).
struct Capped {
    buf: Vec<u8>,
    cap: u64,
    over: bool,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if (self.buf.len() + data.len()) as u64 > self.cap {
            self.over = true;
            return Err(std::io::Error::other("the package passed its cap"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Packs `dir` (see the module's invariants); refuses it with
/// [`Error::WorkingDirTooLarge`] when the package would pass `cap` bytes.
pub(crate) fn pack(dir: &Path, cap: u64) -> Result<Package, Error> {
    crate::config::check_working_dir(dir)?;
    let out = Capped {
        buf: Vec::new(),
        cap,
        over: false,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(out, flate2::Compression::default()));
    let mut skipped = 0;
    let walked = add_dir(&mut tar, dir, Path::new(""), &mut skipped)
        .and_then(|()| tar.into_inner())
        .and_then(|gz| gz.finish());
    let out = match walked {
        Ok(out) => out,
        Err(e) => {
            // The writer said it is over the cap: the only error it makes.
            if e.kind() == std::io::ErrorKind::Other && e.to_string().contains("passed its cap") {
                return Err(too_large(dir, cap));
            }
            return Err(Error::invalid(format!(
                "Config::working_dir({}): cannot pack it: {}",
                dir.display(),
                describe_io(&e)
            )));
        }
    };
    debug_assert!(!out.over);
    let hash = blake3::hash(&out.buf).to_hex().to_string();
    Ok(Package {
        hash,
        data: out.buf.into(),
        skipped,
    })
}

fn too_large(dir: &Path, cap: u64) -> Error {
    let mut size = 0;
    let _ = file_bytes(dir, &mut size);
    Error::WorkingDirTooLarge {
        path: dir.display().to_string(),
        size,
        cap,
    }
}

/// Adds up the sizes of the plain files under `dir` (links not followed).
fn file_bytes(dir: &Path, total: &mut u64) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = std::fs::symlink_metadata(e.path())?;
        if meta.is_dir() {
            file_bytes(&e.path(), total)?;
        } else if meta.is_file() {
            *total += meta.len();
        }
    }
    Ok(())
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h
}

/// Adds the entries of `root/rel` to `tar`, in name order, recursively.
fn add_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    skipped: &mut usize,
) -> std::io::Result<()> {
    let mut entries = std::fs::read_dir(root.join(rel))?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = rel.join(e.file_name());
        let path = e.path();
        // Not followed: a link is an entry of its own, which is skipped.
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            let mut h = header(tar::EntryType::Directory, 0, 0o755);
            tar.append_data(&mut h, &name, std::io::empty())?;
            add_dir(tar, root, &name, skipped)?;
        } else if meta.is_file() {
            let mut open = std::fs::OpenOptions::new();
            open.read(true);
            #[cfg(unix)]
            {
                // Replaced by a link since it was looked at: refused, not followed.
                use std::os::unix::fs::OpenOptionsExt;
                open.custom_flags(libc::O_NOFOLLOW);
            }
            let file = open.open(&path)?;
            let size = meta.len();
            #[cfg(unix)]
            let mode = {
                use std::os::unix::fs::PermissionsExt;
                if meta.permissions().mode() & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                }
            };
            #[cfg(not(unix))]
            let mode = 0o644;
            let mut h = header(tar::EntryType::Regular, size, mode);
            // Exactly the size announced: a file that grew meanwhile is cut there, one that
            // shrank fails the packing.
            tar.append_data(&mut h, &name, file.take(size))?;
        } else {
            tracing::debug!(path = %path.display(),
                "working directory: not a plain file or directory; left out");
            *skipped += 1;
        }
    }
    Ok(())
}

/// Unpacks a package into `dest` (which must not exist yet): plain files and directories only,
/// written into a temporary sibling folder that is then renamed to `dest`. When another process
/// unpacked the same package there first, its copy is kept.
pub(crate) fn unpack(data: &[u8], dest: &Path) -> Result<(), Error> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp: PathBuf = parent.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let fail = |what: &str, e: std::io::Error| {
        Error::invalid(format!(
            "cannot unpack the job's working directory into {}: {what}: {}",
            dest.display(),
            describe_io(&e)
        ))
    };
    std::fs::create_dir_all(&tmp).map_err(|e| fail("cannot create a folder", e))?;
    let result = (|| {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(data));
        archive.set_preserve_mtime(false);
        for entry in archive.entries()? {
            let mut entry = entry?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Directory => {
                    entry.unpack_in(&tmp)?;
                }
                other => tracing::warn!(kind = ?other, path = ?entry.path().ok(),
                    "working directory package: not a plain file or directory; left out"),
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(fail("a broken package", e));
    }
    match std::fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        // Another worker start unpacked it first.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(fail("cannot move it into place", e))
        }
    }
}

/// A node's unpacked working directories, one folder per package hash.
#[derive(Clone, Debug)]
pub(crate) struct WorkingDirs {
    dir: PathBuf,
}

impl WorkingDirs {
    /// The folder `dir` (created when the first package is unpacked).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        WorkingDirs { dir: dir.into() }
    }

    /// Where the package with this hash is (or would be) unpacked; `None` for a hash that is
    /// not a BLAKE3 hex digest (so never a path outside the folder).
    pub(crate) fn path(&self, hash: &str) -> Option<PathBuf> {
        (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(hash))
    }

    /// Unpacks `data` as the package `hash` (checked), unless it is unpacked already; returns
    /// where.
    pub(crate) fn unpack(&self, hash: &str, data: &[u8]) -> Result<PathBuf, Error> {
        let dest = self
            .path(hash)
            .ok_or_else(|| Error::invalid(format!("{hash:?} is not a BLAKE3 hex digest")))?;
        let actual = blake3::hash(data).to_hex();
        if actual.as_str() != hash {
            return Err(Error::invalid(format!(
                "the working directory package does not match its hash: announced {hash}, \
                 content {actual}"
            )));
        }
        if !dest.is_dir() {
            std::fs::create_dir_all(&self.dir).map_err(|e| {
                Error::invalid(format!(
                    "cannot create {}: {}",
                    self.dir.display(),
                    describe_io(&e)
                ))
            })?;
            unpack(data, &dest)?;
        }
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lumen-pkg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    }

    #[test]
    fn a_directory_round_trips_without_its_links_and_the_same_content_has_the_same_hash() {
        let root = scratch("round");
        let src = root.join("src");
        std::fs::create_dir_all(src.join("data/deeper")).expect("folders");
        std::fs::create_dir_all(src.join("empty")).expect("folder");
        std::fs::write(src.join("top.txt"), "top").expect("file");
        std::fs::write(src.join("data/deeper/x.bin"), [0u8, 1, 2, 255]).expect("file");
        let long = "n".repeat(150);
        std::fs::write(src.join("data").join(&long), "a long name").expect("file");
        std::fs::write(root.join("outside.txt"), "secret").expect("file");
        std::os::unix::fs::symlink(root.join("outside.txt"), src.join("link")).expect("link");
        std::os::unix::fs::symlink(&root, src.join("dirlink")).expect("link");
        let p = pack(&src, DEFAULT_MAX_BYTES).expect("packs");
        assert_eq!(p.skipped, 2, "both links left out");
        assert_eq!(pack(&src, DEFAULT_MAX_BYTES).expect("packs").hash, p.hash);
        let dirs = WorkingDirs::new(root.join("unpacked"));
        let at = dirs.unpack(&p.hash, &p.data).expect("unpacks");
        assert_eq!(
            std::fs::read_to_string(at.join("top.txt")).expect("read"),
            "top"
        );
        assert_eq!(
            std::fs::read(at.join("data/deeper/x.bin")).expect("read"),
            [0u8, 1, 2, 255]
        );
        assert_eq!(
            std::fs::read_to_string(at.join("data").join(&long)).expect("read"),
            "a long name"
        );
        assert!(at.join("empty").is_dir());
        assert!(!at.join("link").exists() && !at.join("dirlink").exists());
        // Once per hash: a second unpack keeps the copy there.
        std::fs::write(at.join("written-by-a-task"), "x").expect("file");
        assert_eq!(dirs.unpack(&p.hash, &p.data).expect("again"), at);
        assert!(at.join("written-by-a-task").exists());
        // Refused: content that does not match, a hash that is not one.
        assert!(dirs.unpack(&p.hash, b"other").is_err());
        assert!(dirs.unpack("../../etc", &p.data).is_err());
        // A change of content is a new package.
        std::fs::write(src.join("top.txt"), "changed").expect("file");
        assert_ne!(pack(&src, DEFAULT_MAX_BYTES).expect("packs").hash, p.hash);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_directory_over_the_cap_or_not_a_directory_is_refused_saying_why() {
        let root = scratch("cap");
        // Incompressible bytes, so the package is about as large as the file.
        let mut noise = vec![0u8; 64 * 1024];
        blake3::Hasher::new().finalize_xof().fill(&mut noise);
        std::fs::write(root.join("noise.bin"), &noise).expect("file");
        let e = pack(&root, 16 * 1024).expect_err("over the cap");
        match &e {
            Error::WorkingDirTooLarge { size, cap, .. } => {
                assert_eq!((*size, *cap), (noise.len() as u64, 16 * 1024));
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("16384") && text.contains("65536") && text.contains(MAX_BYTES_ENV),
            "{text}"
        );
        assert!(pack(&root, 1 << 20).is_ok(), "under a larger cap");
        let file = pack(&root.join("noise.bin"), 1 << 20).expect_err("a file");
        assert!(file.to_string().contains("not a directory"), "{file}");
        let missing = pack(&root.join("nowhere"), 1 << 20).expect_err("missing");
        assert!(missing.to_string().contains("nowhere"), "{missing}");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn the_cap_comes_from_the_config_else_the_environment_else_rays() {
        assert_eq!(max_bytes(Some(5)).expect("given"), 5);
        if std::env::var_os(MAX_BYTES_ENV).is_none() {
            assert_eq!(max_bytes(None).expect("default"), DEFAULT_MAX_BYTES);
        }
    }
}
