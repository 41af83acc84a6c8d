//! The redb file that holds the read model. Written only by the fold of JetStream events.
//!
//! # Tables
//!
//! The API's tables (`builds`, `builds_by_repo`, `builds_by_seq`, `logs`) keep their key and value
//! types across fold versions, so that a file of an older fold can be served while its
//! replacement is rebuilt ([`crate::ReadModel`]); what a reader needs of a build it reads through
//! [`BuildHead`], which every version's JSON has. The others are the fold's bookkeeping.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use hermes_schemas::attempt::LogOwnership;
use hermes_schemas::events::{BuildEvent, BuildStatus};
use hermes_schemas::{BuildId, Envelope, LogEvent, RepoName};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::model::{self, Build};

/// build id → build JSON, as the API shows it.
const BUILDS: TableDefinition<&str, &[u8]> = TableDefinition::new("builds");
/// (repository, number) → build id.
const BY_REPO: TableDefinition<(&str, u64), &str> = TableDefinition::new("builds_by_repo");
/// stream sequence of `build.queued` → build id: every build, oldest first.
const BY_SEQ: TableDefinition<u64, &str> = TableDefinition::new("builds_by_seq");
/// (build id, attempt, line) → text.
const LOGS: TableDefinition<(&str, u32, u64), &str> = TableDefinition::new("logs");
/// build id → the newest attempt whose lines the log stream has brought.
const LOG_ATTEMPTS: TableDefinition<&str, u32> = TableDefinition::new("log_attempts");
/// stream name → last applied stream sequence.
const CHECKPOINTS: TableDefinition<&str, u64> = TableDefinition::new("checkpoints");
/// `fold_version` → the [`FOLD_VERSION`] of the fold that wrote the file.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (stream, sequence) → `<type> v<version>`: events of a newer Hermes, kept unread until an
/// upgraded projector can read them (it then rebuilds the read model).
const HELD: TableDefinition<(&str, u64), &str> = TableDefinition::new("held_events");
/// (build id, attempt) → lines stored.
const LOG_COUNTS: TableDefinition<(&str, u32), u64> = TableDefinition::new("log_counts");
/// log stream sequence → (build id, attempt, first line, lines): which message brought which
/// lines, so that the lines of messages the stream no longer holds are removed with them.
const LOG_MESSAGES: TableDefinition<u64, (&str, u32, u64, u64)> =
    TableDefinition::new("log_messages");
/// build id → [`WaitingEnd`] JSON: a build whose end is folded but not yet shown, because the
/// lines its attempt stored before it are not all folded yet.
const ENDS: TableDefinition<&str, &[u8]> = TableDefinition::new("ends_waiting");

/// The version of the fold and of the tables it writes. A file written by another version (or by
/// none: before versions were stored) is rebuilt from the streams at start. Bump it whenever the
/// stored [`Build`], a table or what the fold makes of an event changes; the test
/// `the_read_model_schema_file_is_fresh_and_its_version_honest` holds it for the stored `Build`
/// (`services/projector/read-model.schema.json`). Version 1 was the unversioned fold before it.
pub const FOLD_VERSION: u64 = 2;

const FOLD_VERSION_KEY: &str = "fold_version";

#[derive(Debug, thiserror::Error)]
#[error("read model: {0}")]
pub struct StoreError(String);

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

impl StoreError {
    pub(crate) fn new(why: String) -> Self {
        Self(why)
    }
}

/// The most builds a filtered list looks through beyond its page.
pub const MAX_SCANNED: usize = 10_000;

/// Which builds a reader may see: a private repository's builds only by those GitHub lets read
/// it.
#[derive(Debug, Clone)]
pub enum Visible {
    /// Every build (the API token).
    All,
    /// Public repositories' builds only (someone not signed in).
    Public,
    /// Public builds, and those of these repositories (full names, in lowercase).
    PublicAnd(std::sync::Arc<std::collections::HashSet<String>>),
}

impl Visible {
    /// Whether a stored build document is shown.
    pub fn shows(&self, json: &[u8]) -> bool {
        #[derive(serde::Deserialize)]
        struct Seen<'a> {
            #[serde(borrow)]
            repo: std::borrow::Cow<'a, str>,
            /// Documents without it are of builds whose visibility was never recorded.
            #[serde(default = "unknown_is_private")]
            private: bool,
        }
        fn unknown_is_private() -> bool {
            true
        }
        match self {
            Self::All => true,
            Self::Public | Self::PublicAnd(_) => match serde_json::from_slice::<Seen<'_>>(json) {
                Ok(b) if !b.private => true,
                Ok(b) => match self {
                    Self::PublicAnd(repos) => repos.contains(&b.repo.to_ascii_lowercase()),
                    _ => false,
                },
                Err(_) => false,
            },
        }
    }
}

/// Where a line sits in a build's log: attempt, then line number.
pub type LogPosition = (u32, u64);

/// An event kept unread: its stream, its sequence, and `<type> v<version>`.
pub type Held = (String, u64, String);

/// What every reader needs of a build, read from its stored JSON whatever the fold version that
/// wrote it (unknown fields are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BuildHead {
    pub id: BuildId,
    pub repo: RepoName,
    /// Whether its repository is private (unknown: private).
    #[serde(default = "private_unless_known")]
    pub private: bool,
    /// The current attempt, 0 while queued.
    pub attempt: u32,
    pub status: BuildStatus,
}

fn private_unless_known() -> bool {
    true
}

/// A build whose end counted in the fold but is not shown yet: `build` is the folded build, final;
/// the API shows the build as it was before the end until `log_lines` lines of `attempt` are
/// folded (or the log fold reaches the log stream's end: [`Store::release_ends`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WaitingEnd {
    attempt: u32,
    log_lines: u64,
    /// The build stream sequence of the end.
    seq: u64,
    build: Build,
}

/// What one write transaction of the fold takes: the events to fold, the events kept unread
/// (`<type> v<version>` each), and the stream sequence the batch reaches (past events skipped as
/// malformed too).
pub struct Batch<'a, T> {
    pub events: &'a [(u64, T)],
    pub held: &'a [(u64, String)],
    pub through: u64,
}

impl<'a, T> Batch<'a, T> {
    /// Events only, reaching the last one's sequence.
    pub fn events(events: &'a [(u64, T)]) -> Self {
        Self {
            events,
            held: &[],
            through: events.last().map_or(0, |(seq, _)| *seq),
        }
    }
}

/// What [`Store::prune_logs`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub messages: u64,
    pub lines: u64,
    /// Some are left below the sequence: call again.
    pub more: bool,
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    pages: Arc<Pages>,
    path: PathBuf,
    /// The file's fold version when it was opened.
    version: Option<u64>,
    /// The memory redb may hold of the file (its read cache and write buffer), in bytes.
    cache_bytes: usize,
    /// The fold's commits flushed to disk ([`Flush::Now`] and [`Store::flush`]) since the store
    /// was opened.
    flushes: Arc<std::sync::atomic::AtomicU64>,
}

/// The memory a read model holds of its file when the operator does not say
/// (`HERMES_READ_MODEL_CACHE`): redb's own default is 1 GiB, which a projector with a large
/// history fills, so its memory would grow with the history. Past this, reads come from the
/// operating system's page cache.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Whether a write transaction reaches the disk before its commit returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Flushed (fsync) before the commit returns: a crash keeps it.
    Now,
    /// Visible at once, flushed with the next [`Flush::Now`] commit or [`Store::flush`]: a crash
    /// before that undoes it and its checkpoint, and the events are folded again from the stream.
    Later,
}

/// How many builds a page has when the client does not say: the page that is cached.
pub const DEFAULT_PAGE: usize = 100;

/// The most pages kept in [`Pages`] (two a repository); past that, a repository's are dropped
/// for each new one.
const MAX_CACHED_PAGES: usize = 1024;

/// The encoded first pages of `GET /api/builds` ([`DEFAULT_PAGE`] builds; by repository, and of
/// all repositories under `None`), as they were answered, until a committed batch touches a build
/// of theirs.
///
/// A page is put in only if no batch committed while it was read (the generation did not move):
/// a page read from a snapshot older than a commit can never be cached after that commit dropped
/// the pages it touched.
#[derive(Default)]
struct Pages {
    inner: Mutex<PagesInner>,
}

/// A first page of every build and one of public builds only.
type PagePair = [Option<Bytes>; 2];

#[derive(Default)]
struct PagesInner {
    generation: u64,
    /// The pages of all repositories.
    all: PagePair,
    /// The pages by repository (looked up by `&str`, without a copy of the name).
    repos: HashMap<String, PagePair>,
}

impl Pages {
    fn lock(&self) -> std::sync::MutexGuard<'_, PagesInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached page, or the generation to read it at.
    fn get(&self, repo: Option<&str>, public: bool) -> Result<Bytes, u64> {
        let inner = self.lock();
        let pair = match repo {
            None => Some(&inner.all),
            Some(r) => inner.repos.get(r),
        };
        pair.and_then(|p| p[usize::from(public)].clone())
            .ok_or(inner.generation)
    }

    fn put(&self, repo: Option<&str>, public: bool, read_at: u64, page: Bytes) {
        let mut inner = self.lock();
        if inner.generation != read_at {
            return;
        }
        let Some(r) = repo else {
            inner.all[usize::from(public)] = Some(page);
            return;
        };
        if !inner.repos.contains_key(r)
            && inner.repos.len() * 2 >= MAX_CACHED_PAGES
            && let Some(k) = inner.repos.keys().next().cloned()
        {
            inner.repos.remove(&k);
        }
        inner.repos.entry(r.to_owned()).or_default()[usize::from(public)] = Some(page);
    }

    /// Called after a write transaction that may have changed builds of `repos`.
    fn invalidate(&self, repos: &[String]) {
        let mut inner = self.lock();
        inner.generation += 1;
        if repos.is_empty() {
            return;
        }
        inner.all = PagePair::default();
        for r in repos {
            inner.repos.remove(r);
        }
    }
}

impl Store {
    /// Opens (or creates) the file, holding at most [`DEFAULT_CACHE_BYTES`] of it in memory.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the file, holding at most `cache_bytes` of it in memory. A new, empty
    /// file is stamped with [`FOLD_VERSION`]; a file with content keeps the version it has, which
    /// [`Store::rebuild_reason`] compares.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        let version;
        {
            let builds = txn.open_table(BUILDS).map_err(err)?;
            txn.open_table(BY_REPO).map_err(err)?;
            txn.open_table(BY_SEQ).map_err(err)?;
            let logs = txn.open_table(LOGS).map_err(err)?;
            txn.open_table(LOG_ATTEMPTS).map_err(err)?;
            let checkpoints = txn.open_table(CHECKPOINTS).map_err(err)?;
            txn.open_table(HELD).map_err(err)?;
            txn.open_table(LOG_COUNTS).map_err(err)?;
            txn.open_table(LOG_MESSAGES).map_err(err)?;
            txn.open_table(ENDS).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(err)?;
            let stored = meta.get(FOLD_VERSION_KEY).map_err(err)?.map(|v| v.value());
            let empty = builds.is_empty().map_err(err)?
                && logs.is_empty().map_err(err)?
                && checkpoints.is_empty().map_err(err)?;
            version = match stored {
                None if empty => {
                    meta.insert(FOLD_VERSION_KEY, FOLD_VERSION).map_err(err)?;
                    Some(FOLD_VERSION)
                }
                other => other,
            };
        }
        txn.commit().map_err(err)?;
        Ok(Self {
            db: Arc::new(db),
            pages: Arc::default(),
            path: path.to_owned(),
            version,
            cache_bytes,
            flushes: Arc::default(),
        })
    }

    /// How many of the fold's commits this store has flushed to disk since it was opened
    /// ([`Flush::Now`] and [`Store::flush`], each a `fdatasync` or two); also counted for the
    /// process in `hermes_projector_flushes_total`.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn flushed(&self) {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        static TOTAL: std::sync::LazyLock<hermes_telemetry::metrics::Counter> =
            std::sync::LazyLock::new(|| {
                hermes_telemetry::metrics::counter(
                    "hermes_projector_flushes",
                    "Read-model commits flushed to disk",
                )
            });
        TOTAL.inc();
    }

    /// The memory this store may hold of its file, in bytes.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// The file this store is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's name after a rename (the store is the same open file).
    pub(crate) fn set_path(&mut self, path: &Path) {
        path.clone_into(&mut self.path);
    }

    /// The fold version that wrote the file, `None` for a file from before versions were stored.
    pub fn fold_version(&self) -> Option<u64> {
        self.version
    }

    /// Why this file must be rebuilt from the streams before this fold may write it: another
    /// fold version wrote it. `None` when it is this version's.
    pub fn rebuild_reason(&self) -> Option<String> {
        match self.version {
            Some(FOLD_VERSION) => None,
            Some(v) => Some(format!(
                "the read model was written by fold version {v}, this is version {FOLD_VERSION}"
            )),
            None => Some(format!(
                "the read model has no fold version (written before versions were stored), this is version {FOLD_VERSION}"
            )),
        }
    }

    /// Sets the fold version the file says it has: what an older Hermes's file looks like. For
    /// tests.
    #[doc(hidden)]
    pub fn stamp_fold_version(&self, version: Option<u64>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut meta = txn.open_table(META).map_err(err)?;
            match version {
                Some(v) => meta.insert(FOLD_VERSION_KEY, v).map(drop),
                None => meta.remove(FOLD_VERSION_KEY).map(drop),
            }
            .map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// Stores `json` as build `id` of `repo` as it is (an older fold's document, say). For tests.
    #[doc(hidden)]
    pub fn put_raw_build(
        &self,
        id: &str,
        repo: &str,
        number: u64,
        json: &[u8],
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            txn.open_table(BUILDS)
                .map_err(err)?
                .insert(id, json)
                .map_err(err)?;
            txn.open_table(BY_REPO)
                .map_err(err)?
                .insert((repo, number), id)
                .map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.pages.invalidate(&[repo.to_owned()]);
        Ok(())
    }

    pub fn checkpoint(&self, stream: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(CHECKPOINTS).map_err(err)?;
        Ok(t.get(stream).map_err(err)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Makes every commit so far durable (an empty commit that is flushed to disk).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.begin_write().map_err(err)?.commit().map_err(err)?;
        self.flushed();
        Ok(())
    }

    /// Runs `fold` on the events of `batch` past the stream's checkpoint, keeps its unread events
    /// past the checkpoint, and moves the checkpoint to the batch's end, in one write
    /// transaction: a batch applied twice is harmless, and a crash leaves either all of it or
    /// none. With [`Flush::Later`] the commit is visible at once but reaches the disk only with
    /// the next flushed one; a crash before that undoes it together with its checkpoint, so the
    /// projector folds those events again.
    fn apply_batch<T>(
        &self,
        stream: &str,
        batch: &Batch<'_, T>,
        flush: Flush,
        fold: impl FnOnce(
            &redb::WriteTransaction,
            &mut dyn Iterator<Item = &(u64, T)>,
        ) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if batch.through == 0 {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(err)?;
        if flush == Flush::Later {
            txn.set_durability(Durability::None).map_err(err)?;
        }
        {
            let mut ckpt = txn.open_table(CHECKPOINTS).map_err(err)?;
            let done = ckpt.get(stream).map_err(err)?.map_or(0, |v| v.value());
            fold(
                &txn,
                &mut batch.events.iter().filter(|(seq, _)| *seq > done),
            )?;
            if !batch.held.is_empty() {
                let mut held = txn.open_table(HELD).map_err(err)?;
                for (seq, what) in batch.held.iter().filter(|(seq, _)| *seq > done) {
                    held.insert((stream, *seq), what.as_str()).map_err(err)?;
                }
            }
            ckpt.insert(stream, batch.through.max(done)).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        if flush == Flush::Now {
            self.flushed();
        }
        Ok(())
    }

    /// Folds a batch of build events into the builds they belong to: [`Store::apply_build_batch`]
    /// with nothing held.
    pub fn apply_builds(
        &self,
        stream: &str,
        batch: &[(u64, Envelope)],
        flush: Flush,
    ) -> Result<(), StoreError> {
        self.apply_build_batch(stream, &Batch::events(batch), flush)
    }

    /// Folds a batch of build events into the builds they belong to. Each build the batch touches
    /// is read and decoded once, folded through all its events of the batch, and encoded and
    /// written once.
    ///
    /// An end that carries the number of log lines its attempt stored (`build.finished`
    /// `log_lines`) is shown only once that many lines of the attempt are folded: until then the
    /// API shows the build as it was before the end, and the folded build waits in `ends_waiting`
    /// ([`Store::apply_log_batch`] and [`Store::release_ends`] show it). Nothing changes a build
    /// once its end counted, so a waiting end takes no further events.
    pub fn apply_build_batch(
        &self,
        stream: &str,
        batch: &Batch<'_, Envelope>,
        flush: Flush,
    ) -> Result<(), StoreError> {
        /// A build of the batch as it stands.
        struct Slot {
            build: Option<Build>,
            /// What the API shows while the end waits for its lines, and what it waits for.
            waiting: Option<(Build, u32, u64, u64)>,
            /// The build's end was waiting before this batch: nothing changes it.
            settled: bool,
        }
        let mut touched = Vec::new();
        let result = self.apply_batch(stream, batch, flush, |txn, events| {
            let mut builds = txn.open_table(BUILDS).map_err(err)?;
            let mut by_repo = txn.open_table(BY_REPO).map_err(err)?;
            let mut by_seq = txn.open_table(BY_SEQ).map_err(err)?;
            let mut ends = txn.open_table(ENDS).map_err(err)?;
            let counts = txn.open_table(LOG_COUNTS).map_err(err)?;
            // The builds of this batch as they stand, in the order first seen.
            let mut folded: HashMap<&str, Slot> = HashMap::new();
            let mut order: Vec<&str> = Vec::new();
            for (seq, event) in events {
                let id = event.build_id.as_str();
                let slot = match folded.entry(id) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        order.push(id);
                        if ends.get(id).map_err(err)?.is_some() {
                            v.insert(Slot {
                                build: None,
                                waiting: None,
                                settled: true,
                            })
                        } else {
                            let stored: Option<Build> = match builds.get(id).map_err(err)? {
                                Some(v) => Some(serde_json::from_slice(v.value()).map_err(err)?),
                                None => None,
                            };
                            v.insert(Slot {
                                build: stored,
                                waiting: None,
                                settled: false,
                            })
                        }
                    }
                };
                if slot.settled {
                    continue;
                }
                let before = slot.build.take();
                let known = before.is_some();
                // An end that may have to wait for its lines keeps what the API shows until then.
                let log_lines = match &event.event {
                    BuildEvent::Finished(f) => f.log_lines,
                    _ => None,
                };
                let shown = match (&before, log_lines) {
                    (Some(b), Some(_)) if !b.status.is_final() => Some(b.clone()),
                    _ => None,
                };
                let Some(after) = model::apply(before, event) else {
                    tracing::warn!(build = id, seq, "Event for an unknown build ignored.");
                    continue;
                };
                if !known {
                    by_repo
                        .insert((after.repo.as_str(), after.number), id)
                        .map_err(err)?;
                    by_seq.insert(*seq, id).map_err(err)?;
                }
                if let (Some(shown), Some(lines)) = (shown, log_lines)
                    && after.status.is_final()
                {
                    let stored = counts
                        .get((id, after.attempt))
                        .map_err(err)?
                        .map_or(0, |v| v.value());
                    if stored < lines {
                        slot.waiting = Some((shown, after.attempt, lines, *seq));
                    }
                }
                slot.build = Some(after);
            }
            let mut json = Vec::new();
            for id in order {
                let Some(Slot {
                    build: Some(build),
                    waiting,
                    ..
                }) = folded.remove(id)
                else {
                    continue;
                };
                json.clear();
                match waiting {
                    Some((shown, attempt, log_lines, seq)) => {
                        serde_json::to_writer(&mut json, &shown).map_err(err)?;
                        builds.insert(id, json.as_slice()).map_err(err)?;
                        touched.push(build.repo.as_str().to_owned());
                        let end = WaitingEnd {
                            attempt,
                            log_lines,
                            seq,
                            build,
                        };
                        json.clear();
                        serde_json::to_writer(&mut json, &end).map_err(err)?;
                        ends.insert(id, json.as_slice()).map_err(err)?;
                    }
                    None => {
                        serde_json::to_writer(&mut json, &build).map_err(err)?;
                        builds.insert(id, json.as_slice()).map_err(err)?;
                        touched.push(build.repo.as_str().to_owned());
                    }
                }
            }
            Ok(())
        });
        // Whether or not the commit went through, no cached page may outlive it.
        self.pages.invalidate(&touched);
        result
    }

    /// Stores a batch of log lines: [`Store::apply_log_batch`] with nothing held.
    pub fn apply_logs(
        &self,
        stream: &str,
        batch: &[(u64, LogEvent)],
        flush: Flush,
    ) -> Result<(), StoreError> {
        self.apply_log_batch(stream, &Batch::events(batch), flush)
    }

    /// Stores a batch of log messages, line by line. A line of an attempt older than one whose
    /// lines came before it on the log stream is not kept: a runner presumed dead woke up after a
    /// newer attempt began (which logs its first line as it starts). The rule reads the log stream
    /// alone, so a replay, which may fold the build stream far ahead of the log stream, keeps the
    /// same lines.
    ///
    /// Each message that brought lines is recorded with its sequence (`log_messages`), so that its
    /// lines leave the read model when they leave the stream ([`Store::prune_logs`]); each
    /// attempt's lines are counted, and a build whose end waited for them is shown ended once
    /// they are all here.
    pub fn apply_log_batch(
        &self,
        stream: &str,
        batch: &Batch<'_, LogEvent>,
        flush: Flush,
    ) -> Result<(), StoreError> {
        let mut touched = Vec::new();
        let result = self.apply_batch(stream, batch, flush, |txn, events| {
            let mut logs = txn.open_table(LOGS).map_err(err)?;
            let mut attempts = txn.open_table(LOG_ATTEMPTS).map_err(err)?;
            let mut counts = txn.open_table(LOG_COUNTS).map_err(err)?;
            let mut messages = txn.open_table(LOG_MESSAGES).map_err(err)?;
            let mut owners: HashMap<&str, LogOwnership> = HashMap::new();
            let mut added: HashMap<(&str, u32), u64> = HashMap::new();
            for (seq, event) in events {
                // A message is one build's, one attempt's: a line or a run of consecutive lines.
                let Some(first) = event.lines.first() else {
                    continue;
                };
                let id = first.build_id.as_str();
                let attempt = first.attempt;
                let owner = match owners.entry(id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let newest = attempts.get(id).map_err(err)?.map_or(0, |v| v.value());
                        e.insert(LogOwnership { newest })
                    }
                };
                if !owner.keep(attempt) {
                    continue;
                }
                let mut new = 0;
                for l in &event.lines {
                    if logs
                        .insert((id, attempt, l.line), l.text.as_str())
                        .map_err(err)?
                        .is_none()
                    {
                        new += 1;
                    }
                }
                *added.entry((id, attempt)).or_default() += new;
                messages
                    .insert(*seq, (id, attempt, first.line, event.lines.len() as u64))
                    .map_err(err)?;
            }
            for (id, owner) in &owners {
                attempts.insert(*id, owner.newest).map_err(err)?;
            }
            let mut grown = HashSet::new();
            for ((id, attempt), new) in added {
                if new == 0 {
                    continue;
                }
                let count = counts
                    .get((id, attempt))
                    .map_err(err)?
                    .map_or(0, |v| v.value());
                counts.insert((id, attempt), count + new).map_err(err)?;
                grown.insert(id);
            }
            // Ends that waited for these lines.
            let mut ends = txn.open_table(ENDS).map_err(err)?;
            let mut builds = txn.open_table(BUILDS).map_err(err)?;
            for id in grown {
                let Some(end) = waiting_end(&ends, id)? else {
                    continue;
                };
                let stored = counts
                    .get((id, end.attempt))
                    .map_err(err)?
                    .map_or(0, |v| v.value());
                if stored >= end.log_lines {
                    show_end(&mut builds, &mut ends, id, &end)?;
                    touched.push(end.build.repo.as_str().to_owned());
                }
            }
            Ok(())
        });
        self.pages.invalidate(&touched);
        result
    }

    /// How many builds have an end that waits for its lines.
    pub fn ends_waiting(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(ENDS).map_err(err)?.len().map_err(err)
    }

    /// Shows the ends that waited for their lines and were stored at build stream sequence
    /// `through` or before: the log fold has reached the end the log stream had after them, so
    /// the lines still missing will not come (they expired, or were lost while NATS was out of
    /// reach). Returns how many were shown.
    pub fn release_ends(&self, through: u64) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let mut touched = Vec::new();
        {
            let mut ends = txn.open_table(ENDS).map_err(err)?;
            let mut builds = txn.open_table(BUILDS).map_err(err)?;
            let counts = txn.open_table(LOG_COUNTS).map_err(err)?;
            let mut due = Vec::new();
            for row in ends.iter().map_err(err)? {
                let row = row.map_err(err)?;
                let end: WaitingEnd = serde_json::from_slice(row.1.value()).map_err(err)?;
                if end.seq <= through {
                    due.push((row.0.value().to_owned(), end));
                }
            }
            for (id, end) in due {
                let stored = counts
                    .get((id.as_str(), end.attempt))
                    .map_err(err)?
                    .map_or(0, |v| v.value());
                tracing::warn!(
                    build = %id,
                    attempt = end.attempt,
                    lines = stored,
                    expected = end.log_lines,
                    "Build shown ended without its whole log: the log stream holds no more of its lines."
                );
                show_end(&mut builds, &mut ends, &id, &end)?;
                touched.push(end.build.repo.as_str().to_owned());
            }
        }
        let result = txn.commit().map_err(err);
        self.pages.invalidate(&touched);
        result.map(|()| touched.len() as u64)
    }

    /// The oldest log stream sequence whose lines the read model holds.
    pub fn oldest_log_message(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(LOG_MESSAGES).map_err(err)?;
        Ok(t.first().map_err(err)?.map(|(k, _)| k.value()))
    }

    /// Removes the lines of log messages below `first` (the log stream's first sequence: the
    /// messages it no longer holds), at most about `max_lines` lines in one transaction, and the
    /// unread events of the log stream below it: what a replay of the stream now would not have.
    pub fn prune_logs(
        &self,
        stream: &str,
        first: u64,
        max_lines: u64,
    ) -> Result<Pruned, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let mut pruned = Pruned::default();
        {
            let mut messages = txn.open_table(LOG_MESSAGES).map_err(err)?;
            let mut logs = txn.open_table(LOGS).map_err(err)?;
            let mut counts = txn.open_table(LOG_COUNTS).map_err(err)?;
            let mut due = Vec::new();
            let mut lines = 0;
            for row in messages.range(..first).map_err(err)? {
                if lines >= max_lines {
                    pruned.more = true;
                    break;
                }
                let row = row.map_err(err)?;
                let (id, attempt, from, n) = row.1.value();
                lines += n;
                due.push((row.0.value(), id.to_owned(), attempt, from, n));
            }
            for (seq, id, attempt, from, n) in due {
                let mut removed = 0;
                for line in from..from.saturating_add(n) {
                    if logs
                        .remove((id.as_str(), attempt, line))
                        .map_err(err)?
                        .is_some()
                    {
                        removed += 1;
                    }
                }
                let key = (id.as_str(), attempt);
                let count = counts.get(key).map_err(err)?.map_or(0, |v| v.value());
                match count.saturating_sub(removed) {
                    0 => counts.remove(key).map(drop),
                    left => counts.insert(key, left).map(drop),
                }
                .map_err(err)?;
                messages.remove(seq).map_err(err)?;
                pruned.messages += 1;
                pruned.lines += removed;
            }
            let mut held = txn.open_table(HELD).map_err(err)?;
            let gone: Vec<u64> = held
                .range((stream, 0)..(stream, first))
                .map_err(err)?
                .map(|r| r.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()
                .map_err(err)?;
            for seq in gone {
                held.remove((stream, seq)).map_err(err)?;
            }
        }
        txn.commit().map_err(err)?;
        Ok(pruned)
    }

    /// The events kept unread: (stream, sequence, `<type> v<version>`), in stream order.
    pub fn held(&self) -> Result<Vec<Held>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(HELD).map_err(err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err)? {
            let row = row.map_err(err)?;
            let (stream, seq) = row.0.value();
            out.push((stream.to_owned(), seq, row.1.value().to_owned()));
        }
        Ok(out)
    }

    /// How many events are kept unread, and the first of them.
    pub fn held_summary(&self) -> Result<(u64, Option<Held>), StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(HELD).map_err(err)?;
        let first = t.first().map_err(err)?.map(|(k, v)| {
            let (stream, seq) = k.value();
            (stream.to_owned(), seq, v.value().to_owned())
        });
        Ok((t.len().map_err(err)?, first))
    }

    /// Forgets an event kept unread (it left the stream).
    pub fn forget_held(&self, stream: &str, seq: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        txn.open_table(HELD)
            .map_err(err)?
            .remove((stream, seq))
            .map_err(err)?;
        txn.commit().map_err(err)
    }

    pub fn build(&self, id: &str) -> Result<Option<Build>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(BUILDS).map_err(err)?;
        match t.get(id).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// What a reader needs of build `id`, from a document of any fold version.
    pub fn build_head(&self, id: &str) -> Result<Option<BuildHead>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(BUILDS).map_err(err)?;
        match t.get(id).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// A build's stored JSON document, exactly as `build` would encode it again.
    pub fn build_json(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(BUILDS).map_err(err)?;
        Ok(t.get(id).map_err(err)?.map(|v| v.value().to_vec()))
    }

    /// The first page of `repo`'s builds (all repositories when `None`), [`DEFAULT_PAGE`] of
    /// them, as [`list_json`](Self::list_json) gives it, from the cache when no batch changed
    /// one of its builds since it was last read.
    pub fn first_page_json(&self, repo: Option<&str>) -> Result<Bytes, StoreError> {
        self.first_page(repo, &Visible::All)
    }

    /// The first page of the builds `visible` shows, cached for every build ([`Visible::All`])
    /// and for public builds only ([`Visible::Public`]).
    pub fn first_page(&self, repo: Option<&str>, visible: &Visible) -> Result<Bytes, StoreError> {
        let public = match visible {
            Visible::All => false,
            Visible::Public => true,
            Visible::PublicAnd(_) => {
                return self
                    .list_visible(repo, DEFAULT_PAGE, visible)
                    .map(Bytes::from);
            }
        };
        let read_at = match self.pages.get(repo, public) {
            Ok(page) => return Ok(page),
            Err(generation) => generation,
        };
        let page = Bytes::from(self.list_visible(repo, DEFAULT_PAGE, visible)?);
        self.pages.put(repo, public, read_at, page.clone());
        Ok(page)
    }

    /// The cached first page, if there is one: no read of the file.
    pub fn cached_first_page(&self, repo: Option<&str>) -> Option<Bytes> {
        self.pages.get(repo, false).ok()
    }

    /// The cached first page of public builds, if there is one.
    pub fn cached_public_page(&self, repo: Option<&str>) -> Option<Bytes> {
        self.pages.get(repo, true).ok()
    }

    /// The builds of `repo` (all repositories when `None`) that `visible` shows, newest first, as
    /// one JSON array of the stored documents. A build is looked at for its visibility only; at
    /// most [`MAX_SCANNED`] are looked at past the page, so that a page of public builds among
    /// many private ones stays bounded.
    pub fn list_visible(
        &self,
        repo: Option<&str>,
        limit: usize,
        visible: &Visible,
    ) -> Result<Vec<u8>, StoreError> {
        if matches!(visible, Visible::All) {
            return self.list_json(repo, limit);
        }
        let txn = self.db.begin_read().map_err(err)?;
        let builds = txn.open_table(BUILDS).map_err(err)?;
        let mut out = Vec::with_capacity(limit.min(100) * 640 + 2);
        out.push(b'[');
        let mut kept = 0;
        let mut keep = |id: &str| -> Result<bool, StoreError> {
            let Some(v) = builds.get(id).map_err(err)? else {
                return Ok(true);
            };
            if visible.shows(v.value()) {
                if out.len() > 1 {
                    out.push(b',');
                }
                out.extend_from_slice(v.value());
                kept += 1;
            }
            Ok(kept < limit)
        };
        let scan = limit.saturating_add(MAX_SCANNED);
        match repo {
            Some(repo) => {
                let t = txn.open_table(BY_REPO).map_err(err)?;
                for row in t
                    .range((repo, 0)..=(repo, u64::MAX))
                    .map_err(err)?
                    .rev()
                    .take(scan)
                {
                    if !keep(row.map_err(err)?.1.value())? {
                        break;
                    }
                }
            }
            None => {
                let t = txn.open_table(BY_SEQ).map_err(err)?;
                for row in t.iter().map_err(err)?.rev().take(scan) {
                    if !keep(row.map_err(err)?.1.value())? {
                        break;
                    }
                }
            }
        }
        out.push(b']');
        Ok(out)
    }

    /// The builds of `repo` numbered below `before` (all, when `None`), newest first, at most
    /// `limit`.
    pub fn builds_of(
        &self,
        repo: &RepoName,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Build>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let builds = txn.open_table(BUILDS).map_err(err)?;
        let by_repo = txn.open_table(BY_REPO).map_err(err)?;
        let end = before.map_or(u64::MAX, |b| b.saturating_sub(1));
        let mut out = Vec::new();
        for row in by_repo
            .range((repo.as_str(), 0)..=(repo.as_str(), end))
            .map_err(err)?
            .rev()
            .take(limit)
        {
            let row = row.map_err(err)?;
            if let Some(v) = builds.get(row.1.value()).map_err(err)? {
                out.push(serde_json::from_slice(v.value()).map_err(err)?);
            }
        }
        Ok(out)
    }

    /// The newest build of `repo`.
    pub fn last_build(&self, repo: &RepoName) -> Result<Option<Build>, StoreError> {
        Ok(self.builds_of(repo, None, 1)?.into_iter().next())
    }

    /// Build `number` of `repo`.
    pub fn build_by_number(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<Option<Build>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let by_repo = txn.open_table(BY_REPO).map_err(err)?;
        let Some(id) = by_repo
            .get((repo.as_str(), number))
            .map_err(err)?
            .map(|v| v.value().to_owned())
        else {
            return Ok(None);
        };
        drop(by_repo);
        drop(txn);
        self.build(&id)
    }

    /// The newest build of each repository, the repositories with the newest builds first, at
    /// most `limit` of them (looking through at most [`MAX_SCANNED`] builds).
    pub fn recent_repos(&self, limit: usize) -> Result<Vec<Build>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let builds = txn.open_table(BUILDS).map_err(err)?;
        let by_seq = txn.open_table(BY_SEQ).map_err(err)?;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for row in by_seq.iter().map_err(err)?.rev().take(MAX_SCANNED) {
            let row = row.map_err(err)?;
            let Some(v) = builds.get(row.1.value()).map_err(err)? else {
                continue;
            };
            let b: Build = serde_json::from_slice(v.value()).map_err(err)?;
            if seen.insert(b.repo.clone()) {
                out.push(b);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The builds of `repo` (all repositories when `None`), newest first, as one JSON array made
    /// of the stored documents as they are: a page costs no decoding and no encoding.
    pub fn list_json(&self, repo: Option<&str>, limit: usize) -> Result<Vec<u8>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let builds = txn.open_table(BUILDS).map_err(err)?;
        let mut ids = Vec::new();
        match repo {
            Some(repo) => {
                let t = txn.open_table(BY_REPO).map_err(err)?;
                for row in t
                    .range((repo, 0)..=(repo, u64::MAX))
                    .map_err(err)?
                    .rev()
                    .take(limit)
                {
                    ids.push(row.map_err(err)?.1.value().to_owned());
                }
            }
            None => {
                let t = txn.open_table(BY_SEQ).map_err(err)?;
                for row in t.iter().map_err(err)?.rev().take(limit) {
                    ids.push(row.map_err(err)?.1.value().to_owned());
                }
            }
        }
        let mut out = Vec::with_capacity(ids.len() * 640 + 2);
        out.push(b'[');
        for id in ids {
            if let Some(v) = builds.get(id.as_str()).map_err(err)? {
                if out.len() > 1 {
                    out.push(b',');
                }
                out.extend_from_slice(v.value());
            }
        }
        out.push(b']');
        Ok(out)
    }

    /// The whole log of a build so far, every attempt in order, one line each, in memory: for
    /// tests and tools; the API streams it in pages ([`Store::log_page`]).
    pub fn log(&self, id: &str) -> Result<String, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(LOGS).map_err(err)?;
        let mut out = String::new();
        for row in t
            .range((id, 0, 0)..=(id, u32::MAX, u64::MAX))
            .map_err(err)?
        {
            out.push_str(row.map_err(err)?.1.value());
            out.push('\n');
        }
        Ok(out)
    }

    /// Every build's id and stored document, in id order: for tools that compare read models.
    pub fn builds_json(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(BUILDS).map_err(err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err)? {
            let row = row.map_err(err)?;
            out.push((row.0.value().to_owned(), row.1.value().to_vec()));
        }
        Ok(out)
    }

    /// At most `limit` log lines of a build after `(attempt, line)`, in order, with their position.
    pub fn log_after(
        &self,
        id: &str,
        after: LogPosition,
        limit: usize,
    ) -> Result<Vec<(LogPosition, String)>, StoreError> {
        let Some(from) = next_position(after) else {
            return Ok(Vec::new());
        };
        self.log_page(id, from, (u32::MAX, u64::MAX), limit, usize::MAX)
    }

    /// The lines of a build from `from` to `until` (both included), in order, with their
    /// position: at most `max_lines`, and no more once `max_bytes` of text are reached (a page
    /// holds at least one line). One read transaction; what a caller holds is bounded by the
    /// limits, whatever the log's size.
    pub fn log_page(
        &self,
        id: &str,
        from: LogPosition,
        until: LogPosition,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<Vec<(LogPosition, String)>, StoreError> {
        let mut out = Vec::new();
        self.log_page_with(id, from, until, max_lines, max_bytes, |pos, text| {
            out.push((pos, text.to_owned()));
        })?;
        Ok(out)
    }

    /// [`Store::log_page`], handing each line to `line` as it is read (no copy of it is made
    /// here). Returns the position of the last line handed on.
    pub fn log_page_with(
        &self,
        id: &str,
        from: LogPosition,
        until: LogPosition,
        max_lines: usize,
        max_bytes: usize,
        mut line: impl FnMut(LogPosition, &str),
    ) -> Result<Option<LogPosition>, StoreError> {
        if from > until {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(LOGS).map_err(err)?;
        let (mut lines, mut bytes, mut last) = (0, 0, None);
        for row in t
            .range((id, from.0, from.1)..=(id, until.0, until.1))
            .map_err(err)?
        {
            if lines >= max_lines || bytes >= max_bytes {
                break;
            }
            let row = row.map_err(err)?;
            let (_, a, l) = row.0.value();
            let text = row.1.value();
            bytes += text.len() + 1;
            lines += 1;
            line((a, l), text);
            last = Some((a, l));
        }
        Ok(last)
    }

    /// The position of a build's last stored line, of any attempt.
    pub fn log_last(&self, id: &str) -> Result<Option<LogPosition>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(LOGS).map_err(err)?;
        let last = t
            .range((id, 0, 0)..=(id, u32::MAX, u64::MAX))
            .map_err(err)?
            .next_back()
            .transpose()
            .map_err(err)?;
        Ok(last.map(|(k, _)| {
            let (_, a, l) = k.value();
            (a, l)
        }))
    }

    /// The number of the last stored line of an attempt.
    pub fn log_last_line(&self, id: &str, attempt: u32) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(LOGS).map_err(err)?;
        let last = t
            .range((id, attempt, 0)..=(id, attempt, u64::MAX))
            .map_err(err)?
            .next_back()
            .transpose()
            .map_err(err)?;
        Ok(last.map(|(k, _)| k.value().2))
    }

    /// How many lines of an attempt are stored. A file of another fold version (served while its
    /// replacement is rebuilt) has no counts, and its lines are counted one by one.
    pub fn log_count(&self, id: &str, attempt: u32) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        if self.version == Some(FOLD_VERSION) {
            let t = txn.open_table(LOG_COUNTS).map_err(err)?;
            return Ok(t.get((id, attempt)).map_err(err)?.map_or(0, |v| v.value()));
        }
        let t = txn.open_table(LOGS).map_err(err)?;
        let mut n = 0;
        for row in t
            .range((id, attempt, 0)..=(id, attempt, u64::MAX))
            .map_err(err)?
        {
            row.map_err(err)?;
            n += 1;
        }
        Ok(n)
    }

    /// Every table the fold writes as text, in key order (the checkpoints aside): two stores with
    /// equal dumps answer every query alike.
    pub fn dump(&self) -> Result<String, StoreError> {
        use std::fmt::Write as _;
        let txn = self.db.begin_read().map_err(err)?;
        let mut out = String::new();
        // Writing to a String cannot fail.
        for row in txn.open_table(META).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            writeln!(out, "meta {} {}", row.0.value(), row.1.value()).ok();
        }
        for row in txn.open_table(BUILDS).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            writeln!(
                out,
                "build {} {}",
                row.0.value(),
                String::from_utf8_lossy(row.1.value())
            )
            .ok();
        }
        for row in txn.open_table(BY_REPO).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            let (repo, n) = row.0.value();
            writeln!(out, "repo {repo} {n} {}", row.1.value()).ok();
        }
        for row in txn.open_table(ENDS).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            writeln!(
                out,
                "end {} {}",
                row.0.value(),
                String::from_utf8_lossy(row.1.value())
            )
            .ok();
        }
        for row in txn.open_table(HELD).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            let (stream, seq) = row.0.value();
            writeln!(out, "held {stream} {seq} {}", row.1.value()).ok();
        }
        for row in txn
            .open_table(LOG_COUNTS)
            .map_err(err)?
            .iter()
            .map_err(err)?
        {
            let row = row.map_err(err)?;
            let (id, a) = row.0.value();
            writeln!(out, "count {id} {a} {}", row.1.value()).ok();
        }
        for row in txn
            .open_table(LOG_MESSAGES)
            .map_err(err)?
            .iter()
            .map_err(err)?
        {
            let row = row.map_err(err)?;
            let (id, a, first, n) = row.1.value();
            writeln!(out, "message {} {id} {a} {first} {n}", row.0.value()).ok();
        }
        for row in txn.open_table(LOGS).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            let (id, a, l) = row.0.value();
            writeln!(out, "log {id} {a} {l} {}", row.1.value()).ok();
        }
        Ok(out)
    }
}

/// The position right after `p`, `None` past the last one.
pub fn next_position(p: LogPosition) -> Option<LogPosition> {
    match p.1.checked_add(1) {
        Some(l) => Some((p.0, l)),
        None => p.0.checked_add(1).map(|a| (a, 0)),
    }
}

/// The end of build `id` that waits for its lines, if any.
fn waiting_end(
    ends: &redb::Table<'_, &'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<WaitingEnd>, StoreError> {
    match ends.get(id).map_err(err)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(err)?)),
        None => Ok(None),
    }
}

/// Shows a waiting end: the folded build becomes what the API serves.
fn show_end(
    builds: &mut redb::Table<'_, &'static str, &'static [u8]>,
    ends: &mut redb::Table<'_, &'static str, &'static [u8]>,
    id: &str,
    end: &WaitingEnd,
) -> Result<(), StoreError> {
    let json = serde_json::to_vec(&end.build).map_err(err)?;
    builds.insert(id, json.as_slice()).map_err(err)?;
    ends.remove(id).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_schemas::events::{BuildEvent, Queued};
    use hermes_schemas::ids::CommitSha;
    use hermes_schemas::{BuildId, RepoName, TriggerEvent};

    #[test]
    fn a_page_is_the_stored_builds_newest_first() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("m.redb")).expect("open");
        let events: Vec<(u64, Envelope)> = (1..=3).map(|n| (n, queued(n, "o/r"))).collect();
        store.apply_builds("S", &events, Flush::Now).expect("apply");
        let page = |r: Option<&str>| -> Vec<Build> {
            serde_json::from_slice(&store.list_json(r, 2).expect("raw")).expect("a JSON array")
        };
        let numbers = |bs: Vec<Build>| bs.iter().map(|b| b.number).collect::<Vec<_>>();
        assert_eq!(numbers(page(Some("o/r"))), [3, 2], "newest first, limited");
        assert_eq!(numbers(page(None)), [3, 2]);
        assert!(page(Some("o/none")).is_empty());
        assert_eq!(
            page(Some("o/r"))[0],
            store.build("b3").expect("read").expect("known")
        );
        std::fs::remove_dir_all(dir).ok();
    }

    fn envelope(n: u64, repo: &str, attempt: u32, event: BuildEvent) -> Envelope {
        Envelope::new(
            BuildId::parse(&format!("b{n}")).expect("id"),
            RepoName::parse(repo).expect("repo"),
            attempt,
            time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(attempt.into()),
            event,
        )
    }

    fn queued(n: u64, repo: &str) -> Envelope {
        envelope(
            n,
            repo,
            0,
            BuildEvent::Queued(Queued::minimal(
                n,
                TriggerEvent::Push,
                "refs/heads/main",
                CommitSha::parse(&"a".repeat(40)).expect("sha"),
                "file:///r",
            )),
        )
    }

    /// Builds in two repositories through queued, a lost attempt, a second attempt and its end,
    /// with repeats and an event of an unknown build.
    fn history() -> Vec<(u64, Envelope)> {
        use hermes_schemas::BuildStatus;
        use hermes_schemas::events::{Finished, Started};
        let started = |n, repo, a: u32| {
            envelope(
                n,
                repo,
                a,
                BuildEvent::Started(Started {
                    runner: format!("r{a}"),
                }),
            )
        };
        let finished = |n, repo, a| {
            envelope(
                n,
                repo,
                a,
                BuildEvent::Finished(Finished::with_status(BuildStatus::Succeeded)),
            )
        };
        let events = vec![
            started(9, "o/a", 1),
            queued(1, "o/a"),
            queued(2, "o/b"),
            started(1, "o/a", 1),
            queued(3, "o/a"),
            queued(1, "o/a"),
            started(2, "o/b", 1),
            started(1, "o/a", 2),
            finished(1, "o/a", 1),
            finished(2, "o/b", 1),
            finished(1, "o/a", 2),
            started(3, "o/a", 1),
            finished(1, "o/a", 2),
        ];
        (1..).zip(events).collect()
    }

    #[test]
    fn a_batch_folds_to_what_its_events_fold_to_one_at_a_time() {
        let dir = tempfile_dir();
        let events = history();
        let whole = Store::open(&dir.join("whole.redb")).expect("open");
        whole.apply_builds("S", &events, Flush::Now).expect("apply");
        let single = Store::open(&dir.join("single.redb")).expect("open");
        for e in &events {
            single
                .apply_builds("S", std::slice::from_ref(e), Flush::Now)
                .expect("apply");
        }
        let split = Store::open(&dir.join("split.redb")).expect("open");
        let (a, b) = events.split_at(5);
        split.apply_builds("S", a, Flush::Now).expect("apply");
        // Applied again and overlapping: the checkpoint skips what is stored.
        split
            .apply_builds("S", &events[2..], Flush::Now)
            .expect("apply");
        split.apply_builds("S", b, Flush::Now).expect("apply");
        let dump = whole.dump().expect("dump");
        assert!(dump.contains("build b1 "), "{dump}");
        assert!(
            !dump.contains("build b9 "),
            "an unknown build stays unknown: {dump}"
        );
        assert_eq!(dump, single.dump().expect("dump"));
        assert_eq!(dump, split.dump().expect("dump"));
        let b1 = whole.build("b1").expect("read").expect("known");
        assert_eq!((b1.attempt, b1.attempts.len()), (2, 2));
        assert_eq!(whole.checkpoint("S").expect("ckpt"), events.len() as u64);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_cached_first_page_follows_every_committed_batch() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("pages.redb")).expect("open");
        let events = history();
        let fresh = |s: &Store, repo: Option<&str>| s.list_json(repo, DEFAULT_PAGE).expect("list");
        for (i, e) in events.iter().enumerate() {
            // Read (and cache) the pages before each batch, then check them after it.
            for repo in [Some("o/a"), Some("o/b"), Some("o/none"), None] {
                store.first_page_json(repo).expect("page");
            }
            store
                .apply_builds("S", std::slice::from_ref(e), Flush::Now)
                .expect("apply");
            for repo in [Some("o/a"), Some("o/b"), Some("o/none"), None] {
                let page = store.first_page_json(repo).expect("page");
                assert_eq!(
                    page.as_ref(),
                    fresh(&store, repo).as_slice(),
                    "{repo:?} after event {i}"
                );
                assert_eq!(store.cached_first_page(repo), Some(page));
            }
        }
        let page: Vec<Build> =
            serde_json::from_slice(&store.first_page_json(Some("o/a")).expect("page"))
                .expect("a JSON array");
        assert_eq!(page.iter().map(|b| b.number).collect::<Vec<_>>(), [3, 1]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn log_messages_of_either_shape_are_stored_line_by_line() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("logs.redb")).expect("open");
        store
            .apply_builds("B", &history()[..8], Flush::Now)
            .expect("apply");
        let event = |json: serde_json::Value| -> LogEvent {
            serde_json::from_value(json).expect("a log event")
        };
        let t = "2026-01-01T00:00:00Z";
        let entry = |text: &str| serde_json::json!({"time": t, "stream": "stdout", "text": text});
        let batch = [
            // Attempt 1's line, before attempt 2 began: kept.
            event(
                serde_json::json!({"type": "log.line", "version": 1, "time": t,
                "build_id": "b1", "repo": "o/a", "attempt": 1, "line": 1,
                "stream": "stdout", "text": "first try"}),
            ),
            event(
                serde_json::json!({"type": "log.line", "version": 1, "time": t,
                "build_id": "b1", "repo": "o/a", "attempt": 2, "line": 1,
                "stream": "stdout", "text": "one"}),
            ),
            // Attempt 1's runner woke up after attempt 2 began: not kept.
            event(
                serde_json::json!({"type": "log.line", "version": 1, "time": t,
                "build_id": "b1", "repo": "o/a", "attempt": 1, "line": 2,
                "stream": "stdout", "text": "late"}),
            ),
            event(serde_json::json!({"type": "log.lines", "version": 1,
                "build_id": "b1", "repo": "o/a", "attempt": 2, "first_line": 2,
                "lines": [entry("two"), entry("three")]})),
        ];
        let batch: Vec<(u64, LogEvent)> = (1..).zip(batch).collect();
        // In two commits, so that the newest attempt is read back from the file too.
        store
            .apply_logs("L", &batch[..2], Flush::Now)
            .expect("apply");
        store
            .apply_logs("L", &batch[2..], Flush::Now)
            .expect("apply");
        assert_eq!(
            store.log("b1").expect("log"),
            "first try\none\ntwo\nthree\n"
        );
        assert_eq!(
            store.log_after("b1", (2, 1), 100).expect("log")[1],
            ((2, 3), "three".to_owned())
        );
        assert_eq!(store.checkpoint("L").expect("ckpt"), 4);
        // Which lines are kept does not depend on how far the build stream was folded: a replay
        // folds it far ahead of the log stream, the live projector alongside.
        let replayed = Store::open(&dir.join("replayed.redb")).expect("open");
        replayed.apply_logs("L", &batch, Flush::Now).expect("apply");
        replayed
            .apply_builds("B", &history()[..8], Flush::Now)
            .expect("apply");
        assert_eq!(replayed.dump().expect("dump"), store.dump().expect("dump"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn an_unflushed_commit_is_read_at_once_and_a_crash_undoes_it_with_its_checkpoint() {
        let dir = tempfile_dir();
        let path = dir.join("flush.redb");
        let store = Store::open(&path).expect("open");
        let events = history();
        store
            .apply_builds("B", &events[..2], Flush::Now)
            .expect("apply");
        let durable = store.dump().expect("dump");
        store
            .apply_builds("B", &events[2..], Flush::Later)
            .expect("apply");
        let last = events.last().expect("events").0;
        assert_eq!(store.checkpoint("B").expect("ckpt"), last);
        let folded = store.dump().expect("dump");
        assert_ne!(folded, durable);
        // The file as a crash of the process would leave it, opened as the next start would.
        let crash = |name: &str| {
            std::fs::copy(&path, dir.join(name)).expect("copy");
            Store::open(&dir.join(name)).expect("open the copy")
        };
        let crashed = crash("crashed.redb");
        assert_eq!(crashed.checkpoint("B").expect("ckpt"), events[1].0);
        assert_eq!(crashed.dump().expect("dump"), durable);
        store.flush().expect("flush");
        let after_flush = crash("flushed.redb");
        assert_eq!(after_flush.checkpoint("B").expect("ckpt"), last);
        assert_eq!(after_flush.dump().expect("dump"), folded);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_page_read_before_a_commit_is_not_cached_after_it() {
        let pages = Pages::default();
        for public in [false, true] {
            let read_at = pages.get(Some("o/a"), public).expect_err("empty");
            // A batch commits while the page is being read from the older snapshot.
            pages.invalidate(&["o/a".to_owned()]);
            pages.put(Some("o/a"), public, read_at, Bytes::from_static(b"[old]"));
            assert!(
                pages.get(Some("o/a"), public).is_err(),
                "the stale page was cached"
            );
            let read_at = pages.get(None, public).expect_err("empty");
            pages.put(None, public, read_at, Bytes::from_static(b"[new]"));
            assert_eq!(pages.get(None, public), Ok(Bytes::from_static(b"[new]")));
        }
        // The page of every build is not the page of public builds.
        assert_eq!(pages.get(Some("o/b"), true), pages.get(Some("o/b"), false));
        let read_at = pages.get(Some("o/b"), false).expect_err("empty");
        pages.put(Some("o/b"), false, read_at, Bytes::from_static(b"[all]"));
        assert!(pages.get(Some("o/b"), true).is_err());
        // A commit that touches o/b drops its pages, and the pages of all repositories.
        pages.invalidate(&["o/b".to_owned()]);
        assert!(pages.get(Some("o/b"), false).is_err());
        assert!(pages.get(None, true).is_err());
    }

    #[test]
    fn the_page_cache_is_bounded_and_keeps_the_page_of_all_repositories() {
        let pages = Pages::default();
        let page = Bytes::from_static(b"[]");
        let at = pages.get(None, false).expect_err("empty");
        pages.put(None, false, at, page.clone());
        for i in 0..MAX_CACHED_PAGES {
            for public in [false, true] {
                pages.put(Some(&format!("o/r{i}")), public, at, page.clone());
            }
        }
        let held = (0..MAX_CACHED_PAGES)
            .flat_map(|i| [false, true].map(|p| (i, p)))
            .filter(|(i, p)| pages.get(Some(&format!("o/r{i}")), *p).is_ok())
            .count();
        assert!(held <= MAX_CACHED_PAGES, "{held} pages held");
        assert!(held >= MAX_CACHED_PAGES - 2, "only {held} pages held");
        assert_eq!(
            pages.get(Some(&format!("o/r{}", MAX_CACHED_PAGES - 1)), true),
            Ok(page.clone())
        );
        assert_eq!(pages.get(None, false), Ok(page));
    }

    #[test]
    fn a_list_shows_private_builds_only_to_those_who_may_read_them() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("m.redb")).expect("open");
        let mut private = queued(2, "o/secret");
        if let BuildEvent::Queued(q) = &mut private.event {
            q.private = true;
        }
        let events = vec![
            (1, queued(1, "o/public")),
            (2, private),
            (3, queued(3, "o/public")),
        ];
        store.apply_builds("S", &events, Flush::Now).expect("apply");
        let numbers = |visible: &Visible, repo: Option<&str>| -> Vec<u64> {
            let page: Vec<Build> =
                serde_json::from_slice(&store.list_visible(repo, 10, visible).expect("list"))
                    .expect("a JSON array");
            page.iter().map(|b| b.number).collect()
        };
        assert_eq!(numbers(&Visible::All, None), [3, 2, 1]);
        assert_eq!(numbers(&Visible::Public, None), [3, 1]);
        assert!(numbers(&Visible::Public, Some("o/secret")).is_empty());
        let readers = Visible::PublicAnd(std::sync::Arc::new(
            ["o/secret".to_owned()].into_iter().collect(),
        ));
        assert_eq!(numbers(&readers, None), [3, 2, 1]);
        let json = store.build_json("b2").expect("read").expect("stored");
        assert!(!Visible::Public.shows(&json));
        assert!(readers.shows(&json));
        // The cached first pages are kept apart.
        let all = store.first_page(None, &Visible::All).expect("page");
        let public = store.first_page(None, &Visible::Public).expect("page");
        assert_ne!(all, public);
        assert_eq!(store.cached_public_page(None), Some(public));
        std::fs::remove_dir_all(dir).ok();
    }

    /// Lines `from..from + n` of build `b1`'s `attempt`, as one `log.lines` message.
    fn lines(attempt: u32, from: u64, n: u64) -> LogEvent {
        let entries: Vec<_> = (from..from + n)
            .map(|l| serde_json::json!({"time": "2026-01-01T00:00:00Z", "stream": "stdout", "text": format!("line {attempt}.{l}")}))
            .collect();
        serde_json::from_value(serde_json::json!({"type": "log.lines", "version": 1,
            "build_id": "b1", "repo": "o/a", "attempt": attempt, "first_line": from, "lines": entries}))
        .expect("a log event")
    }

    fn finished_with_lines(attempt: u32, log_lines: u64) -> Envelope {
        let mut end = hermes_schemas::events::Finished::with_status(BuildStatus::Succeeded);
        end.log_lines = Some(log_lines);
        envelope(1, "o/a", attempt, BuildEvent::Finished(end))
    }

    fn started(attempt: u32) -> Envelope {
        envelope(
            1,
            "o/a",
            attempt,
            BuildEvent::Started(hermes_schemas::events::Started { runner: "r".into() }),
        )
    }

    /// Issue 16: the read model showed `succeeded` while the log held part of the lines (a
    /// replay folds the build stream far ahead of the log stream). Failed before the end waited.
    #[test]
    fn an_end_is_shown_only_once_the_lines_it_counts_are_folded() {
        let dir = tempfile_dir();
        let builds = [
            (1, queued(1, "o/a")),
            (2, started(1)),
            (3, finished_with_lines(1, 5)),
        ];
        let logs = [(1, lines(1, 1, 2)), (2, lines(1, 3, 3))];
        // As a replay folds: the build stream first.
        let replay = Store::open(&dir.join("replay.redb")).expect("open");
        replay
            .apply_builds("B", &builds, Flush::Now)
            .expect("apply");
        let status = |s: &Store| s.build_head("b1").expect("read").expect("known").status;
        assert_eq!(
            status(&replay),
            BuildStatus::Running,
            "the end waits for its lines"
        );
        assert_eq!(replay.ends_waiting().expect("ends"), 1);
        replay
            .apply_logs("L", &logs[..1], Flush::Now)
            .expect("apply");
        assert_eq!(status(&replay), BuildStatus::Running, "2 of 5 lines");
        replay
            .apply_logs("L", &logs[1..], Flush::Now)
            .expect("apply");
        assert_eq!(status(&replay), BuildStatus::Succeeded);
        assert_eq!(replay.log_count("b1", 1).expect("count"), 5);
        assert_eq!(replay.ends_waiting().expect("ends"), 0);
        // Live: the lines come first; the end is shown at once. Both read models are the same.
        let live = Store::open(&dir.join("live.redb")).expect("open");
        live.apply_builds("B", &builds[..2], Flush::Now)
            .expect("apply");
        live.apply_logs("L", &logs, Flush::Now).expect("apply");
        live.apply_builds("B", &builds[2..], Flush::Now)
            .expect("apply");
        assert_eq!(status(&live), BuildStatus::Succeeded);
        assert_eq!(live.dump().expect("dump"), replay.dump().expect("dump"));
        // Lines that never come: the end is shown once the log fold reached the log stream's end.
        let lost = Store::open(&dir.join("lost.redb")).expect("open");
        lost.apply_builds("B", &builds, Flush::Now).expect("apply");
        lost.apply_logs("L", &logs[..1], Flush::Now).expect("apply");
        assert_eq!(
            lost.release_ends(2).expect("release"),
            0,
            "an end folded later"
        );
        assert_eq!(status(&lost), BuildStatus::Running);
        assert_eq!(lost.release_ends(3).expect("release"), 1);
        assert_eq!(status(&lost), BuildStatus::Succeeded);
        let shown = lost.build("b1").expect("read").expect("known");
        assert_eq!(shown, replay.build("b1").expect("read").expect("known"));
        std::fs::remove_dir_all(dir).ok();
    }

    /// Issue 19: the read model kept log lines for ever while the log stream expires them, so a
    /// replay no longer gave the same answers. Failed before the lines of expired messages were
    /// removed.
    #[test]
    fn the_lines_of_messages_the_stream_no_longer_holds_are_removed() {
        let dir = tempfile_dir();
        let logs: Vec<(u64, LogEvent)> = vec![
            (1, lines(1, 1, 3)),
            (2, lines(1, 4, 2)),
            (3, lines(2, 1, 2)),
            (4, lines(2, 3, 1)),
        ];
        let live = Store::open(&dir.join("live.redb")).expect("open");
        live.apply_builds("B", &history()[..8], Flush::Now)
            .expect("apply");
        live.apply_logs("L", &logs, Flush::Now).expect("apply");
        assert_eq!(live.oldest_log_message().expect("oldest"), Some(1));
        // The stream now starts at sequence 3: messages 1 and 2 expired.
        let pruned = live.prune_logs("L", 3, 3).expect("prune");
        assert_eq!(
            pruned,
            Pruned {
                messages: 1,
                lines: 3,
                more: true
            }
        );
        let pruned = live.prune_logs("L", 3, 3).expect("prune");
        assert_eq!((pruned.messages, pruned.lines, pruned.more), (1, 2, false));
        assert_eq!(live.log_count("b1", 1).expect("count"), 0);
        assert_eq!(live.log_count("b1", 2).expect("count"), 3);
        assert_eq!(
            live.log("b1").expect("log"),
            "line 2.1\nline 2.2\nline 2.3\n"
        );
        // A replay of what the stream holds now.
        let replay = Store::open(&dir.join("replay.redb")).expect("open");
        replay
            .apply_builds("B", &history()[..8], Flush::Now)
            .expect("apply");
        replay
            .apply_logs("L", &logs[2..], Flush::Now)
            .expect("apply");
        assert_eq!(live.dump().expect("dump"), replay.dump().expect("dump"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn events_kept_unread_are_stored_with_the_checkpoint_and_the_fold_goes_on() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("held.redb")).expect("open");
        let events = [(1, queued(1, "o/a")), (3, started(1))];
        let held = [(2, "build.paused v1".to_owned())];
        store
            .apply_build_batch(
                "B",
                &Batch {
                    events: &events,
                    held: &held,
                    through: 4,
                },
                Flush::Now,
            )
            .expect("apply");
        assert_eq!(store.checkpoint("B").expect("ckpt"), 4);
        assert_eq!(
            store.held().expect("held"),
            [("B".to_owned(), 2, "build.paused v1".to_owned())]
        );
        assert_eq!(
            store.build_head("b1").expect("read").expect("known").status,
            BuildStatus::Running
        );
        store.forget_held("B", 2).expect("forget");
        assert_eq!(store.held_summary().expect("held"), (0, None));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_new_file_has_this_fold_version_and_an_older_file_asks_for_a_rebuild() {
        let dir = tempfile_dir();
        let path = dir.join("v.redb");
        let store = Store::open(&path).expect("open");
        assert_eq!(store.fold_version(), Some(FOLD_VERSION));
        assert_eq!(store.rebuild_reason(), None);
        store
            .apply_builds("B", &history()[..3], Flush::Now)
            .expect("apply");
        store.stamp_fold_version(None).expect("stamp");
        drop(store);
        let old = Store::open(&path).expect("open");
        assert_eq!(
            old.fold_version(),
            None,
            "a file with content is not stamped"
        );
        assert!(
            old.rebuild_reason()
                .expect("a reason")
                .contains("no fold version")
        );
        old.stamp_fold_version(Some(1)).expect("stamp");
        drop(old);
        let old = Store::open(&path).expect("open");
        assert!(
            old.rebuild_reason()
                .expect("a reason")
                .contains("fold version 1")
        );
        // Its lines are counted one by one (an older fold kept no counts).
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_log_page_is_bounded_by_lines_and_bytes_whatever_the_log() {
        let dir = tempfile_dir();
        let store = Store::open(&dir.join("pages.redb")).expect("open");
        let batch: Vec<(u64, LogEvent)> = (0..20)
            .map(|i| (i + 1, lines(1, i * 500 + 1, 500)))
            .collect();
        store.apply_logs("L", &batch, Flush::Now).expect("apply");
        let all = (u32::MAX, u64::MAX);
        let page = store
            .log_page("b1", (0, 0), all, 1000, usize::MAX)
            .expect("page");
        assert_eq!(page.len(), 1000);
        let page = store.log_page("b1", (1, 10), all, 1000, 100).expect("page");
        assert_eq!(page.first().map(|r| r.0), Some((1, 10)));
        // "line 1.10" and its newline are 10 bytes: 100 bytes are 10 lines.
        assert_eq!(page.len(), 10);
        let page = store
            .log_page("b1", (1, 9_999), (1, 10_000), 1000, usize::MAX)
            .expect("page");
        assert_eq!(page.len(), 2);
        assert_eq!(store.log_last("b1").expect("last"), Some((1, 10_000)));
        assert_eq!(
            store.log_after("b1", (1, 9_998), 1).expect("after")[0].0,
            (1, 9_999)
        );
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("hermes-store-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
