//! The live backend table: an immutable snapshot swapped atomically on every change.
//!
//! Requests read the current [`Table`] through an `ArcSwap` (a thread-local "debt" slot,
//! no reference count bounced between cores); the admin API builds a new table and
//! swaps it in. A request that started on the old table finishes on it, holding the
//! `Local` of the backend it chose, so adding, removing or re-weighting backends never
//! drops a connection. Each table carries its strategy, built for exactly its backends.
//!
//! Removed backends leave a [`Tombstone`]: a diner pinned to a backend that was removed
//! has *lost* its session (the operator took the waiter away), which is different from
//! a token naming an id this balancer never knew (treated as absent).

use crate::backend::Backend;
use crate::config::BalancingConfig;
use crate::error::ConfigError;
use crate::slots::Capacity;
use crate::spec::{BackendSpec, Mode, validate_weight};
use crate::strategy::{self, Pick, Selection};
use arc_swap::{ArcSwap, Guard};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Tombstones kept; older removals are forgotten (their tokens then read as unknown).
const MAX_TOMBSTONES: usize = 256;

/// A backend removed through the admin API.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    pub(crate) id: Arc<str>,
    pub(crate) mode: Option<Mode>,
}

/// One immutable view of the backends and their strategy.
#[derive(Debug)]
pub(crate) struct Table {
    backends: Vec<Backend>,
    selection: Box<dyn Selection>,
    tombstones: VecDeque<Tombstone>,
}

impl Table {
    /// The backends, in configuration order.
    pub(crate) fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The backend with id `id`. A linear scan: tables hold a few dozen backends and
    /// comparing short ids beats hashing them.
    pub(crate) fn find(&self, id: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.id() == id)
    }

    /// The tombstone of a removed backend `id`, if it was removed recently.
    pub(crate) fn tombstone(&self, id: &str) -> Option<&Tombstone> {
        self.tombstones.iter().find(|t| &*t.id == id)
    }

    /// Whether the strategy needs the request's hash key.
    pub(crate) fn uses_key(&self) -> bool {
        self.selection.uses_key()
    }

    /// The strategy's preferred backend among those `accept` allows.
    pub(crate) fn select(
        &self,
        pick: Pick,
        accept: &mut dyn FnMut(&Backend) -> bool,
    ) -> Option<&Backend> {
        self.selection
            .select(&self.backends, pick, accept)
            .map(|i| &self.backends[i])
    }
}

/// Why an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TableError {
    #[error("backend {0:?} already exists; remove it first or pick another id")]
    Duplicate(String),
    #[error("no backend has id {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// The table plus what it takes to rebuild it.
#[derive(Debug)]
pub(crate) struct Registry {
    current: ArcSwap<Table>,
    /// Serializes admin changes (read, rebuild, swap), so none is lost.
    edit: Mutex<()>,
    balancing: BalancingConfig,
    workers: usize,
    capacity: Capacity,
}

impl Registry {
    /// A registry holding `specs`, for `workers` workers with `capacity` each.
    pub(crate) fn new(
        specs: &[BackendSpec],
        balancing: BalancingConfig,
        workers: usize,
        capacity: Capacity,
    ) -> Registry {
        let backends: Vec<Backend> = specs
            .iter()
            .map(|s| Backend::new(s, workers, capacity.slots, capacity.queue))
            .collect();
        let table = Table {
            selection: strategy::build(&balancing, &backends, workers),
            backends,
            tombstones: VecDeque::new(),
        };
        Registry {
            current: ArcSwap::from_pointee(table),
            edit: Mutex::new(()),
            balancing,
            workers,
            capacity,
        }
    }

    /// The current table. Hold the guard briefly (it is not meant to live across awaits).
    pub(crate) fn load(&self) -> Guard<Arc<Table>> {
        self.current.load()
    }

    /// The current table, owned (for slow paths such as admin and health checks).
    pub(crate) fn snapshot(&self) -> Arc<Table> {
        self.current.load_full()
    }

    fn rebuild(&self, backends: Vec<Backend>, tombstones: VecDeque<Tombstone>) {
        let selection = strategy::build(&self.balancing, &backends, self.workers);
        self.current.store(Arc::new(Table {
            backends,
            selection,
            tombstones,
        }));
    }

    fn edit(&self) -> std::sync::MutexGuard<'_, ()> {
        self.edit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a backend.
    pub(crate) fn add(&self, spec: &BackendSpec) -> Result<(), TableError> {
        spec.validate()?;
        let _edit = self.edit();
        let table = self.current.load_full();
        if table.find(&spec.id).is_some() {
            return Err(TableError::Duplicate(spec.id.clone()));
        }
        let mut backends = table.backends.clone();
        backends.push(Backend::new(
            spec,
            self.workers,
            self.capacity.slots,
            self.capacity.queue,
        ));
        let mut tombstones = table.tombstones.clone();
        tombstones.retain(|t| *t.id != *spec.id);
        self.rebuild(backends, tombstones);
        Ok(())
    }

    /// Removes a backend; its in-flight requests finish, its idle connections close.
    pub(crate) fn remove(&self, id: &str) -> Result<(), TableError> {
        let _edit = self.edit();
        let table = self.current.load_full();
        let removed = table
            .find(id)
            .ok_or_else(|| TableError::NotFound(id.to_string()))?;
        let mut tombstones = table.tombstones.clone();
        if tombstones.len() == MAX_TOMBSTONES {
            tombstones.pop_front();
        }
        tombstones.push_back(Tombstone {
            id: removed.core.id.clone(),
            mode: removed.core.mode(),
        });
        let backends = table
            .backends
            .iter()
            .filter(|b| b.id() != id)
            .cloned()
            .collect();
        self.rebuild(backends, tombstones);
        Ok(())
    }

    /// Changes a backend's weight (and rebuilds the strategy's precomputed state).
    pub(crate) fn set_weight(&self, id: &str, weight: u32) -> Result<(), TableError> {
        validate_weight(weight)?;
        let _edit = self.edit();
        let table = self.current.load_full();
        table
            .find(id)
            .ok_or_else(|| TableError::NotFound(id.to_string()))?
            .core
            .set_weight(weight);
        self.rebuild(table.backends.clone(), table.tombstones.clone());
        Ok(())
    }

    /// Starts or stops draining a backend (no rebuild needed: the flag is read per request).
    pub(crate) fn set_draining(&self, id: &str, draining: bool) -> Result<(), TableError> {
        let table = self.current.load();
        table
            .find(id)
            .ok_or_else(|| TableError::NotFound(id.to_string()))?
            .core
            .set_draining(draining);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let specs: Vec<BackendSpec> = (1..=3)
            .map(|i| BackendSpec::new(format!("w{i}"), format!("127.0.0.1:{i}").parse().unwrap()))
            .collect();
        Registry::new(&specs, BalancingConfig::default(), 1, Capacity::UNUSED)
    }

    #[test]
    fn add_remove_and_tombstones() {
        let r = registry();
        assert!(matches!(
            r.add(&BackendSpec::new("w1", "127.0.0.1:9".parse().unwrap())),
            Err(TableError::Duplicate(_))
        ));
        r.add(&BackendSpec::new("w4", "127.0.0.1:4".parse().unwrap()))
            .unwrap();
        assert_eq!(r.load().backends().len(), 4);
        r.remove("w2").unwrap();
        let table = r.load();
        assert!(table.find("w2").is_none());
        assert!(table.tombstone("w2").is_some());
        assert!(table.tombstone("w9").is_none());
        assert!(matches!(r.remove("w2"), Err(TableError::NotFound(_))));
        // Re-adding an id clears its tombstone.
        r.add(&BackendSpec::new("w2", "127.0.0.1:2".parse().unwrap()))
            .unwrap();
        assert!(r.load().tombstone("w2").is_none());
    }

    #[test]
    fn changes_keep_the_other_backends_state() {
        let r = registry();
        r.load().find("w1").unwrap().core.set_draining(true);
        r.set_weight("w3", 5).unwrap();
        let table = r.load();
        assert!(table.find("w1").unwrap().core.is_draining());
        assert_eq!(table.find("w3").unwrap().core.weight(), 5);
        assert!(matches!(r.set_weight("w3", 0), Err(TableError::Invalid(_))));
        assert!(matches!(
            r.set_draining("w9", true),
            Err(TableError::NotFound(_))
        ));
    }
}
