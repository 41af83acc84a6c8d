//! The read model as the API and the fold share it: the [`Store`] the API reads, swapped whole
//! when a rebuild catches up, and what the projector knows of its own progress (for `/readyz`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::store::{Store, StoreError};

/// The read model: the store the API reads now, and what `/readyz` says of it. Cheap to clone.
#[derive(Clone)]
pub struct ReadModel {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwap<Store>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Why the read model is being rebuilt, while it is.
    rebuilding: Option<String>,
    /// When the fold last held everything each stream held.
    caught_up: HashMap<String, Instant>,
}

impl From<Store> for ReadModel {
    fn from(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwap::from_pointee(store),
                state: Mutex::default(),
            }),
        }
    }
}

impl ReadModel {
    /// Opens the read model file at `path` (created when missing).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Store::open(path).map(Self::from)
    }

    /// Opens the read model file at `path` (created when missing), holding at most `cache_bytes`
    /// of it in memory; a rebuild's new file gets the same.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        Store::open_with_cache(path, cache_bytes).map(Self::from)
    }

    /// The store the API reads now.
    pub fn store(&self) -> Arc<Store> {
        self.inner.current.load_full()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Why the read model is being rebuilt, while it is.
    pub fn rebuilding(&self) -> Option<String> {
        self.state().rebuilding.clone()
    }

    pub(crate) fn set_rebuilding(&self, why: Option<String>) {
        self.state().rebuilding = why;
    }

    /// Notes that the fold has folded everything `stream` held when it was last asked.
    pub(crate) fn caught_up(&self, stream: &str) {
        self.state()
            .caught_up
            .insert(stream.to_owned(), Instant::now());
    }

    /// Whether the fold held everything `stream` held at some moment within `within`.
    pub(crate) fn caught_up_within(&self, stream: &str, within: Duration) -> bool {
        self.state()
            .caught_up
            .get(stream)
            .is_some_and(|at| at.elapsed() <= within)
    }

    /// How long ago the fold last held everything `stream` held (`None`: never, in this process).
    pub(crate) fn since_caught_up(&self, stream: &str) -> Option<Duration> {
        self.state().caught_up.get(stream).map(Instant::elapsed)
    }

    /// Where a rebuild of this read model is written before it replaces the file.
    pub(crate) fn rebuild_path(&self) -> PathBuf {
        rebuild_path(self.store().path())
    }

    /// Makes `rebuilt` (written at [`ReadModel::rebuild_path`]) the read model: renames its file
    /// over the current one (atomically: a crash leaves one or the other) and swaps the store the
    /// API reads. Requests under way finish on the old store.
    pub(crate) fn switch(&self, rebuilt: Arc<Store>) -> Result<(), StoreError> {
        let old = self.store();
        std::fs::rename(rebuilt.path(), old.path()).map_err(|e| {
            StoreError::new(format!(
                "renaming {} to {}: {e}",
                rebuilt.path().display(),
                old.path().display()
            ))
        })?;
        let mut store = (*rebuilt).clone();
        store.set_path(old.path());
        self.inner.current.store(Arc::new(store));
        self.set_rebuilding(None);
        Ok(())
    }
}

/// `read-model.redb` → `read-model.rebuild.redb`, beside it.
pub(crate) fn rebuild_path(path: &Path) -> PathBuf {
    path.with_extension("rebuild.redb")
}
