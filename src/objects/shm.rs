//! Shared memory between the processes of a node: a large object's bytes in a memfd segment
//! that another process on the same node maps, instead of pulling a copy over QUIC.
//!
//! A segment is created by the process that stores the object: when a `Buffer` is made by
//! copying a slice (the bytes go straight into one), or on the first read by another process of
//! its node (the stored bytes are copied into one once, and the store keeps that copy). The
//! reader is answered with a [`ShmHandle`]; it opens the segment through
//! `/proc/<pid>/fd/<fd>` of the holder, checks that the segment's name carries the handle's
//! random tag (so a descriptor number reused for another file is never mapped) and its size,
//! and maps it read-only: its `Bytes` are a view of the holder's pages. There is nothing to
//! clean up after a crash: a memfd is freed by the kernel when its last descriptor and mapping
//! are gone, whichever process held them. Where any of this is unavailable (another operating
//! system, a process whose descriptors cannot be opened) the reader asks again without sharing.
//!
//! Segments that no other process has mapped are kept for reuse when their object is freed
//! (up to [`POOL_BYTES`]): a later copy of the same size writes into memory already mapped,
//! without a page fault per 4 KiB, as Ray's store reuses its mapped arena.

pub(crate) use crate::protocol::owner::{ShareKey, ShmHandle};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Objects smaller than this are read through the usual messages: mapping a segment costs more
/// than sending them.
pub(crate) const SHARE_MIN: usize = 256 << 10;

/// Freed segments kept for reuse, at most, in bytes (less when a store's capacity is small:
/// [`limit_pool`]).
pub(crate) const POOL_BYTES: usize = 512 << 20;

/// The pool's bound now.
static POOL_LIMIT: AtomicUsize = AtomicUsize::new(POOL_BYTES);

/// Keeps at most a quarter of a store's `capacity` in freed segments.
pub(crate) fn limit_pool(capacity: u64) {
    let quarter = usize::try_from(capacity / 4).unwrap_or(usize::MAX);
    POOL_LIMIT.fetch_min(quarter, Ordering::Relaxed);
}

/// This machine, as seen by processes that could share memory: a hash of the kernel's boot id
/// (the same for every process of this boot of this machine); `None` where there is none.
pub(crate) fn host() -> Option<u64> {
    static HOST: OnceLock<Option<u64>> = OnceLock::new();
    *HOST.get_or_init(|| {
        let id = std::fs::read("/proc/sys/kernel/random/boot_id").ok()?;
        let hash = blake3::hash(&id);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        Some(u64::from_le_bytes(first))
    })
}

/// The key a process on `node` reads with, if it can share memory at all.
pub(crate) fn key_for(node: crate::ids::NodeId) -> Option<ShareKey> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    host().map(|host| ShareKey { host, node })
}

/// A memfd segment mapped writable in this process.
struct Mapped {
    file: std::fs::File,
    map: memmap2::MmapMut,
    tag: u64,
}

/// A segment holding one object's bytes, shared as [`Bytes`] through [`Segment::bytes`].
pub(crate) struct Segment {
    mapped: Option<Mapped>,
    /// Another process may have mapped it: it is never reused.
    exported: AtomicBool,
}

impl Segment {
    /// A segment holding a copy of `data` (a reused one of the same size when the pool has it).
    pub(crate) fn copy_of(data: &[u8]) -> std::io::Result<Arc<Segment>> {
        let mut mapped = match pool().lock().take(data.len()) {
            Some(m) => m,
            None => create(data.len())?,
        };
        mapped.map.copy_from_slice(data);
        let seg = Arc::new(Segment {
            mapped: Some(mapped),
            exported: AtomicBool::new(false),
        });
        live().lock().insert(seg.start(), Arc::downgrade(&seg));
        Ok(seg)
    }

    fn start(&self) -> usize {
        self.mapped.as_ref().map_or(0, |m| m.map.as_ptr() as usize)
    }

    /// The segment's bytes, shared (they keep the segment alive).
    pub(crate) fn bytes(self: &Arc<Self>) -> Bytes {
        Bytes::from_owner(View(self.clone()))
    }

    /// The handle another process maps it with; from now on it is not reused.
    fn export(&self) -> Option<ShmHandle> {
        use std::os::fd::AsRawFd;
        let m = self.mapped.as_ref()?;
        self.exported.store(true, Ordering::Release);
        Some(ShmHandle {
            pid: std::process::id(),
            fd: m.file.as_raw_fd(),
            tag: m.tag,
            len: m.map.len() as u64,
        })
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let Some(m) = self.mapped.take() else { return };
        live().lock().remove(&(m.map.as_ptr() as usize));
        if !self.exported.load(Ordering::Acquire) {
            pool().lock().give(m);
        }
    }
}

/// A segment's bytes, as a `Bytes` owner.
struct View(Arc<Segment>);

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        self.0.mapped.as_ref().map_or(&[], |m| &m.map[..])
    }
}

/// The handle of the segment `bytes` are, if they are a whole segment of this process: for a
/// reader in another process to map them.
pub(crate) fn export(bytes: &Bytes) -> Option<ShmHandle> {
    let seg = live().lock().get(&(bytes.as_ptr() as usize))?.upgrade()?;
    if seg.mapped.as_ref()?.map.len() != bytes.len() {
        return None;
    }
    seg.export()
}

/// Maps the segment `h` names, read-only: its bytes, shared with the process holding it.
pub(crate) fn open(h: &ShmHandle) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let refused = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    let expected = format!("/memfd:{} (deleted)", name(h.tag));
    let file = std::fs::File::open(format!("/proc/{}/fd/{}", h.pid, h.fd))?;
    // What was opened, checked after opening: the descriptor may have been reused meanwhile.
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    if opened.as_os_str() != expected.as_str() {
        return Err(refused(format!(
            "descriptor {} of process {} is {}, not the object's segment",
            h.fd,
            h.pid,
            opened.display()
        )));
    }
    let len = usize::try_from(h.len).map_err(|_| refused("segment too large".into()))?;
    if file.metadata()?.len() < h.len || len == 0 {
        return Err(refused(format!("segment shorter than {len} bytes")));
    }
    // SAFETY: the segment is a memfd that its holder only wrote before handing it out (objects
    // are immutable), mapped read-only here; it stays valid for as long as the map lives.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file)? };
    mapped().lock().insert(map.as_ptr() as usize, len);
    Ok(Bytes::from_owner(Mapping(map)))
}

/// Another process's segment, mapped here.
struct Mapping(memmap2::Mmap);

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        mapped().lock().remove(&(self.0.as_ptr() as usize));
    }
}

/// Whether `bytes` are a whole mapping of another process's segment ([`open`]).
pub(crate) fn is_mapping(bytes: &Bytes) -> bool {
    mapped().lock().get(&(bytes.as_ptr() as usize)) == Some(&bytes.len())
}

/// Segments of other processes mapped here: their length by the address of their first byte.
fn mapped() -> &'static Mutex<std::collections::HashMap<usize, usize>> {
    static MAPPED: OnceLock<Mutex<std::collections::HashMap<usize, usize>>> = OnceLock::new();
    MAPPED.get_or_init(Mutex::default)
}

fn name(tag: u64) -> String {
    format!("lumen-{tag:016x}")
}

/// Segments alive in this process (each holds a descriptor).
static SEGMENTS: AtomicUsize = AtomicUsize::new(0);

/// How many segments this process may hold at once: half of its descriptor limit (raised to the
/// hard limit first), so that sockets and files always have room; past it, values are copied
/// the usual way.
fn max_segments() -> usize {
    static MAX: OnceLock<usize> = OnceLock::new();
    *MAX.get_or_init(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `lim` is a valid rlimit for the kernel to fill and read.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 256;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        usize::try_from(lim.rlim_cur / 2).unwrap_or(usize::MAX)
    })
}

#[cfg(target_os = "linux")]
fn create(len: usize) -> std::io::Result<Mapped> {
    use std::os::fd::FromRawFd;
    if SEGMENTS.load(Ordering::Relaxed) >= max_segments() {
        return Err(std::io::Error::other(
            "this process holds as many shared segments as its descriptor limit allows",
        ));
    }
    let mut t = [0u8; 8];
    getrandom::getrandom(&mut t).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tag = u64::from_le_bytes(t);
    let cname = std::ffi::CString::new(name(tag)).map_err(std::io::Error::other)?;
    // SAFETY: a valid C string; the descriptor returned is owned by the `File` below.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(len as u64)?;
    // SAFETY: the memfd is private to this process until exported, and exported segments are
    // never written again.
    // Populated at once: faulting the pages in one by one as the copy writes them costs more.
    let map = unsafe { memmap2::MmapOptions::new().populate().map_mut(&file)? };
    SEGMENTS.fetch_add(1, Ordering::Relaxed);
    Ok(Mapped { file, map, tag })
}

impl Drop for Mapped {
    fn drop(&mut self) {
        SEGMENTS.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(not(target_os = "linux"))]
fn create(_len: usize) -> std::io::Result<Mapped> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "shared-memory segments need Linux (memfd)",
    ))
}

/// Freed segments by age, oldest first.
#[derive(Default)]
struct Pool {
    free: VecDeque<Mapped>,
    bytes: usize,
}

impl Pool {
    fn take(&mut self, len: usize) -> Option<Mapped> {
        let at = self.free.iter().rposition(|m| m.map.len() == len)?;
        let m = self.free.remove(at)?;
        self.bytes -= len;
        Some(m)
    }

    fn give(&mut self, m: Mapped) {
        let (len, limit) = (m.map.len(), POOL_LIMIT.load(Ordering::Relaxed));
        if len > limit {
            return;
        }
        self.bytes += len;
        self.free.push_back(m);
        while self.bytes > limit {
            match self.free.pop_front() {
                Some(old) => self.bytes -= old.map.len(),
                None => break,
            }
        }
    }
}

fn pool() -> &'static Mutex<Pool> {
    static POOL: OnceLock<Mutex<Pool>> = OnceLock::new();
    POOL.get_or_init(Mutex::default)
}

/// Live segments by the address of their first byte, to find the segment a stored value is.
fn live() -> &'static Mutex<std::collections::HashMap<usize, Weak<Segment>>> {
    static LIVE: OnceLock<Mutex<std::collections::HashMap<usize, Weak<Segment>>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_segment_maps_elsewhere_as_the_same_bytes() {
        let data: Vec<u8> = (0..(SHARE_MIN + 7)).map(|i| i as u8).collect();
        let seg = Segment::copy_of(&data).expect("segment");
        let bytes = seg.bytes();
        let h = export(&bytes).expect("a whole segment exports");
        let mapped = open(&h).expect("open through /proc");
        assert_eq!(&mapped[..], &data[..]);
        assert_ne!(mapped.as_ptr(), bytes.as_ptr(), "a second mapping");
        assert!(is_mapping(&mapped) && !is_mapping(&bytes) && !is_mapping(&mapped.slice(1..)));
        // A slice of the segment is not the segment.
        assert!(export(&bytes.slice(1..)).is_none());
    }

    #[test]
    fn a_wrong_tag_or_size_is_refused() {
        let seg = Segment::copy_of(&vec![1u8; SHARE_MIN]).expect("segment");
        let h = export(&seg.bytes()).expect("exports");
        let err = open(&ShmHandle {
            tag: h.tag ^ 1,
            ..h
        })
        .expect_err("wrong tag");
        assert!(
            err.to_string().contains("not the object's segment"),
            "{err}"
        );
        assert!(open(&ShmHandle {
            len: h.len + 1,
            ..h
        })
        .is_err());
        assert!(open(&ShmHandle { fd: -1, ..h }).is_err());
    }

    #[test]
    fn unexported_segments_are_reused_and_exported_ones_are_not() {
        let len = SHARE_MIN + 4096 * 3 + 1;
        let seg = Segment::copy_of(&vec![2u8; len]).expect("segment");
        let first = seg.start();
        drop(seg);
        let again = Segment::copy_of(&vec![3u8; len]).expect("segment");
        assert_eq!(again.start(), first, "the freed segment was reused");
        assert!(again.bytes().iter().all(|b| *b == 3));
        let h = export(&again.bytes()).expect("exports");
        let mapped = open(&h).expect("open");
        drop(again);
        // Still mapped here, and not handed to the next copy.
        let next = Segment::copy_of(&vec![4u8; len]).expect("segment");
        assert!(mapped.iter().all(|b| *b == 3));
        assert!(next.bytes().iter().all(|b| *b == 4));
    }
}
