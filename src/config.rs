//! [`Config`]: how `lumen::init_with` starts or joins a cluster, and the resources of the nodes it
//! starts.

use crate::error::{Error, Result};
use crate::resources::{Amount, Resource, ResourceRequest, ResourceSet};

/// Options for [`init_with`](crate::init_with): the embedded node's resources, or the address of
/// a running cluster.
///
/// # Examples
/// ```no_run
/// lumen::init_with(lumen::Config::default().num_cpus(2.0).num_gpus(0.0).resource("node0", 2.0))?;
/// assert_eq!(lumen::cluster_resources()["node0"], 2.0);
/// lumen::shutdown();
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub(crate) num_cpus: Option<f64>,
    pub(crate) num_gpus: Option<f64>,
    pub(crate) memory: Option<f64>,
    pub(crate) object_store_memory: Option<f64>,
    pub(crate) resources: Vec<(String, f64)>,
    pub(crate) address: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) local_cluster: Option<usize>,
    pub(crate) spin: Option<bool>,
    pub(crate) log_to_driver: Option<bool>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) spill_dir: Option<std::path::PathBuf>,
    pub(crate) working_dir: Option<std::path::PathBuf>,
    pub(crate) working_dir_max_bytes: Option<u64>,
}

impl Config {
    /// Logical CPUs of the embedded node (default: the machine's cores).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.num_cpus = Some(n);
        self
    }

    /// Logical GPUs of the embedded node (default: the GPUs found on the machine).
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.num_gpus = Some(n);
        self
    }

    /// Bytes of the `memory` resource (default: 70% of available memory).
    pub fn memory(mut self, bytes: f64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Bytes of object-store memory (default: 30% of available memory): reported as the
    /// `object_store_memory` resource, and the cap on what this process's store keeps in
    /// memory. Beyond it, the least recently used objects spill to disk ([`spill_dir`]); a
    /// value that cannot fit even then is refused with `Error::ObjectStoreFull`.
    ///
    /// [`spill_dir`]: Config::spill_dir
    ///
    /// # Examples
    /// ```no_run
    /// let config = lumen::Config::default().object_store_memory(256.0 * 1024.0 * 1024.0);
    /// lumen::init_with(config)?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn object_store_memory(mut self, bytes: f64) -> Self {
        self.object_store_memory = Some(bytes);
        self
    }

    /// Where objects spill when the store is full (default: the system's temporary folder, or
    /// `LUMEN_SPILL_DIR`). Each store spills into its own subfolder, removed when it stops.
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init_with(lumen::Config::default().spill_dir("/mnt/fast-disk/lumen"))?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn spill_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.spill_dir = Some(dir.into());
        self
    }

    /// A custom resource of the embedded node, e.g. `resource("node0", 2.0)`.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        self.resources.push((name.into(), amount));
        self
    }

    /// Connect to a running cluster at `HOST:PORT` instead of starting one ("auto": the local
    /// one).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The cluster token (64 hex digits) to present when connecting to [`address`](Self::address)
    /// (default: `LUMEN_TOKEN`, else found in the session folder of a head on this machine).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Starts `n` nodes in this process instead of the embedded one, each with this config's
    /// resources and its own QUIC endpoint on 127.0.0.1, and connects to them as a driver. Their
    /// tasks and actors run in worker processes (this program's own executable, in worker mode),
    /// exactly as on nodes started with `lumen start`: how to try a program's cluster behaviour
    /// without daemons. The nodes stop with [`shutdown`](crate::shutdown).
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init_with(lumen::Config::default().num_cpus(2.0).local_cluster(2))?;
    /// assert_eq!(lumen::nodes().len(), 2);
    /// assert_eq!(lumen::cluster_resources()["CPU"], 4.0);
    /// lumen::shutdown();
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn local_cluster(mut self, n: usize) -> Self {
        self.local_cluster = Some(n);
        self
    }

    /// Whether threads waiting for a reply may poll for a few microseconds before sleeping
    /// (default: yes, on at most half the cores at once; `LUMEN_SPIN=0` also turns it off).
    /// Polling makes small calls several times faster; turn it off when lumen shares the
    /// machine with work that needs every core.
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init_with(lumen::Config::default().spin(false))?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn spin(mut self, on: bool) -> Self {
        self.spin = Some(on);
        self
    }

    /// The namespace for named actors (default: a fresh anonymous one per driver, as in Ray).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Whether what this driver's tasks and actors print on other processes' stdout and stderr
    /// (worker processes, on any node) comes back to this driver's stdout and stderr, each line
    /// prefixed with where it ran: `(square pid=4123 ip=10.0.0.5:6380) text`, an actor's with its
    /// type's name (default: on, as Ray's `log_to_driver`). Off, it stays where the node keeps
    /// its own output (a `lumen start` node's log). Work that runs in the driver's own process
    /// (the embedded cluster) prints straight to its terminal either way.
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init_with(lumen::Config::default().address("127.0.0.1:6380").log_to_driver(false))?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn log_to_driver(mut self, on: bool) -> Self {
        self.log_to_driver = Some(on);
        self
    }

    /// An environment variable for this job's tasks and actors, set in every worker process a
    /// node starts for the job (Ray's `runtime_env={"env_vars": ..}`). The embedded cluster runs
    /// tasks in this process, whose environment lumen does not change (changing it while other
    /// threads may read it is unsound): there `init_with` accepts a variable only if this process
    /// already has it, with that value, and says so otherwise. Names starting with `LUMEN_` are
    /// lumen's own and refused. A task or actor adds its own over these with `.env(..)` on its
    /// options ([`TaskOptions::env`](crate::TaskOptions::env)).
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init_with(lumen::Config::default().address("127.0.0.1:6380").env("MY_SETTING", "1"))?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// A directory to upload as this job's working directory: the driver packs it at init
    /// (plain files and folders; symbolic links, sockets and the like are left out, and links
    /// are never followed), uploads it to the GCS content-addressed (like the job's executable,
    /// so an unchanged directory is uploaded once), and every node unpacks it once into its
    /// session folder and starts the job's worker processes there: relative paths in tasks and
    /// actors read the uploaded copy on every machine (Ray's `runtime_env={"working_dir": ..}`).
    /// A task may write there, but what it writes stays on its node, and the copy is shared with
    /// other jobs that upload the same content.
    ///
    /// The directory must exist and be a directory, and its package (a gzipped tar) must stay
    /// under a cap, Ray's 100 MiB by default ([`working_dir_max_bytes`](Self::working_dir_max_bytes),
    /// or `LUMEN_WORKING_DIR_MAX_BYTES`): `init_with` refuses it otherwise, with
    /// [`Error::WorkingDirTooLarge`] saying the size and the cap.
    ///
    /// Without it, a worker process starts in the driver's working directory when that path
    /// exists on its node (the same machine), else in the node's folder. The embedded cluster
    /// runs tasks in this process, whose working directory lumen does not change: there the
    /// directory is only checked, and tasks see the process's own working directory.
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init_with(lumen::Config::default().address("127.0.0.1:6380").working_dir("./job"))?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn working_dir(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.working_dir = Some(path.into());
        self
    }

    /// The cap, in bytes, on the package of [`working_dir`](Self::working_dir) (default:
    /// `LUMEN_WORKING_DIR_MAX_BYTES` if set, else 100 MiB, as Ray).
    ///
    /// # Examples
    /// ```no_run
    /// let config = lumen::Config::default()
    ///     .address("127.0.0.1:6380")
    ///     .working_dir("./job")
    ///     .working_dir_max_bytes(200 << 20);
    /// lumen::init_with(config)?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn working_dir_max_bytes(mut self, bytes: u64) -> Self {
        self.working_dir_max_bytes = Some(bytes);
        self
    }

    /// Checks the node resources this config describes (amounts, GPU counts, names).
    ///
    /// # Examples
    /// ```
    /// assert!(lumen::Config::default().num_cpus(-1.0).validate().is_err());
    /// assert!(lumen::Config::default().num_cpus(2.0).resource("node0", 1.0).validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if let Some(ns) = &self.namespace {
            check_namespace(ns)?;
        }
        if self.local_cluster == Some(0) {
            return Err(Error::invalid("a local cluster needs at least one node"));
        }
        for (name, value) in &self.env {
            check_env("Config::env", name, value)?;
        }
        if let Some(dir) = &self.working_dir {
            check_working_dir(dir)?;
        }
        self.node_resources().map(|_| ())
    }

    /// The limits of this process's object store: the configured `object_store_memory` (or 30% of
    /// available memory) and spill folder.
    pub(crate) fn store_limits(&self) -> Result<StoreLimits> {
        let capacity = match self.object_store_memory {
            Some(b) if b.is_finite() && b > 0.0 => b as u64,
            Some(b) => {
                return Err(Error::invalid(format!(
                    "object_store_memory = {b}: it must be a positive number of bytes"
                )))
            }
            None => (available_memory() as f64 * 0.3) as u64,
        };
        let spill_dir = self
            .spill_dir
            .clone()
            .or_else(|| std::env::var_os(SPILL_DIR_ENV).map(Into::into));
        Ok(StoreLimits {
            capacity,
            spill_dir,
        })
    }

    /// The embedded node's total resources, validated.
    pub(crate) fn node_resources(&self) -> Result<ResourceSet> {
        let cpus = self
            .num_cpus
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as f64);
        let gpus = self.num_gpus.unwrap_or_else(|| detect_gpus() as f64);
        if gpus.fract() != 0.0 {
            return Err(Error::invalid(format!(
                "num_gpus = {gpus}: a node has a whole number of GPUs"
            )));
        }
        let avail = available_memory() as f64;
        let req = ResourceRequest {
            num_cpus: Some(cpus),
            num_gpus: Some(gpus),
            memory: Some(self.memory.unwrap_or((avail * 0.7).floor())),
            custom: self.resources.clone(),
        };
        let mut set = req.to_set(0.0)?;
        let store = self.object_store_memory.unwrap_or((avail * 0.3).floor());
        set.set(
            Resource::ObjectStoreMemory,
            Amount::parse("object_store_memory", store)?,
        );
        Ok(set)
    }
}

/// GPUs visible to this process: `CUDA_VISIBLE_DEVICES` if set, else the NVIDIA driver's list.
pub(crate) fn detect_gpus() -> usize {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v.split(',').filter(|s| !s.trim().is_empty()).count();
    }
    std::fs::read_dir("/proc/driver/nvidia/gpus").map_or(0, |d| d.count())
}

/// How much a store may hold in memory, and where it spills.
#[derive(Debug, Clone)]
pub(crate) struct StoreLimits {
    /// Bytes of objects kept in memory.
    pub(crate) capacity: u64,
    /// The folder spill files go in (each store uses its own subfolder, removed when it stops);
    /// `None`: the system's temporary folder.
    pub(crate) spill_dir: Option<std::path::PathBuf>,
}

impl StoreLimits {
    /// No cap (tests of other parts).
    #[cfg(test)]
    pub(crate) fn unlimited() -> Self {
        StoreLimits {
            capacity: u64::MAX,
            spill_dir: None,
        }
    }
}

/// The spill folder when `Config::spill_dir` is not given.
pub(crate) const SPILL_DIR_ENV: &str = "LUMEN_SPILL_DIR";

fn available_memory() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/meminfo") else {
        return 4 << 30;
    };
    s.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(4 << 30, |kb| kb * 1024)
}

/// Refuses an empty namespace (Ray: `"" is not a valid namespace`), wherever one is given.
pub(crate) fn check_namespace(namespace: &str) -> Result<()> {
    if namespace.is_empty() {
        return Err(Error::invalid(
            "a namespace must not be empty (leave it unset for the driver's own)",
        ));
    }
    Ok(())
}

/// Checks that `Config::working_dir`'s `dir` exists and is a directory (a symbolic link to one
/// counts, as for `cd`; inside it, links are never followed).
pub(crate) fn check_working_dir(dir: &std::path::Path) -> Result<(), Error> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(format!(
            "Config::working_dir({}): not a directory (give the folder holding the files tasks \
             read by relative paths)",
            dir.display()
        ))),
        Err(e) => Err(Error::invalid(format!(
            "Config::working_dir({}): {}",
            dir.display(),
            crate::error::describe_io(&e)
        ))),
    }
}

/// Refuses an environment variable no process can be given, or one of lumen's own; `what`
/// names the call that gave it in the message (`Config::env`, a task's `.env`).
pub(crate) fn check_env(what: &str, name: &str, value: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("its name is empty")
    } else if name.contains('=') || name.contains('\0') {
        Some("its name contains '=' or a NUL byte")
    } else if value.contains('\0') {
        Some("its value contains a NUL byte")
    } else if name.starts_with("LUMEN_") {
        Some("names starting with LUMEN_ are lumen's own (they put a process in worker mode)")
    } else {
        None
    };
    match why {
        Some(why) => Err(Error::invalid(format!(
            "{what}({name:?}, ..) is refused: {why}"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables_no_process_can_have_or_lumens_own_are_refused() {
        assert!(Config::default().env("MY_SETTING", "1").validate().is_ok());
        assert!(Config::default()
            .env("EMPTY_IS_FINE", "")
            .validate()
            .is_ok());
        for (name, value, why) in [
            ("", "1", "empty"),
            ("A=B", "1", "'='"),
            ("A", "x\0y", "NUL"),
            ("LUMEN_WORKER", "1", "lumen's own"),
        ] {
            let e = Config::default().env(name, value).validate().unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument { .. }) && e.to_string().contains(why),
                "{name:?}: {e}"
            );
        }
    }

    #[test]
    fn a_working_dir_must_be_a_directory() {
        let here = std::env::temp_dir();
        assert!(Config::default().working_dir(&here).validate().is_ok());
        let e = Config::default()
            .working_dir(here.join("lumen-no-such-folder-here"))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("lumen-no-such-folder-here"), "{e}");
    }

    #[test]
    fn node_resources_validate() {
        let set = Config::default()
            .num_cpus(3.0)
            .num_gpus(1.0)
            .resource("node0", 2.0)
            .node_resources()
            .unwrap()
            .to_map();
        assert_eq!(set["CPU"], 3.0);
        assert_eq!(set["GPU"], 1.0);
        assert_eq!(set["node0"], 2.0);
        assert!(set["memory"] > 0.0 && set["object_store_memory"] > 0.0);
        assert!(Config::default().num_cpus(-1.0).node_resources().is_err());
        assert!(Config::default().num_gpus(0.5).node_resources().is_err());
        assert!(Config::default()
            .resource("GPU", 1.0)
            .node_resources()
            .is_err());
    }
}
