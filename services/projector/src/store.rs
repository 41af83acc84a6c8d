//! The redb file that holds the read model. Written only by the fold of JetStream events.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use hermes_schemas::{Envelope, LogEvent};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::model::{self, Build};

/// build id → build JSON.
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

#[derive(Debug, thiserror::Error)]
#[error("read model: {0}")]
pub struct StoreError(String);

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError(e.to_string())
}

/// Where a line sits in a build's log: attempt, then line number.
pub type LogPosition = (u32, u64);

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    pages: Arc<Pages>,
}

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

/// The most pages kept in [`Pages`]; past that, one is dropped for each new one.
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

#[derive(Default)]
struct PagesInner {
    generation: u64,
    by_repo: HashMap<String, Bytes>,
    all: Option<Bytes>,
}

impl Pages {
    fn lock(&self) -> std::sync::MutexGuard<'_, PagesInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached page, or the generation to read it at.
    fn get(&self, repo: Option<&str>) -> Result<Bytes, u64> {
        let inner = self.lock();
        let hit = match repo {
            Some(r) => inner.by_repo.get(r),
            None => inner.all.as_ref(),
        };
        hit.cloned().ok_or(inner.generation)
    }

    fn put(&self, repo: Option<&str>, read_at: u64, page: Bytes) {
        let mut inner = self.lock();
        if inner.generation != read_at {
            return;
        }
        let Some(repo) = repo else {
            inner.all = Some(page);
            return;
        };
        if inner.by_repo.len() >= MAX_CACHED_PAGES
            && let Some(k) = inner.by_repo.keys().next().cloned()
        {
            inner.by_repo.remove(&k);
        }
        inner.by_repo.insert(repo.to_owned(), page);
    }

    /// Called after a write transaction that may have changed builds of `repos`.
    fn invalidate(&self, repos: &[String]) {
        let mut inner = self.lock();
        inner.generation += 1;
        if repos.is_empty() {
            return;
        }
        inner.all = None;
        if inner.by_repo.is_empty() {
            return;
        }
        for r in repos {
            inner.by_repo.remove(r.as_str());
        }
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        {
            txn.open_table(BUILDS).map_err(err)?;
            txn.open_table(BY_REPO).map_err(err)?;
            txn.open_table(BY_SEQ).map_err(err)?;
            txn.open_table(LOGS).map_err(err)?;
            txn.open_table(LOG_ATTEMPTS).map_err(err)?;
            txn.open_table(CHECKPOINTS).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(Self {
            db: Arc::new(db),
            pages: Arc::default(),
        })
    }

    pub fn checkpoint(&self, stream: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(CHECKPOINTS).map_err(err)?;
        Ok(t.get(stream).map_err(err)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Makes every commit so far durable (an empty commit that is flushed to disk).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.begin_write().map_err(err)?.commit().map_err(err)
    }

    /// Runs `fold` on the events of `batch` past the stream's checkpoint, and moves the checkpoint
    /// to the batch's last sequence, in one write transaction: a batch applied twice is harmless,
    /// and a crash leaves either all of it or none. With [`Flush::Later`] the commit is visible at
    /// once but reaches the disk only with the next flushed one; a crash before that undoes it
    /// together with its checkpoint, so the projector folds those events again.
    fn apply_batch<T>(
        &self,
        stream: &str,
        batch: &[(u64, T)],
        flush: Flush,
        fold: impl FnOnce(
            &redb::WriteTransaction,
            &mut dyn Iterator<Item = &(u64, T)>,
        ) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(&(last, _)) = batch.last() else {
            return Ok(());
        };
        let mut txn = self.db.begin_write().map_err(err)?;
        if flush == Flush::Later {
            txn.set_durability(Durability::None).map_err(err)?;
        }
        {
            let mut ckpt = txn.open_table(CHECKPOINTS).map_err(err)?;
            let done = ckpt.get(stream).map_err(err)?.map_or(0, |v| v.value());
            fold(&txn, &mut batch.iter().filter(|(seq, _)| *seq > done))?;
            ckpt.insert(stream, last.max(done)).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// Folds a batch of build events into the builds they belong to. Each build the batch touches
    /// is read and decoded once, folded through all its events of the batch, and encoded and
    /// written once.
    pub fn apply_builds(
        &self,
        stream: &str,
        batch: &[(u64, Envelope)],
        flush: Flush,
    ) -> Result<(), StoreError> {
        let mut touched = Vec::new();
        let result = self.apply_batch(stream, batch, flush, |txn, events| {
            let mut builds = txn.open_table(BUILDS).map_err(err)?;
            let mut by_repo = txn.open_table(BY_REPO).map_err(err)?;
            let mut by_seq = txn.open_table(BY_SEQ).map_err(err)?;
            // The builds of this batch as they stand, in the order first seen.
            let mut folded: HashMap<&str, Option<Build>> = HashMap::new();
            let mut order: Vec<&str> = Vec::new();
            for (seq, event) in events {
                let id = event.build_id.as_str();
                let slot = match folded.entry(id) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        let stored: Option<Build> = match builds.get(id).map_err(err)? {
                            Some(v) => Some(serde_json::from_slice(v.value()).map_err(err)?),
                            None => None,
                        };
                        order.push(id);
                        v.insert(stored)
                    }
                };
                let before = slot.take();
                let known = before.is_some();
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
                *slot = Some(after);
            }
            let mut json = Vec::new();
            for id in order {
                let Some(Some(build)) = folded.get(id) else {
                    continue;
                };
                json.clear();
                serde_json::to_writer(&mut json, build).map_err(err)?;
                builds.insert(id, json.as_slice()).map_err(err)?;
                touched.push(build.repo.as_str().to_owned());
            }
            Ok(())
        });
        // Whether or not the commit went through, no cached page may outlive it.
        self.pages.invalidate(&touched);
        result
    }

    /// Stores a batch of log lines. A line of an attempt older than one whose lines came before it
    /// on the log stream is not kept: a runner presumed dead woke up after a newer attempt began
    /// (which logs its first line as it starts). The rule reads the log stream alone, so a replay,
    /// which may fold the build stream far ahead of the log stream, keeps the same lines.
    pub fn apply_logs(
        &self,
        stream: &str,
        batch: &[(u64, LogEvent)],
        flush: Flush,
    ) -> Result<(), StoreError> {
        self.apply_batch(stream, batch, flush, |txn, events| {
            let mut logs = txn.open_table(LOGS).map_err(err)?;
            let mut attempts = txn.open_table(LOG_ATTEMPTS).map_err(err)?;
            let mut newest: HashMap<&str, u32> = HashMap::new();
            for l in events.flat_map(|(_, e)| &e.lines) {
                let id = l.build_id.as_str();
                let newest = match newest.entry(id) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let stored = attempts.get(id).map_err(err)?.map_or(0, |v| v.value());
                        e.insert(stored)
                    }
                };
                if l.attempt < *newest {
                    continue;
                }
                *newest = l.attempt;
                logs.insert((id, l.attempt, l.line), l.text.as_str())
                    .map_err(err)?;
            }
            for (id, attempt) in newest {
                attempts.insert(id, attempt).map_err(err)?;
            }
            Ok(())
        })
    }

    pub fn build(&self, id: &str) -> Result<Option<Build>, StoreError> {
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
        let read_at = match self.pages.get(repo) {
            Ok(page) => return Ok(page),
            Err(generation) => generation,
        };
        let page = Bytes::from(self.list_json(repo, DEFAULT_PAGE)?);
        self.pages.put(repo, read_at, page.clone());
        Ok(page)
    }

    /// The cached first page, if there is one: no read of the file.
    pub fn cached_first_page(&self, repo: Option<&str>) -> Option<Bytes> {
        self.pages.get(repo).ok()
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

    /// The whole log of a build so far, every attempt in order, one line each.
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

    /// The log lines of a build after `(attempt, line)`, in order, with their position.
    pub fn log_after(
        &self,
        id: &str,
        after: (u32, u64),
    ) -> Result<Vec<(LogPosition, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(LOGS).map_err(err)?;
        let mut out = Vec::new();
        let start = (id, after.0, after.1.saturating_add(1));
        for row in t.range(start..=(id, u32::MAX, u64::MAX)).map_err(err)? {
            let row = row.map_err(err)?;
            let (_, a, l) = row.0.value();
            out.push(((a, l), row.1.value().to_owned()));
        }
        Ok(out)
    }

    /// Every table as text, in key order: two stores with equal dumps answer every query alike.
    pub fn dump(&self) -> Result<String, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let mut out = String::new();
        for row in txn.open_table(BUILDS).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            out.push_str(&format!(
                "build {} {}\n",
                row.0.value(),
                String::from_utf8_lossy(row.1.value())
            ));
        }
        for row in txn.open_table(BY_REPO).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            let (repo, n) = row.0.value();
            out.push_str(&format!("repo {repo} {n} {}\n", row.1.value()));
        }
        for row in txn.open_table(LOGS).map_err(err)?.iter().map_err(err)? {
            let row = row.map_err(err)?;
            let (id, a, l) = row.0.value();
            out.push_str(&format!("log {id} {a} {l} {}\n", row.1.value()));
        }
        Ok(out)
    }
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
            BuildEvent::Queued(Queued {
                number: n,
                trigger: TriggerEvent::Push,
                git_ref: "refs/heads/main".into(),
                commit: CommitSha::parse(&"a".repeat(40)).expect("sha"),
                clone_url: "file:///r".into(),
                pull_request: None,
                delivery: None,
                restarted_from: None,
            }),
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
                BuildEvent::Finished(Finished {
                    status: BuildStatus::Succeeded,
                    error: None,
                }),
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
            store.log_after("b1", (2, 1)).expect("log")[1],
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
        let read_at = pages.get(Some("o/a")).expect_err("empty");
        // A batch commits while the page is being read from the older snapshot.
        pages.invalidate(&["o/a".to_owned()]);
        pages.put(Some("o/a"), read_at, Bytes::from_static(b"[old]"));
        assert!(pages.get(Some("o/a")).is_err(), "the stale page was cached");
        let read_at = pages.get(None).expect_err("empty");
        pages.put(None, read_at, Bytes::from_static(b"[new]"));
        assert_eq!(pages.get(None), Ok(Bytes::from_static(b"[new]")));
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
