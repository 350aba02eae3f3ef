//! The store's memory: every stored object's bytes, in memory, spilled to a file, or both, held
//! to the store's capacity (`object_store_memory`).
//!
//! A value is admitted before it is stored ([`StoreMemory::admit`]): when it does not fit, the
//! objects used least recently ([`Budget`]) make room, as Ray's store does: a secondary copy (of
//! an object another process keeps, [`StoreMemory::admit_secondary`]) is evicted, simply dropped:
//! it is read from there again when needed; a copy that is also on disk is dropped from memory
//! (free); any other is written to the spill folder first. An object being read at that moment
//! (a reader holds its bytes) stays. A value that cannot fit
//! even then is refused with [`Error::ObjectStoreFull`] saying how much was asked and what is
//! free, and the store goes on. Reading a spilled object reads its file and keeps the copy in
//! memory while there is room for it.
//!
//! The shards (actors, [`store`](crate::objects::store)) keep a [`Slot`] per object and do the
//! waiting; this part is shared by them and by the threads that put, behind one lock held for the
//! accounting and for the spills it decides.

use crate::error::Error;
use crate::ids::{IdMap, ObjectId};
use crate::objects::budget::Budget;
use crate::objects::shm::{self, ShareKey, ShmHandle};
use bytes::Bytes;
use parking_lot::Mutex;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub(crate) use crate::config::StoreLimits;

/// One stored object's bytes.
#[derive(Debug)]
pub(crate) struct Slot {
    id: ObjectId,
    size: u64,
    /// A copy of an object kept by another process: evicted, not spilled, to make room (until
    /// it becomes the kept copy, [`StoreMemory::promote`]).
    secondary: AtomicBool,
    state: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// In memory. Readers get `Bytes` that hold a clone of this `Arc`, so a count above one
    /// means someone is reading it.
    memory: Option<Arc<Bytes>>,
    /// On disk.
    file: Option<PathBuf>,
    /// A secondary copy dropped to make room: this slot holds nothing any more.
    evicted: bool,
}

impl Slot {
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn is_secondary(&self) -> bool {
        self.secondary.load(Ordering::Relaxed)
    }

    /// Whether this secondary copy was dropped to make room (read the object from its keeper
    /// again).
    pub(crate) fn evicted(&self) -> bool {
        self.state.lock().evicted
    }

    /// The handle of a shared-memory segment holding this object, for another process of this
    /// node to map: the bytes are moved into one the first time (one copy, which this store
    /// then keeps instead). `None` when it is small, not in memory (spilled: read it the usual
    /// way) or a segment cannot be made.
    fn share(&self) -> Option<ShmHandle> {
        if (self.size as usize) < shm::SHARE_MIN {
            return None;
        }
        let mut st = self.state.lock();
        let memory = st.memory.as_ref()?;
        if let Some(h) = shm::export(memory) {
            return Some(h);
        }
        let seg = match shm::Segment::copy_of(memory) {
            Ok(seg) => seg,
            Err(e) => {
                tracing::debug!(object = %self.id, error = %e, "no shared-memory segment");
                return None;
            }
        };
        let bytes = seg.bytes();
        let h = shm::export(&bytes)?;
        st.memory = Some(Arc::new(bytes));
        Some(h)
    }
}

/// Bytes that keep a stored copy alive (and visibly in use) for as long as a reader has them.
struct Shared(Arc<Bytes>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

fn share(memory: &Arc<Bytes>) -> Bytes {
    Bytes::from_owner(Shared(memory.clone()))
}

/// What a store holds, in memory and on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryStats {
    pub(crate) capacity: u64,
    /// Bytes of objects in memory, and how many.
    pub(crate) used: u64,
    pub(crate) resident: usize,
    /// Objects with a spill file, and their bytes (some may also be in memory again).
    pub(crate) spilled_objects: usize,
    pub(crate) spilled_bytes: u64,
    /// Secondary copies evicted to make room, and their bytes, since the store began.
    pub(crate) evicted_objects: u64,
    pub(crate) evicted_bytes: u64,
    /// Bytes of values sent to readers in other processes since the store began.
    pub(crate) sent_bytes: u64,
}

struct Inner {
    budget: Budget,
    slots: IdMap<ObjectId, Arc<Slot>>,
    spilled_objects: usize,
    spilled_bytes: u64,
    /// Secondary copies evicted, and their bytes, since the store began.
    evicted_objects: u64,
    evicted_bytes: u64,
}

/// A store's memory: its slots, their budget and its spill folder.
pub(crate) struct StoreMemory {
    inner: Mutex<Inner>,
    /// This store's own spill folder, created at the first spill (or why it could not be).
    dir: PathBuf,
    created: OnceLock<Result<(), String>>,
    /// The node this store is on, as processes that can map its shared memory say it.
    key: OnceLock<ShareKey>,
    /// Pulls of copies from other processes in flight, in pages of [`PULL_PAGE`] bytes: at most
    /// the store's capacity arrives at once.
    pulls: Arc<tokio::sync::Semaphore>,
    pull_pages: u32,
    /// Bytes of values sent to readers in other processes (not mapped by them).
    sent: AtomicU64,
    /// The secondary copies evicted, in order, for whoever told others of them
    /// ([`evictions`](Self::evictions)).
    evicted: (flume::Sender<ObjectId>, flume::Receiver<ObjectId>),
}

/// The unit pulls in flight are counted in.
const PULL_PAGE: u64 = 4096;

impl std::fmt::Debug for StoreMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMemory")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

impl StoreMemory {
    pub(crate) fn new(limits: StoreLimits) -> Self {
        shm::limit_pool(limits.capacity);
        let pull_pages = (limits.capacity / PULL_PAGE).clamp(
            1,
            u64::from(u32::MAX).min(tokio::sync::Semaphore::MAX_PERMITS as u64),
        ) as u32;
        let parent = limits.spill_dir.unwrap_or_else(std::env::temp_dir);
        let unique = format!(
            "lumen-spill-{}-{:08x}",
            std::process::id(),
            crate::ids::ObjectId::for_put().shard(u32::MAX as usize)
        );
        StoreMemory {
            inner: Mutex::new(Inner {
                budget: Budget::new(limits.capacity),
                slots: IdMap::default(),
                spilled_objects: 0,
                spilled_bytes: 0,
                evicted_objects: 0,
                evicted_bytes: 0,
            }),
            dir: parent.join(unique),
            created: OnceLock::new(),
            key: OnceLock::new(),
            pulls: Arc::new(tokio::sync::Semaphore::new(pull_pages as usize)),
            pull_pages,
            sent: AtomicU64::new(0),
            evicted: flume::unbounded(),
        }
    }

    /// Waits until a pull of `size` bytes fits with the pulls in flight (their total stays
    /// within the store's capacity; pulls get room in the order they ask; a value larger than
    /// the whole store waits for all the others and goes alone, and [`admit`](Self::admit)
    /// then decides as usual). Held until the pull is done.
    pub(crate) async fn pull_room(&self, size: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let pages = size.div_ceil(PULL_PAGE).min(u64::from(self.pull_pages)) as u32;
        self.pulls.clone().acquire_many_owned(pages).await.ok()
    }

    /// Places this store on `node`: processes of that node may then map its large objects.
    pub(crate) fn set_node(&self, node: crate::ids::NodeId) {
        if let Some(key) = shm::key_for(node) {
            let _ = self.key.set(key);
        }
    }

    /// The key to read with from a process on `node`: `Some` when that is this store's node
    /// (the two can share memory).
    pub(crate) fn share_key(&self, node: crate::ids::NodeId) -> Option<ShareKey> {
        self.key.get().copied().filter(|k| k.node == node)
    }

    /// A shared-memory handle of object `id` for a reader that asked with `asker`: `None`
    /// unless the reader is on this store's node and the object is large and in memory.
    pub(crate) fn share(&self, id: ObjectId, asker: ShareKey) -> Option<ShmHandle> {
        if self.key.get() != Some(&asker) {
            return None;
        }
        let slot = self.inner.lock().slots.get(&id).cloned()?;
        slot.share()
    }

    /// Takes `bytes` as object `id`, making room if needed; refuses it with
    /// [`Error::ObjectStoreFull`] if room cannot be made. A second admit of the same id keeps
    /// the first (objects are immutable). A mapping of another process's shared memory
    /// ([`shm::is_mapping`]) takes no room here: it is that process's memory, counted by its
    /// store, and it is never spilled (it goes when the object is freed).
    pub(crate) fn admit(&self, id: ObjectId, bytes: Bytes) -> Result<Arc<Slot>, Error> {
        self.admit_as(id, bytes, false)
    }

    /// Like [`admit`](Self::admit), for a secondary copy: a copy of an object another process
    /// keeps, read from there. Under pressure it is evicted (dropped, see [`Slot::evicted`])
    /// rather than spilled.
    pub(crate) fn admit_secondary(&self, id: ObjectId, bytes: Bytes) -> Result<Arc<Slot>, Error> {
        self.admit_as(id, bytes, true)
    }

    fn admit_as(&self, id: ObjectId, bytes: Bytes, secondary: bool) -> Result<Arc<Slot>, Error> {
        let size = bytes.len() as u64;
        let mut inner = self.inner.lock();
        if let Some(slot) = inner.slots.get(&id) {
            return Ok(slot.clone());
        }
        let mapped = shm::is_mapping(&bytes);
        if !mapped && !inner.budget.fits(size) {
            if let Err(reason) = self.make_room(&mut inner, size) {
                return Err(Error::ObjectStoreFull {
                    what: format!("object {id}"),
                    asked: size,
                    free: inner.budget.free(),
                    capacity: inner.budget.capacity(),
                    reason,
                });
            }
        }
        let slot = Arc::new(Slot {
            id,
            size,
            secondary: AtomicBool::new(secondary),
            state: Mutex::new(SlotState {
                memory: Some(Arc::new(bytes)),
                file: None,
                evicted: false,
            }),
        });
        if !mapped {
            inner.budget.insert(id, size);
        }
        inner.slots.insert(id, slot.clone());
        Ok(slot)
    }

    /// Spills or evicts the least recently used objects until `size` bytes fit; says why not
    /// when they cannot.
    fn make_room(&self, inner: &mut Inner, size: u64) -> Result<(), String> {
        if size > inner.budget.capacity() {
            return Err(format!(
                "the object is larger than the whole store (object_store_memory = {} bytes)",
                inner.budget.capacity()
            ));
        }
        let coldest: Vec<ObjectId> = inner.budget.coldest().map(|(id, _)| id).collect();
        // Secondary copies first (dropping them costs nothing here), then the rest.
        let (secondary, primary): (Vec<_>, Vec<_>) = coldest
            .into_iter()
            .partition(|id| inner.slots.get(id).is_some_and(|s| s.is_secondary()));
        let mut in_use = 0u64;
        for id in secondary.into_iter().chain(primary) {
            if inner.budget.fits(size) {
                break;
            }
            let Some(slot) = inner.slots.get(&id).cloned() else {
                inner.budget.release(id);
                continue;
            };
            match self.spill(&slot) {
                Ok(Spill::Dropped) => {
                    tracing::debug!(object = %id, bytes = slot.size, "evicted a secondary copy");
                    inner.evicted_objects += 1;
                    inner.evicted_bytes += slot.size;
                    let _ = self.evicted.0.send(id);
                    inner.budget.release(id);
                    inner.slots.remove(&id);
                }
                Ok(Spill::Written) => {
                    inner.spilled_objects += 1;
                    inner.spilled_bytes += slot.size;
                    inner.budget.release(id);
                }
                Ok(Spill::Evicted) => {
                    inner.budget.release(id);
                }
                Ok(Spill::InUse) => in_use += slot.size,
                Err(reason) => return Err(reason),
            }
        }
        if inner.budget.fits(size) {
            return Ok(());
        }
        Err(format!(
            "{in_use} bytes in memory are being read and cannot be spilled; free objects (drop \
             their refs) or raise object_store_memory"
        ))
    }

    /// Takes `slot` out of memory: drops it if it is a secondary copy, else writes it to its
    /// spill file first unless it has one.
    fn spill(&self, slot: &Slot) -> Result<Spill, String> {
        let mut st = slot.state.lock();
        let Some(memory) = &st.memory else {
            return Ok(Spill::Evicted);
        };
        if Arc::strong_count(memory) > 1 {
            return Ok(Spill::InUse);
        }
        if slot.is_secondary() {
            st.memory = None;
            st.evicted = true;
            return Ok(Spill::Dropped);
        }
        if st.file.is_some() {
            st.memory = None;
            return Ok(Spill::Evicted);
        }
        let path = self.spill_path(slot.id)?;
        std::fs::write(&path, &memory[..]).map_err(|e| {
            let _ = std::fs::remove_file(&path);
            format!(
                "spilling to {} failed: {}",
                path.display(),
                crate::error::describe_io(&e)
            )
        })?;
        tracing::debug!(object = %slot.id, bytes = slot.size, file = %path.display(), "spilled");
        st.file = Some(path);
        st.memory = None;
        Ok(Spill::Written)
    }

    /// The spill file of `id`, creating this store's folder on first use.
    fn spill_path(&self, id: ObjectId) -> Result<PathBuf, String> {
        let created = self.created.get_or_init(|| {
            std::fs::create_dir_all(&self.dir).map_err(|e| {
                format!(
                    "cannot create the spill folder {}: {}",
                    self.dir.display(),
                    crate::error::describe_io(&e)
                )
            })
        });
        created.clone()?;
        Ok(self.dir.join(id.to_string()))
    }

    /// The bytes of `slot`: shared from memory, or read back from its spill file (and kept in
    /// memory again when there is room).
    pub(crate) fn read(&self, slot: &Slot) -> Result<Bytes, Error> {
        let file = {
            let st = slot.state.lock();
            if let Some(memory) = &st.memory {
                let bytes = share(memory);
                drop(st);
                self.inner.lock().budget.touch(slot.id);
                return Ok(bytes);
            }
            st.file.clone()
        };
        let lost = |reason: String| Error::ObjectLost {
            object: slot.id.to_string(),
            reason,
        };
        let Some(path) = file else {
            let why = if slot.evicted() {
                "this copy was evicted to make room while being read"
            } else {
                "it was freed while being read"
            };
            return Err(lost(why.into()));
        };
        let data = std::fs::read(&path).map_err(|e| {
            lost(format!(
                "its spill file {} could not be read: {}",
                path.display(),
                crate::error::describe_io(&e)
            ))
        })?;
        let memory = Arc::new(Bytes::from(data));
        let mut inner = self.inner.lock();
        if inner.slots.contains_key(&slot.id) && inner.budget.fits(slot.size) {
            let mut st = slot.state.lock();
            if st.memory.is_none() {
                st.memory = Some(memory.clone());
                inner.budget.insert(slot.id, slot.size);
            }
        }
        Ok(share(&memory))
    }

    /// Secondary copy `id` becomes a copy this store keeps for its owner: spilled, not evicted,
    /// under pressure. `false` if the store no longer has it (evicted or freed).
    pub(crate) fn promote(&self, id: ObjectId) -> bool {
        let Some(slot) = self.inner.lock().slots.get(&id).cloned() else {
            return false;
        };
        let st = slot.state.lock();
        if st.evicted {
            return false;
        }
        slot.secondary.store(false, Ordering::Relaxed);
        true
    }

    /// Whether this store holds object `id`'s bytes (in memory or spilled).
    pub(crate) fn holds(&self, id: ObjectId) -> bool {
        self.inner.lock().slots.contains_key(&id)
    }

    /// The ids of secondary copies this store evicts, as it evicts them.
    pub(crate) fn evictions(&self) -> flume::Receiver<ObjectId> {
        self.evicted.1.clone()
    }

    /// Counts `bytes` of values sent to readers in other processes.
    pub(crate) fn sent(&self, bytes: u64) {
        self.sent.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The bytes of secondary copy `id` if this store still has them in memory (`None`:
    /// never kept, freed or evicted: read it from its keeper).
    pub(crate) fn read_secondary(&self, id: ObjectId) -> Option<Bytes> {
        let slot = self.inner.lock().slots.get(&id).cloned()?;
        let bytes = share(slot.state.lock().memory.as_ref()?);
        self.inner.lock().budget.touch(id);
        Some(bytes)
    }

    /// Drops object `id`: its memory and its spill file.
    pub(crate) fn forget(&self, id: ObjectId) {
        let mut inner = self.inner.lock();
        let Some(slot) = inner.slots.remove(&id) else {
            return;
        };
        inner.budget.release(id);
        let mut st = slot.state.lock();
        st.memory = None;
        if let Some(path) = st.file.take() {
            inner.spilled_objects -= 1;
            inner.spilled_bytes -= slot.size;
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a spill file");
            }
        }
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        let inner = self.inner.lock();
        MemoryStats {
            capacity: inner.budget.capacity(),
            used: inner.budget.used(),
            resident: inner.budget.resident(),
            spilled_objects: inner.spilled_objects,
            spilled_bytes: inner.spilled_bytes,
            evicted_objects: inner.evicted_objects,
            evicted_bytes: inner.evicted_bytes,
            sent_bytes: self.sent.load(Ordering::Relaxed),
        }
    }

    /// This store's spill folder (it exists once something spilled).
    #[cfg(test)]
    pub(crate) fn spill_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StoreMemory {
    fn drop(&mut self) {
        if let Some(Ok(())) = self.created.get() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove the spill folder");
            }
        }
    }
}

/// What taking an object out of memory did.
enum Spill {
    /// Written to its spill file, then dropped from memory.
    Written,
    /// Dropped from memory (it was on disk already, or not in memory).
    Evicted,
    /// A secondary copy, dropped: read from its keeper again when needed.
    Dropped,
    /// Left alone: a reader holds its bytes.
    InUse,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn store(capacity: usize, dir: &Path) -> StoreMemory {
        StoreMemory::new(StoreLimits {
            capacity: capacity as u64,
            spill_dir: Some(dir.to_path_buf()),
        })
    }

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lumen-spill-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn blob(n: u8, size: usize) -> Bytes {
        Bytes::from(vec![n; size])
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapping_of_another_processs_segment_takes_no_room() {
        let mem = store(MIB, &scratch("mapped"));
        let seg = shm::Segment::copy_of(&vec![6u8; 2 * MIB]).expect("segment");
        let h = shm::export(&seg.bytes()).expect("exports");
        let mapped = shm::open(&h).expect("maps");
        let slot = mem.admit(ObjectId::for_put(), mapped).expect("admitted");
        assert_eq!(mem.stats().used, 0, "not counted against this store");
        let full = mem
            .admit(ObjectId::for_put(), blob(1, MIB))
            .expect("the store's own fits");
        assert_eq!(mem.stats().used, MIB as u64);
        assert_eq!(mem.read(&slot).expect("reads").len(), 2 * MIB);
        drop(full);
    }

    #[tokio::test]
    async fn pulls_in_flight_stay_within_the_capacity() {
        use futures::FutureExt;
        let mem = store(4 * MIB, &scratch("pulls"));
        let first = mem.pull_room(3 * MIB as u64).await.expect("room");
        // 2 MiB more would go past the capacity: it waits for the first to arrive.
        let mut second = Box::pin(mem.pull_room(2 * MIB as u64));
        assert!((&mut second).now_or_never().is_none());
        // Pulls get room in the order they asked: a small one does not pass the waiting one.
        let mut small = Box::pin(mem.pull_room(MIB as u64));
        assert!((&mut small).now_or_never().is_none());
        drop(first);
        let second = second.await.expect("room once the first is done");
        assert!(small.await.is_some(), "and for the small one behind it");
        // Larger than the whole store: it waits for the others, then goes alone.
        let mut huge = Box::pin(mem.pull_room(64 * MIB as u64));
        assert!((&mut huge).now_or_never().is_none());
        drop(second);
        assert!(huge.await.is_some());
    }

    #[test]
    fn a_full_store_spills_the_coldest_and_reads_every_object_back() {
        let dir = scratch("cold");
        let mem = store(3 * MIB, &dir);
        let slots: Vec<Arc<Slot>> = (0..8u8)
            .map(|n| mem.admit(ObjectId::for_put(), blob(n, MIB)).unwrap())
            .collect();
        let st = mem.stats();
        assert!(st.used <= 3 * MIB as u64, "{st:?}");
        assert_eq!(st.spilled_objects, 5, "{st:?}");
        assert_eq!(std::fs::read_dir(mem.spill_dir()).unwrap().count(), 5);
        for (n, slot) in slots.iter().enumerate() {
            let b = mem.read(slot).unwrap();
            assert_eq!(b.len(), MIB);
            assert!(b.iter().all(|x| *x == n as u8), "object {n} reads back");
        }
        assert!(mem.stats().used <= 3 * MIB as u64);
        let folder = mem.spill_dir().to_path_buf();
        for slot in &slots {
            mem.forget(slot.id);
        }
        let st = mem.stats();
        assert_eq!((st.used, st.spilled_objects, st.spilled_bytes), (0, 0, 0));
        drop(mem);
        assert!(!folder.exists(), "the store's spill folder goes with it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn objects_being_read_stay_and_a_put_that_cannot_fit_is_refused() {
        let dir = scratch("busy");
        let mem = store(2 * MIB, &dir);
        let a = mem.admit(ObjectId::for_put(), blob(1, MIB)).unwrap();
        let b = mem.admit(ObjectId::for_put(), blob(2, MIB)).unwrap();
        let (ra, rb) = (mem.read(&a).unwrap(), mem.read(&b).unwrap());
        let e = mem.admit(ObjectId::for_put(), blob(3, MIB)).unwrap_err();
        match &e {
            Error::ObjectStoreFull {
                asked,
                free,
                capacity,
                reason,
                ..
            } => {
                assert_eq!((*asked, *free, *capacity), (MIB as u64, 0, 2 * MIB as u64));
                assert!(reason.contains("being read"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Once the readers let go, the same put spills one of them.
        drop((ra, rb));
        assert!(mem.admit(ObjectId::for_put(), blob(3, MIB)).is_ok());
        let too_big = mem
            .admit(ObjectId::for_put(), blob(4, 3 * MIB))
            .unwrap_err();
        assert!(
            too_big.to_string().contains("larger than the whole store"),
            "{too_big}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn nowhere_to_spill_is_object_store_full_with_the_reason() {
        // A file where the spill folder's parent should be: no folder can be made there.
        let file =
            std::env::temp_dir().join(format!("lumen-spill-test-file-{}", std::process::id()));
        std::fs::write(&file, b"not a folder").unwrap();
        let mem = store(MIB, &file);
        mem.admit(ObjectId::for_put(), blob(1, MIB)).unwrap();
        let e = mem.admit(ObjectId::for_put(), blob(2, MIB)).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::ObjectStoreFull { .. }), "{e:?}");
        assert!(text.contains("cannot create the spill folder"), "{text}");
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn secondary_copies_are_evicted_before_anything_spills() {
        let dir = scratch("secondary");
        let mem = store(3 * MIB, &dir);
        let primary = mem.admit(ObjectId::for_put(), blob(1, MIB)).unwrap();
        let (s1, s2) = (ObjectId::for_put(), ObjectId::for_put());
        let first = mem.admit_secondary(s1, blob(2, MIB)).unwrap();
        let _second = mem.admit_secondary(s2, blob(3, MIB)).unwrap();
        assert_eq!(mem.read_secondary(s1).expect("in memory")[0], 2);
        // The primary is the coldest now, yet room is made by dropping secondary copies: the
        // coldest of them first, and nothing is written to disk.
        mem.admit(ObjectId::for_put(), blob(4, MIB)).unwrap();
        let st = mem.stats();
        assert_eq!(
            (st.spilled_objects, st.evicted_objects, st.evicted_bytes),
            (0, 1, MIB as u64),
            "{st:?}"
        );
        assert!(mem.read_secondary(s2).is_none(), "the coldest copy went");
        assert!(mem.read_secondary(s1).is_some(), "the one read since stays");
        assert!(!first.evicted());
        // With no secondary copy left to drop (the last one is being read), primaries spill.
        let reading = mem.read_secondary(s1).unwrap();
        mem.admit(ObjectId::for_put(), blob(5, MIB)).unwrap();
        assert_eq!(mem.stats().spilled_objects, 1);
        assert_eq!(
            mem.read(&primary).unwrap()[0],
            1,
            "the spilled primary reads back"
        );
        drop(reading);
        mem.admit(ObjectId::for_put(), blob(6, 2 * MIB)).unwrap();
        assert!(first.evicted() && mem.read_secondary(s1).is_none());
        let e = mem.read(&first).unwrap_err();
        assert!(e.to_string().contains("evicted"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_restored_copy_is_evicted_without_writing_again() {
        let dir = scratch("restore");
        let mem = store(2 * MIB, &dir);
        let a = mem.admit(ObjectId::for_put(), blob(1, MIB)).unwrap();
        let _b = mem.admit(ObjectId::for_put(), blob(2, MIB)).unwrap();
        let _c = mem.admit(ObjectId::for_put(), blob(3, MIB)).unwrap(); // spills a
        assert_eq!(mem.stats().spilled_objects, 1);
        mem.forget(_b.id); // room for a again
        assert_eq!(mem.read(&a).unwrap()[0], 1);
        assert_eq!(mem.stats().used, 2 * MIB as u64, "a is back in memory");
        assert_eq!(mem.read(&_c).unwrap()[0], 3); // c used after a: a is the coldest
        let _d = mem.admit(ObjectId::for_put(), blob(4, MIB)).unwrap(); // evicts a: on disk already
        let st = mem.stats();
        assert_eq!((st.spilled_objects, st.used), (1, 2 * MIB as u64), "{st:?}");
        assert_eq!(mem.read(&a).unwrap()[MIB - 1], 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
