//! Resource amounts, sets and a node's accounting: pure values, no actors, no clock.
//!
//! Amounts are fixed point with a precision of 0.0001 (Ray's), stored as integer ten-thousandths
//! so that adding and subtracting never drifts. A [`ResourceSet`] is a sorted list of
//! (resource, amount) pairs with no zero amounts. [`NodeResources`] is one node's ledger: total,
//! available, and per-GPU instance availability, so that tasks get concrete GPU ids. The invariant
//! the rest of the system relies on: `available` never goes negative and never exceeds `total`;
//! every grant handed out is returned exactly once.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Ten-thousandths of a unit: Ray's resource precision.
const SCALE: i64 = 10_000;

/// A non-negative resource amount with a precision of 0.0001. Decoding one from another
/// process refuses what [`Amount::parse`] would (negative or too large).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "i64")]
pub(crate) struct Amount(i64);

/// The largest amount, in ten-thousandths (what [`Amount::parse`] accepts at most).
const MAX_SCALED: i64 = i64::MAX / 4;

impl TryFrom<i64> for Amount {
    type Error = String;
    fn try_from(scaled: i64) -> std::result::Result<Amount, String> {
        if (0..=MAX_SCALED).contains(&scaled) {
            Ok(Amount(scaled))
        } else {
            Err(format!(
                "resource amount {} is out of range (amounts are non-negative and at most {})",
                scaled as f64 / SCALE as f64,
                MAX_SCALED / SCALE
            ))
        }
    }
}

impl Amount {
    pub(crate) const ZERO: Amount = Amount(0);
    /// The smallest amount there is (0.0001).
    pub(crate) const TICK: Amount = Amount(1);
    pub(crate) const ONE: Amount = Amount(SCALE);

    /// Converts a user-supplied amount, refusing negative, non-finite and over-precise values.
    pub(crate) fn parse(what: &str, x: f64) -> Result<Amount> {
        if !x.is_finite() || x < 0.0 {
            return Err(Error::invalid(format!(
                "{what} = {x}: resource amounts must be finite and non-negative"
            )));
        }
        let scaled = x * SCALE as f64;
        if scaled > MAX_SCALED as f64 {
            return Err(Error::invalid(format!("{what} = {x}: amount is too large")));
        }
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 * scaled.abs().max(1.0) {
            return Err(Error::invalid(format!(
                "{what} = {x}: resource amounts have a precision of 0.0001; use a multiple of 0.0001"
            )));
        }
        Ok(Amount(rounded as i64))
    }

    /// Any raw amount, negative ones included: only for [`crate::testing::forge_work`], which
    /// checks that another process refuses what no honest one sends.
    pub(crate) fn forged(scaled: i64) -> Amount {
        Amount(scaled)
    }

    /// The sum of two amounts.
    pub(crate) fn plus(self, other: Amount) -> Amount {
        Amount(self.0.saturating_add(other.0))
    }

    /// Builds an amount from whole units.
    pub(crate) fn units(n: u64) -> Amount {
        Amount(n as i64 * SCALE)
    }

    pub(crate) fn as_f64(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }

    pub(crate) fn is_whole(self) -> bool {
        self.0 % SCALE == 0
    }

    pub(crate) fn whole_units(self) -> u64 {
        (self.0 / SCALE) as u64
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

/// A resource kind. The predefined ones are matched by value; custom ones by name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum Resource {
    Cpu,
    Gpu,
    Memory,
    ObjectStoreMemory,
    Custom(Arc<str>),
}

impl Resource {
    pub(crate) fn name(&self) -> &str {
        match self {
            Resource::Cpu => "CPU",
            Resource::Gpu => "GPU",
            Resource::Memory => "memory",
            Resource::ObjectStoreMemory => "object_store_memory",
            Resource::Custom(s) => s,
        }
    }

    /// A custom resource, refusing names reserved for the predefined kinds.
    pub(crate) fn custom(name: &str) -> Result<Resource> {
        match name {
            "" => Err(Error::invalid("a custom resource name must not be empty")),
            "CPU" | "GPU" | "memory" | "object_store_memory" => Err(Error::invalid(format!(
                "{name:?} is a predefined resource: use the num_cpus / num_gpus / memory option \
                 instead of resource({name:?}, ..)"
            ))),
            n => Ok(Resource::Custom(Arc::from(n))),
        }
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of resource amounts: sorted by resource, no zero entries. Decoding one from another
/// process checks that (and the custom names) rather than trusting it.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<(Resource, Amount)>")]
pub(crate) struct ResourceSet(Vec<(Resource, Amount)>);

impl TryFrom<Vec<(Resource, Amount)>> for ResourceSet {
    type Error = String;
    fn try_from(entries: Vec<(Resource, Amount)>) -> std::result::Result<ResourceSet, String> {
        for (i, (r, a)) in entries.iter().enumerate() {
            if *a == Amount::ZERO {
                return Err(format!("resource set names {r:?} with amount 0"));
            }
            if let Resource::Custom(name) = r {
                Resource::custom(name).map_err(|e| e.to_string())?;
            }
            if i > 0 && entries[i - 1].0 >= *r {
                return Err(format!("resource set is not sorted or names {r:?} twice"));
            }
        }
        Ok(ResourceSet(entries))
    }
}

impl fmt::Debug for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(r, a)| (r, a)))
            .finish()
    }
}

impl ResourceSet {
    pub(crate) fn new() -> Self {
        ResourceSet(Vec::new())
    }

    /// `{CPU: 1}`: the default request of a task.
    pub(crate) fn one_cpu() -> Self {
        ResourceSet(vec![(Resource::Cpu, Amount::ONE)])
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn get(&self, r: &Resource) -> Amount {
        match self.0.binary_search_by(|(k, _)| k.cmp(r)) {
            Ok(i) => self.0[i].1,
            Err(_) => Amount::ZERO,
        }
    }

    /// Sets `r` to `a` (removing it when `a` is zero).
    pub(crate) fn set(&mut self, r: Resource, a: Amount) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&r)) {
            Ok(i) if a == Amount::ZERO => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = a,
            Err(_) if a == Amount::ZERO => {}
            Err(i) => self.0.insert(i, (r, a)),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Resource, Amount)> {
        self.0.iter().map(|(r, a)| (r, *a))
    }

    /// Whether every amount in `self` is available in `other`.
    pub(crate) fn is_subset_of(&self, other: &ResourceSet) -> bool {
        self.0.iter().all(|(r, a)| other.get(r) >= *a)
    }

    /// Adds `other` into `self`.
    pub(crate) fn add(&mut self, other: &ResourceSet) {
        self.add_times(other, 1);
    }

    /// Adds `other` into `self` `n` times.
    pub(crate) fn add_times(&mut self, other: &ResourceSet, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        for (r, a) in other.iter() {
            let cur = self.get(r);
            self.set(r.clone(), cur.plus(Amount(a.0.saturating_mul(n))));
        }
    }

    /// Subtracts `other` from `self` where it can, leaving nothing below zero.
    pub(crate) fn saturating_sub(&mut self, other: &ResourceSet) {
        for (r, a) in other.iter() {
            let cur = self.get(r);
            self.set(r.clone(), Amount((cur.0 - a.0).max(0)));
        }
    }

    /// Subtracts `other` from `self`; `None` (and `self` untouched) if that would go negative.
    pub(crate) fn checked_sub(&mut self, other: &ResourceSet) -> Option<()> {
        if !other.is_subset_of(self) {
            return None;
        }
        for (r, a) in other.iter() {
            let cur = self.get(r);
            self.set(r.clone(), Amount(cur.0 - a.0));
        }
        Some(())
    }

    /// The amounts as a name → float map (what `cluster_resources()` shows).
    pub(crate) fn to_map(&self) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(r, a)| (r.name().to_string(), a.as_f64()))
            .collect()
    }
}

/// What a user asked for, before validation: the fields of task and actor options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ResourceRequest {
    pub(crate) num_cpus: Option<f64>,
    pub(crate) num_gpus: Option<f64>,
    pub(crate) memory: Option<f64>,
    pub(crate) custom: Vec<(String, f64)>,
}

impl ResourceRequest {
    /// Whether any resource was given explicitly (actors then hold them for their lifetime).
    pub(crate) fn is_explicit(&self) -> bool {
        self.num_cpus.is_some()
            || self.num_gpus.is_some()
            || self.memory.is_some()
            || !self.custom.is_empty()
    }

    /// Validates the request and turns it into a set, with `default_cpus` when `num_cpus` is
    /// not given.
    pub(crate) fn to_set(&self, default_cpus: f64) -> Result<ResourceSet> {
        let mut set = ResourceSet::new();
        let cpus = Amount::parse("num_cpus", self.num_cpus.unwrap_or(default_cpus))?;
        set.set(Resource::Cpu, cpus);
        if let Some(g) = self.num_gpus {
            let gpus = Amount::parse("num_gpus", g)?;
            if gpus > Amount::ONE && !gpus.is_whole() {
                return Err(Error::invalid(format!(
                    "num_gpus = {g}: GPU amounts above 1 must be whole numbers"
                )));
            }
            set.set(Resource::Gpu, gpus);
        }
        if let Some(m) = self.memory {
            set.set(Resource::Memory, Amount::parse("memory", m)?);
        }
        for (name, x) in &self.custom {
            let r = Resource::custom(name)?;
            let a = Amount::parse(&format!("resource {name:?}"), *x)?;
            set.set(r, a);
        }
        Ok(set)
    }
}

/// Concrete resources handed to one running task or actor: the amounts, plus which GPUs and how
/// much of each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    pub(crate) resources: ResourceSet,
    pub(crate) gpus: Vec<(u32, Amount)>,
}

impl Grant {
    pub(crate) fn gpu_ids(&self) -> Vec<u32> {
        self.gpus.iter().map(|(i, _)| *i).collect()
    }

    /// The CPU this grant holds: plain CPU, and CPU of a placement group's reservation
    /// (`CPU_group_..`). A task blocked in `get` lends exactly this.
    pub(crate) fn cpu_part(&self) -> ResourceSet {
        let mut out = ResourceSet::new();
        for (r, a) in self.resources.iter() {
            if is_cpu(r) {
                out.set(r.clone(), a);
            }
        }
        out
    }

    /// The grant without its CPU (what a blocked task still holds).
    pub(crate) fn without_cpu(&self) -> Grant {
        let mut rest = self.clone();
        for (r, _) in self.resources.iter() {
            if is_cpu(r) {
                rest.resources.set(r.clone(), Amount::ZERO);
            }
        }
        rest
    }
}

fn is_cpu(r: &Resource) -> bool {
    match r {
        Resource::Cpu => true,
        Resource::Custom(name) => name.starts_with("CPU_group_"),
        _ => false,
    }
}

/// One node's resource ledger.
#[derive(Clone, Debug)]
pub(crate) struct NodeResources {
    total: ResourceSet,
    available: ResourceSet,
    /// Available fraction of each GPU instance, indexed by GPU id.
    gpu_instances: Vec<Amount>,
}

impl NodeResources {
    pub(crate) fn new(total: ResourceSet) -> Self {
        let gpus = total.get(&Resource::Gpu).whole_units() as usize;
        NodeResources {
            available: total.clone(),
            total,
            gpu_instances: vec![Amount::ONE; gpus],
        }
    }

    pub(crate) fn total(&self) -> &ResourceSet {
        &self.total
    }

    pub(crate) fn available(&self) -> &ResourceSet {
        &self.available
    }

    /// Whether `req` could ever fit on this node (when idle).
    #[cfg(test)]
    pub(crate) fn is_feasible(&self, req: &ResourceSet) -> bool {
        req.is_subset_of(&self.total) && self.assign_gpus(req, true).is_some()
    }

    /// Whether `req` fits in what is available now.
    #[cfg(test)]
    pub(crate) fn fits(&self, req: &ResourceSet) -> bool {
        req.is_subset_of(&self.available) && self.assign_gpus(req, false).is_some()
    }

    /// Picks GPU instances for the request's GPU amount: a fraction (≤ 1) from one GPU, or whole
    /// GPUs. `idle` pretends every GPU is free (feasibility).
    fn assign_gpus(&self, req: &ResourceSet, idle: bool) -> Option<Vec<(u32, Amount)>> {
        let want = req.get(&Resource::Gpu);
        if want == Amount::ZERO {
            return Some(Vec::new());
        }
        let avail = |i: usize| {
            if idle {
                Amount::ONE
            } else {
                self.gpu_instances[i]
            }
        };
        if want <= Amount::ONE {
            // Best fit: the most-used GPU that still has room, to keep whole GPUs free.
            (0..self.gpu_instances.len())
                .filter(|&i| avail(i) >= want)
                .min_by_key(|&i| avail(i))
                .map(|i| vec![(i as u32, want)])
        } else {
            let n = want.whole_units() as usize;
            let free: Vec<_> = (0..self.gpu_instances.len())
                .filter(|&i| avail(i) == Amount::ONE)
                .take(n)
                .map(|i| (i as u32, Amount::ONE))
                .collect();
            (free.len() == n).then_some(free)
        }
    }

    /// Takes `req` from what is available, or returns `None` and changes nothing.
    pub(crate) fn try_acquire(&mut self, req: &ResourceSet) -> Option<Grant> {
        let gpus = self.assign_gpus(req, false)?;
        self.available.checked_sub(req)?;
        for (i, a) in &gpus {
            self.gpu_instances[*i as usize].0 -= a.0;
        }
        Some(Grant {
            resources: req.clone(),
            gpus,
        })
    }

    /// Returns a grant. Amounts never rise above the total, whatever is passed.
    pub(crate) fn release(&mut self, grant: &Grant) {
        for (r, a) in grant.resources.iter() {
            let cur = self.available.get(r);
            let cap = self.total.get(r);
            self.available
                .set(r.clone(), Amount((cur.0 + a.0).min(cap.0)));
        }
        for (i, a) in &grant.gpus {
            if let Some(slot) = self.gpu_instances.get_mut(*i as usize) {
                slot.0 = (slot.0 + a.0).min(SCALE);
            }
        }
    }

    /// Adds capacity (a committed placement-group bundle's resources), total and available.
    pub(crate) fn add_capacity(&mut self, extra: &ResourceSet) {
        self.total.add(extra);
        self.available.add(extra);
    }

    /// Removes capacity added by [`add_capacity`](Self::add_capacity). What is in use is lost
    /// with it (its users are stopped); available never goes below zero or above the total.
    pub(crate) fn remove_capacity(&mut self, extra: &ResourceSet) {
        for (r, a) in extra.iter() {
            let total = Amount((self.total.get(r).0 - a.0).max(0));
            let avail = Amount((self.available.get(r).0 - a.0).clamp(0, total.0));
            self.total.set(r.clone(), total);
            self.available.set(r.clone(), avail);
        }
    }

    /// Takes back only the CPU of a grant (a task blocked in `get` lends its CPU, plain or
    /// from a placement group).
    pub(crate) fn release_cpu(&mut self, grant: &Grant) {
        self.release(&Grant {
            resources: grant.cpu_part(),
            gpus: Vec::new(),
        });
    }

    /// Re-takes the CPU of a grant whose task unblocked; `false` if it is not available yet.
    pub(crate) fn try_reacquire_cpu(&mut self, grant: &Grant) -> bool {
        self.available.checked_sub(&grant.cpu_part()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sets_from_another_process_are_checked_not_trusted() {
        let decode = |entries: Vec<(Resource, i64)>| {
            let bytes = rmp_serde::to_vec(&entries).expect("encode");
            rmp_serde::from_slice::<ResourceSet>(&bytes).map_err(|e| e.to_string())
        };
        let cpu = Resource::Cpu;
        let gpu = Resource::Gpu;
        assert!(decode(vec![(cpu.clone(), 10_000), (gpu.clone(), 5_000)]).is_ok());
        let negative = decode(vec![(cpu.clone(), -10_000)]).expect_err("negative");
        assert!(negative.contains("out of range"), "{negative}");
        assert!(decode(vec![(cpu.clone(), i64::MAX)]).is_err(), "too large");
        assert!(decode(vec![(cpu.clone(), 0)]).is_err(), "a zero entry");
        assert!(
            decode(vec![(gpu.clone(), 1), (cpu.clone(), 1)]).is_err(),
            "unsorted"
        );
        assert!(
            decode(vec![(cpu.clone(), 1), (cpu.clone(), 1)]).is_err(),
            "twice"
        );
        let reserved = decode(vec![(Resource::Custom(Arc::from("CPU")), 1)]).expect_err("name");
        assert!(reserved.contains("predefined"), "{reserved}");
        // What this process encodes, it decodes.
        let mine = set(&[("CPU", 1.5), ("GPU", 1.0), ("custom", 0.001)]);
        let bytes = rmp_serde::to_vec(&mine).expect("encode");
        assert_eq!(
            rmp_serde::from_slice::<ResourceSet>(&bytes).expect("decode"),
            mine
        );
    }

    fn set(pairs: &[(&str, f64)]) -> ResourceSet {
        let mut s = ResourceSet::new();
        for (n, x) in pairs {
            let r = match *n {
                "CPU" => Resource::Cpu,
                "GPU" => Resource::Gpu,
                "memory" => Resource::Memory,
                other => Resource::Custom(Arc::from(other)),
            };
            s.set(r, Amount::parse(n, *x).unwrap());
        }
        s
    }

    #[test]
    fn amounts_keep_four_decimals_and_refuse_more() {
        assert_eq!(Amount::parse("x", 0.0001).unwrap(), Amount(1));
        assert_eq!(Amount::parse("x", 0.5).unwrap().as_f64(), 0.5);
        assert!(Amount::parse("x", 0.00001).is_err());
        assert!(Amount::parse("x", -1.0).is_err());
        assert!(Amount::parse("x", f64::NAN).is_err());
        assert!(Amount::parse("x", f64::INFINITY).is_err());
        // 0.1 + 0.2 style drift does not accumulate.
        let mut s = set(&[("CPU", 0.3)]);
        s.add(&set(&[("CPU", 0.1)]));
        s.add(&set(&[("CPU", 0.2)]));
        assert_eq!(s.get(&Resource::Cpu), Amount::parse("x", 0.6).unwrap());
    }

    #[test]
    fn requests_validate_gpus_and_names() {
        let mut r = ResourceRequest {
            num_gpus: Some(1.5),
            ..Default::default()
        };
        let e = r.to_set(1.0).unwrap_err().to_string();
        assert!(e.contains("whole"), "{e}");
        r.num_gpus = Some(2.0);
        assert_eq!(r.to_set(1.0).unwrap().get(&Resource::Gpu), Amount::units(2));
        r.num_gpus = Some(0.25);
        assert!(r.to_set(1.0).is_ok());
        r.custom = vec![("CPU".into(), 1.0)];
        assert!(r.to_set(1.0).unwrap_err().to_string().contains("num_cpus"));
        r.custom = vec![("".into(), 1.0)];
        assert!(r.to_set(1.0).is_err());
        let zero = ResourceRequest {
            num_cpus: Some(0.0),
            ..Default::default()
        };
        assert!(zero.to_set(1.0).unwrap().is_empty());
    }

    #[test]
    fn gpus_are_assigned_by_instance() {
        let mut node = NodeResources::new(set(&[("CPU", 4.0), ("GPU", 2.0)]));
        let half = set(&[("GPU", 0.5)]);
        let a = node.try_acquire(&half).unwrap();
        let b = node.try_acquire(&half).unwrap();
        // Best fit packs both halves onto one GPU, leaving the other whole.
        assert_eq!(a.gpu_ids(), b.gpu_ids());
        let whole = node.try_acquire(&set(&[("GPU", 1.0)])).unwrap();
        assert_ne!(whole.gpu_ids(), a.gpu_ids());
        assert!(node.try_acquire(&half).is_none());
        node.release(&a);
        assert!(!node.fits(&set(&[("GPU", 2.0)])));
        assert!(node.is_feasible(&set(&[("GPU", 2.0)])));
        assert!(!node.is_feasible(&set(&[("GPU", 3.0)])));
        node.release(&b);
        node.release(&whole);
        assert_eq!(node.available(), node.total());
    }

    #[test]
    fn blocked_tasks_lend_only_their_cpu() {
        let mut node = NodeResources::new(set(&[("CPU", 1.0), ("x", 1.0)]));
        let g = node.try_acquire(&set(&[("CPU", 1.0), ("x", 1.0)])).unwrap();
        node.release_cpu(&g);
        assert_eq!(node.available().get(&Resource::Cpu), Amount::ONE);
        assert_eq!(
            node.available().get(&Resource::custom("x").unwrap()),
            Amount::ZERO
        );
        let other = node.try_acquire(&set(&[("CPU", 1.0)])).unwrap();
        assert!(!node.try_reacquire_cpu(&g));
        node.release(&other);
        assert!(node.try_reacquire_cpu(&g));
        node.release(&g);
        assert_eq!(node.available(), node.total());
    }

    fn arb_request() -> impl Strategy<Value = ResourceSet> {
        (0u32..30, 0u32..25, 0u32..3).prop_map(|(c, g, x)| {
            let mut s = ResourceSet::new();
            s.set(Resource::Cpu, Amount(c as i64 * 1000));
            // Fractions up to 1, or 2 whole GPUs.
            let gpu = if g > 20 {
                Amount::units(2)
            } else {
                Amount(g as i64 * 500)
            };
            s.set(Resource::Gpu, gpu);
            s.set(Resource::Custom(Arc::from("x")), Amount::units(x as u64));
            s
        })
    }

    proptest! {
        /// Accounting never goes negative, never exceeds the total, and every grant returned
        /// restores the node exactly.
        #[test]
        fn accounting_is_conserved(ops in proptest::collection::vec((arb_request(), any::<bool>()), 1..200)) {
            let total = set(&[("CPU", 4.0), ("GPU", 3.0), ("x", 2.0)]);
            let mut node = NodeResources::new(total.clone());
            let mut held: Vec<Grant> = Vec::new();
            for (req, release) in ops {
                if release && !held.is_empty() {
                    let g = held.swap_remove(0);
                    node.release(&g);
                } else if let Some(g) = node.try_acquire(&req) {
                    held.push(g);
                }
                for (r, a) in node.available().iter() {
                    prop_assert!(a >= Amount::ZERO);
                    prop_assert!(a <= total.get(r));
                }
                for slot in &node.gpu_instances {
                    prop_assert!(*slot >= Amount::ZERO && *slot <= Amount::ONE);
                }
                let mut sum = node.available().clone();
                for g in &held { sum.add(&g.resources); }
                prop_assert_eq!(&sum, &total);
            }
            for g in held.drain(..) { node.release(&g); }
            prop_assert_eq!(node.available(), &total);
        }
    }
}
