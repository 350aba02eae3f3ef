//! The object store's memory: a capped store spills to disk and reads everything back, objects
//! being read are not spilled, a value that cannot fit is refused with `ObjectStoreFull`, and a
//! ref whose owner died says `OwnerDied`. Also `Buffer<T>` objects, shared instead of copied.
//!
//! The store here is capped at 256 MiB (`object_store_memory`); the tests that fill it take
//! [`common::exclusive`], and this binary has no other tests, so what the process holds in memory
//! is theirs to measure.

mod common;

use common::{exclusive, shared, PATIENCE};
use lumen::{Buffer, Error, NodeId, ObjectRef};

const MIB: usize = 1 << 20;
const CAP: usize = 256 * MIB;

fn init() {
    common::init(
        lumen::Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .object_store_memory(CAP as f64)
            .spill_dir(common::scratch().join("spill")),
    );
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

/// `len` bytes of `n`, made by a task.
#[lumen::remote]
fn filled(n: u8, len: usize) -> Buffer<u8> {
    Buffer::from(vec![n; len])
}

/// Where this process is, and how many of `b`'s elements are `n`.
#[lumen::remote]
fn count(b: Buffer<u8>, n: u8) -> (u32, usize) {
    (std::process::id(), b.iter().filter(|x| **x == n).count())
}

/// The address of the buffer's elements and its sum, as the task sees them.
#[lumen::remote]
fn address_and_sum(b: Buffer<f64>) -> (u64, f64) {
    (b.as_ptr() as u64, b.iter().sum())
}

#[lumen::remote]
fn ramp(n: usize) -> Buffer<f64> {
    (0..n).map(|i| i as f64).collect()
}

/// Puts a 1 MiB object in the process this runs in, returning a ref to it (owned here) and the
/// process id.
#[lumen::remote]
fn own_one() -> (u32, Vec<ObjectRef<Buffer<u8>>>) {
    (
        std::process::id(),
        vec![lumen::put(Buffer::from(vec![9u8; MIB]))],
    )
}

/// Reads its argument; returns where it ran and the bytes its process's store holds.
#[lumen::remote]
fn store_bytes_after_reading(b: Buffer<u8>) -> (u32, NodeId, usize) {
    assert!(!b.is_empty());
    (
        std::process::id(),
        lumen::runtime_context().node_id(),
        stored_here(),
    )
}

/// Where it runs and the bytes its process's store holds.
#[lumen::remote]
fn store_bytes() -> (u32, usize) {
    (std::process::id(), stored_here())
}

fn stored_here() -> usize {
    lumen::memory_summary()
        .expect("memory_summary")
        .stored_bytes
}

/// This process's resident memory, in bytes.
fn resident() -> usize {
    status_bytes("VmRSS:")
}

/// A size from this process's `/proc/self/status` (`VmRSS:`, `RssAnon:`), in bytes.
fn status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: usize = status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    kb * 1024
}

fn summary() -> lumen::MemorySummary {
    lumen::memory_summary().expect("memory_summary")
}

/// Ray's `test_spill_objects_automatically` (test_object_spilling.py): with a 256 MiB store,
/// 1 GiB of live objects (puts and task results) all stay readable, spilled to disk as needed,
/// and the process's resident memory stays under the cap plus 200 MiB throughout.
#[test]
fn test_spill_objects_automatically() {
    init();
    let _g = exclusive();
    let limit = CAP + 200 * MIB;
    let mut refs: Vec<(u8, ObjectRef<Buffer<u8>>)> = Vec::new();
    for n in 0..10u8 {
        refs.push((n, lumen::put(Buffer::from(vec![n; 100 * MIB]))));
        let rss = resident();
        assert!(
            rss < limit,
            "after {} puts: resident {} MiB",
            n + 1,
            rss / MIB
        );
    }
    let s = summary();
    assert!(s.spilled_objects >= 7, "{s:?}");
    assert!(s.store_memory_bytes <= CAP as u64, "{s:?}");
    assert_eq!(s.store_capacity, CAP as u64);
    // Task results too: embedded they join this store; on a cluster they stay in the worker
    // processes that made them, whose stores have the same cap and spill in turn.
    for n in 10..16u8 {
        let r = filled::remote(n, 100 * MIB);
        let (ready, _) = lumen::wait(std::slice::from_ref(&r), 1, Some(PATIENCE));
        assert_eq!(ready.len(), 1, "object {n} was not made");
        refs.push((n, r));
        let rss = resident();
        assert!(rss < limit, "after result {n}: resident {} MiB", rss / MIB);
    }
    for (n, r) in &refs {
        let b = lumen::get(r).expect("a spilled object reads back");
        assert_eq!(b.len(), 100 * MIB);
        assert!(b.iter().all(|x| x == n), "object {n} has its content");
        drop(b);
        let rss = resident();
        assert!(
            rss < limit,
            "reading object {n}: resident {} MiB",
            rss / MIB
        );
    }
    // A task reads a spilled object as its argument.
    let (_, matching) = lumen::get(&count::remote(&refs[0].1, 0)).unwrap();
    assert_eq!(matching, 100 * MIB);
    drop(refs);
    assert!(
        common::wait_until(PATIENCE, || summary().spilled_objects == 0),
        "spill files are removed with their objects: {:?}",
        summary()
    );
}

/// Results stay where they are made: 20 results of 100 MiB, each read by a task, never pass
/// through the driver (on a cluster they stay in the worker process that made them, and the
/// reading task pulls them from there, or reads them in place on the same node), so the
/// driver's resident memory grows by less than 20 MiB. The driver's own reads still work.
#[test]
fn results_stay_where_they_are_made() {
    init();
    let _g = exclusive();
    kept_where_made(filled::remote);
}

/// Makes buffers, as an actor.
#[derive(Default)]
pub struct Maker;

#[lumen::remote]
impl Maker {
    pub fn new() -> Self {
        Maker
    }

    /// `len` bytes of `n`.
    pub fn fill(&self, n: u8, len: usize) -> Buffer<u8> {
        Buffer::from(vec![n; len])
    }
}

/// Results of actor calls stay where they are made too, as Ray's: 20 results of 100 MiB made
/// by an actor (on a cluster, in a worker process) and read by a task never pass through the
/// driver, which still reads one itself and sees where it is kept.
#[test]
fn results_of_actor_calls_stay_where_they_are_made() {
    init();
    let _g = exclusive();
    let maker = Maker::remote();
    kept_where_made(|n, len| maker.fill(n, len).remote());
}

/// Makes 20 results of 100 MiB with `make(n, len)` (bytes `n`), each read by a task: they never
/// reach the driver (on a cluster it holds only their place), whose resident memory grows by
/// less than 20 MiB; then a 2 MiB one is listed with its size and the node keeping it, and the
/// driver reads it twice.
fn kept_where_made(make: impl Fn(u8, usize) -> ObjectRef<Buffer<u8>>) {
    let before = resident();
    for n in 0..20u8 {
        let made = make(n, 100 * MIB);
        let (_, matching) = lumen::get(&count::remote(&made, n)).expect("the reading task");
        assert_eq!(matching, 100 * MIB, "object {n}");
        if common::on_cluster() {
            // The driver owns it but has only its place: the bytes never came here.
            let held = summary().stored_bytes;
            assert!(held < MIB, "the driver holds {held} bytes of object {n}");
        }
    }
    // Embedded, the results were in this process's store: freed once their refs went.
    assert!(common::wait_until(PATIENCE, || summary()
        .store_memory_bytes
        < MIB as u64));
    let grown = resident().saturating_sub(before);
    assert!(grown < 20 * MIB, "the driver grew by {} MiB", grown / MIB);
    // The driver reads one itself: pulled from where it is kept, and read again.
    let made = make(7, 2 * MIB);
    let (ready, _) = lumen::wait(std::slice::from_ref(&made), 1, Some(PATIENCE));
    assert_eq!(ready.len(), 1);
    // Listed with its size and the node that keeps it.
    let listed = lumen::list_objects().expect("list_objects");
    let info = listed
        .iter()
        .find(|o| o.object_id == made.id() && o.owned)
        .expect("the result is listed by its owner");
    assert_eq!(info.size, Some(2 * MIB as u64));
    assert_eq!(info.locations.len(), 1, "{info:?}");
    assert!(common::is_node(&info.locations[0].to_string()));
    for _ in 0..2 {
        let b = lumen::get(&made).unwrap();
        assert!(b.len() == 2 * MIB && b.iter().all(|x| *x == 7));
    }
}

/// A process that read a large object from elsewhere keeps a copy for its next reads (Ray's
/// secondary copies), and frees it when the owner frees the object.
#[test]
fn a_copy_read_from_elsewhere_stays_until_the_owner_frees_it() {
    init();
    if !common::on_cluster() {
        // Embedded, every object is in this process's own store.
        return;
    }
    let _g = exclusive();
    let x = lumen::put(Buffer::from(vec![5u8; 4 * MIB]));
    let (pid, node, held) = lumen::get(&store_bytes_after_reading::remote(&x)).unwrap();
    assert!(
        held >= 4 * MIB,
        "the reading process keeps a copy: {held} bytes"
    );
    let there = lumen::SchedulingStrategy::NodeAffinity {
        node_id: node,
        soft: false,
    };
    drop(x);
    assert!(
        common::wait_until(PATIENCE, || {
            let (p, bytes) = lumen::get(
                &store_bytes::options()
                    .scheduling_strategy(there.clone())
                    .remote(),
            )
            .unwrap();
            p == pid && bytes < 4 * MIB
        }),
        "the copy was not freed with the object"
    );
}

/// Reads each of `refs` (borrowed) in turn, then the first again; returns how many of each
/// one's bytes were `n + i`, and this process's store's evicted and spilled objects.
#[lumen::remote]
fn read_each_then_the_first(refs: Vec<ObjectRef<Buffer<u8>>>, n: u8) -> (Vec<usize>, u64, usize) {
    let mut seen = Vec::new();
    for (i, r) in refs.iter().chain(refs.first()).enumerate() {
        let want = n + (i % refs.len()) as u8;
        let b = lumen::get(r).expect("a borrowed object");
        seen.push(b.iter().filter(|x| **x == want).count());
    }
    let s = summary();
    (seen, s.evicted_objects, s.spilled_objects)
}

/// Ray's object manager keeps a pulled copy of an object (a secondary copy) only while there is
/// room: under pressure the store evicts it, least recently used first, instead of spilling it
/// (the primary copy is elsewhere), and a later read pulls it again. Here a process on another
/// node reads three 100 MiB objects through a 256 MiB store, then the first one again.
#[test]
fn secondary_copies_are_evicted_not_spilled() {
    init();
    if !common::on_cluster() {
        // Embedded, every object is in this process's own store: there are no secondary copies.
        return;
    }
    let _g = exclusive();
    let here = lumen::runtime_context().node_id();
    let other = lumen::nodes()
        .into_iter()
        .find(|n| n.alive && n.node_id != here)
        .expect("a second node")
        .node_id;
    let refs: Vec<ObjectRef<Buffer<u8>>> = (0..3u8)
        .map(|i| lumen::put(Buffer::from(vec![40 + i; 100 * MIB])))
        .collect();
    let (seen, evicted, spilled) = lumen::get(
        &read_each_then_the_first::options()
            .scheduling_strategy(lumen::SchedulingStrategy::NodeAffinity {
                node_id: other,
                soft: false,
            })
            .remote(refs.clone(), 40),
    )
    .expect("the reading task");
    assert_eq!(seen, vec![100 * MIB; 4], "every read saw its object");
    assert!(evicted >= 1, "no secondary copy was evicted");
    assert_eq!(spilled, 0, "the reading process spilled secondary copies");
    // The owner hears which copies went: the second object's (evicted when the first was read
    // again) is no longer among its places; the third's, still kept, is.
    let places = |r: &ObjectRef<Buffer<u8>>| {
        lumen::list_objects()
            .expect("list_objects")
            .into_iter()
            .find(|o| o.object_id == r.id() && o.owned)
            .map(|o| o.locations)
            .unwrap_or_default()
    };
    assert!(
        common::wait_until(PATIENCE, || !places(&refs[1]).contains(&other)),
        "the owner still names the evicted copy: {:?}",
        places(&refs[1])
    );
    assert!(places(&refs[2]).contains(&other), "{:?}", places(&refs[2]));
}

/// Ray's `test_spilling_not_done_for_pinned_object`: an object being read (a `Buffer` view of
/// it is alive) is not spilled, so a put that needs its room is refused with `ObjectStoreFull`
/// saying how much was asked and what is free; once the view is dropped, the same put fits.
#[test]
fn test_spilling_not_done_for_pinned_object() {
    init();
    let _g = exclusive();
    let big = lumen::put(Buffer::from(vec![1u8; 200 * MIB]));
    let view = lumen::get(&big).unwrap();
    let refused = lumen::put(Buffer::from(vec![2u8; 100 * MIB]));
    match lumen::get(&refused) {
        Err(Error::ObjectStoreFull {
            asked,
            capacity,
            reason,
            ..
        }) => {
            assert_eq!(asked, 100 * MIB as u64);
            assert_eq!(capacity, CAP as u64);
            assert!(reason.contains("being read"), "{reason}");
        }
        other => panic!("expected ObjectStoreFull, got {other:?}"),
    }
    drop(view);
    let fits = lumen::put(Buffer::from(vec![3u8; 100 * MIB]));
    assert_eq!(lumen::get(&fits).unwrap()[0], 3);
    assert_eq!(
        lumen::get(&big).unwrap()[200 * MIB - 1],
        1,
        "the spilled one reads back"
    );
    // Larger than the whole store: refused, and the store goes on.
    let huge = lumen::put(Buffer::from(vec![4u8; CAP + MIB]));
    let e = lumen::get(&huge).unwrap_err();
    assert!(e.to_string().contains("larger than the whole store"), "{e}");
    assert_eq!(lumen::get(&fits).unwrap().len(), 100 * MIB);
}

const NOWHERE_CHILD: &str = "LUMEN_TEST_NOWHERE_TO_SPILL";

/// Ray's `test_fill_object_store_exception`, with nowhere to spill: the spill folder cannot be
/// made (a file stands where it should be), so a put and a task result beyond the cap fail with
/// `ObjectStoreFull` naming the folder, and what fits is still stored. Runs in child drivers
/// (embedded, and a local cluster with worker processes) whose stores spill nowhere.
#[test]
fn test_fill_object_store_exception() {
    if let Ok(mode) = std::env::var(NOWHERE_CHILD) {
        let blocker = std::env::temp_dir().join(format!("lumen-no-spill-{}", std::process::id()));
        std::fs::write(&blocker, b"a file, not a folder").unwrap();
        let config = lumen::Config::default()
            .num_cpus(1.0)
            .num_gpus(0.0)
            .object_store_memory(64.0 * MIB as f64)
            .spill_dir(&blocker);
        let config = match mode.as_str() {
            "cluster" => config.local_cluster(1),
            _ => config,
        };
        lumen::init_with(config).expect("the child's cluster starts");
        let first = lumen::put(Buffer::from(vec![1u8; 40 * MIB]));
        assert_eq!(lumen::get(&first).unwrap().len(), 40 * MIB);
        let second = lumen::put(Buffer::from(vec![2u8; 40 * MIB]));
        let full = |r: &ObjectRef<Buffer<u8>>| match lumen::get(r) {
            Err(Error::ObjectStoreFull { asked, reason, .. }) => {
                assert_eq!(asked, 40 * MIB as u64);
                assert!(
                    reason.contains("cannot create the spill folder"),
                    "{reason}"
                );
                true
            }
            Ok(b) => {
                assert_eq!(b.len(), 40 * MIB);
                false
            }
            Err(other) => panic!("expected ObjectStoreFull, got {other:?}"),
        };
        assert!(full(&second), "the put beyond the cap is refused");
        // Embedded, results join the full store here and are refused. On a cluster the first
        // result stays in the worker process that made it; the second no longer fits there,
        // goes to its owner (this store, full) and is refused.
        let results = [filled::remote(3, 40 * MIB), filled::remote(4, 40 * MIB)];
        let refused = results.iter().filter(|r| full(r)).count();
        assert_eq!(refused, if mode == "cluster" { 1 } else { 2 });
        drop(first);
        assert!(
            common::wait_until(PATIENCE, || {
                let again = lumen::put(Buffer::from(vec![5u8; 40 * MIB]));
                lumen::get(&again).is_ok()
            }),
            "room comes back once the first object is freed"
        );
        lumen::shutdown();
        let _ = std::fs::remove_file(&blocker);
        eprintln!("the child saw ObjectStoreFull");
        return;
    }
    if common::on_cluster() {
        // The parent part runs once, from the embedded run; its children cover both modes.
        return;
    }
    for mode in ["embedded", "cluster"] {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "test_fill_object_store_exception",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NOWHERE_CHILD, mode)
            .env_remove("LUMEN_TEST_LOCAL_CLUSTER")
            .env_remove("LUMEN_ADDRESS")
            .output()
            .expect("run the child driver");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.contains("the child saw ObjectStoreFull"),
            "{mode} child driver failed ({}):\n{stderr}",
            out.status
        );
    }
}

/// `Buffer<T>` objects: a put and its reads share one copy of the bytes in the owner's process,
/// a task's argument passed by ref shares the store's bytes (embedded, where the task runs in
/// this process), and buffers returned by tasks and nested in other values read back.
#[test]
fn buffers_are_shared_not_copied() {
    init();
    let _g = shared();
    let data: Vec<f64> = (0..MIB).map(|i| i as f64 * 0.25).collect();
    let sum: f64 = data.iter().sum();
    let at = data.as_ptr() as u64;
    let r = lumen::put(Buffer::from(data));
    let (a, b) = (lumen::get(&r).unwrap(), lumen::get(&r).unwrap());
    assert_eq!(a.as_ptr() as u64, at, "the put's own memory");
    assert_eq!(b.as_ptr() as u64, at);
    let (seen_at, seen_sum) = lumen::get(&address_and_sum::remote(&r)).unwrap();
    assert_eq!(seen_sum, sum);
    if !common::on_cluster() {
        assert_eq!(seen_at, at, "the task read the stored bytes in place");
    }
    let made = lumen::get(&ramp::remote(1000)).unwrap();
    assert_eq!(made.len(), 1000);
    assert_eq!(made[999], 999.0);
    let nested = lumen::put((String::from("label"), Buffer::from(vec![7i32, -7])));
    let (label, xs) = lumen::get(&nested).unwrap();
    assert_eq!((label.as_str(), xs.as_slice()), ("label", &[7, -7][..]));
}

/// Where it runs, and its private (anonymous) resident memory.
#[lumen::remote]
fn private_memory() -> (u32, usize) {
    (std::process::id(), status_bytes("RssAnon:"))
}

/// Reads every byte of `b`; returns where it ran, their sum, and its private resident memory
/// after reading them.
#[lumen::remote]
fn read_all(b: Buffer<u8>) -> (u32, NodeId, u64, usize) {
    let sum = b.iter().map(|x| *x as u64).sum();
    (
        std::process::id(),
        lumen::runtime_context().node_id(),
        sum,
        status_bytes("RssAnon:"),
    )
}

/// A worker process reads a large object put by the driver on its own node from shared memory:
/// it maps the driver's copy, so reading all 100 MiB grows its private memory by far less than
/// the object (Ray's workers read from the node's plasma store the same way). On the embedded
/// cluster the task runs in this process and `buffers_are_shared_not_copied` covers it.
#[test]
fn a_worker_process_reads_a_node_local_buffer_without_a_copy() {
    init();
    if !common::on_cluster() {
        return;
    }
    let _g = exclusive();
    let here = lumen::SchedulingStrategy::NodeAffinity {
        node_id: lumen::runtime_context().node_id(),
        soft: false,
    };
    let len = 100 * MIB;
    let r = lumen::put(Buffer::from(vec![3u8; len]));
    let (pid, before) = lumen::get(
        &private_memory::options()
            .scheduling_strategy(here.clone())
            .remote(),
    )
    .unwrap();
    assert_ne!(pid, std::process::id(), "the task runs in a worker process");
    let (pid2, node, sum, after) = lumen::get(
        &read_all::options()
            .scheduling_strategy(here.clone())
            .remote(&r),
    )
    .unwrap();
    assert_eq!((pid2, node), (pid, lumen::runtime_context().node_id()));
    assert_eq!(sum, 3 * len as u64, "every byte read back");
    assert!(
        after < before + 20 * MIB,
        "the worker's private memory grew by {} MiB reading a 100 MiB object",
        (after.saturating_sub(before)) / MIB
    );
    // The same object read again, and a buffer made by copying a slice, map the same way.
    let copied = lumen::put(Buffer::from(&vec![4u8; len][..]));
    let (_, _, sum, again) = lumen::get(
        &read_all::options()
            .scheduling_strategy(here)
            .remote(&copied),
    )
    .unwrap();
    assert_eq!(sum, 4 * len as u64);
    assert!(
        again < before + 20 * MIB,
        "the worker's private memory grew by {} MiB reading two 100 MiB objects",
        (again.saturating_sub(before)) / MIB
    );
}

/// Ray's `test_return_object_ref` with the owner failing (test_reference_counting_2.py): a ref
/// whose owner (the worker process that put the object) was killed reads as `OwnerDied`. On the
/// embedded cluster every object's owner is this process, so there is no owner to kill.
#[test]
fn test_owner_died() {
    init();
    if !common::on_cluster() {
        return;
    }
    let _g = exclusive();
    let (pid, refs) = lumen::get(&own_one::remote()).unwrap();
    assert_ne!(pid, std::process::id(), "the task ran in a worker process");
    assert_eq!(
        lumen::get(&refs[0]).unwrap().len(),
        MIB,
        "readable while its owner lives"
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    // The copy read above stays here until the owner's death is noticed (its connection
    // fails within the transport's idle timeout); from then on, reads say the owner died.
    let died = |r: &lumen::Result<Buffer<u8>>| matches!(r, Err(Error::OwnerDied { .. }));
    let mut last = lumen::get_timeout(&refs[0], PATIENCE);
    assert!(
        common::wait_until(PATIENCE, || {
            last = lumen::get_timeout(&refs[0], PATIENCE);
            died(&last)
        }),
        "reads never said the owner died: {:?}",
        last.as_ref().map(|b| b.len())
    );
    match last.map(|b| b.len()) {
        Err(Error::OwnerDied { object, owner, .. }) => {
            assert_eq!(object, refs[0].id().to_string());
            assert!(!owner.is_empty());
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // The cluster goes on: the node starts a new worker process for the job.
    assert_eq!(
        lumen::get(&count::remote(Buffer::from(vec![1u8; 10]), 1))
            .unwrap()
            .1,
        10
    );
}
