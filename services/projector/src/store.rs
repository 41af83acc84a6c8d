//! The redb file that holds the read model. Written only by the fold of JetStream events.

use std::path::Path;
use std::sync::Arc;

use hermes_schemas::{Envelope, LogLine};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::model::{self, Build};

/// build id → build JSON.
const BUILDS: TableDefinition<&str, &[u8]> = TableDefinition::new("builds");
/// (repository, number) → build id.
const BY_REPO: TableDefinition<(&str, u64), &str> = TableDefinition::new("builds_by_repo");
/// stream sequence of `build.queued` → build id: every build, oldest first.
const BY_SEQ: TableDefinition<u64, &str> = TableDefinition::new("builds_by_seq");
/// (build id, attempt, line) → text.
const LOGS: TableDefinition<(&str, u32, u64), &str> = TableDefinition::new("logs");
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
            txn.open_table(CHECKPOINTS).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    pub fn checkpoint(&self, stream: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let t = txn.open_table(CHECKPOINTS).map_err(err)?;
        Ok(t.get(stream).map_err(err)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Runs `fold` on the events of `batch` past the stream's checkpoint, and moves the checkpoint
    /// to the batch's last sequence, in one write transaction: a batch applied twice is harmless,
    /// and a crash leaves either all of it or none.
    fn apply_batch<T>(
        &self,
        stream: &str,
        batch: &[(u64, T)],
        fold: impl FnOnce(
            &redb::WriteTransaction,
            &mut dyn Iterator<Item = &(u64, T)>,
        ) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(&(last, _)) = batch.last() else {
            return Ok(());
        };
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut ckpt = txn.open_table(CHECKPOINTS).map_err(err)?;
            let done = ckpt.get(stream).map_err(err)?.map_or(0, |v| v.value());
            fold(&txn, &mut batch.iter().filter(|(seq, _)| *seq > done))?;
            ckpt.insert(stream, last.max(done)).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// Folds a batch of build events into the builds they belong to.
    pub fn apply_builds(&self, stream: &str, batch: &[(u64, Envelope)]) -> Result<(), StoreError> {
        self.apply_batch(stream, batch, |txn, events| {
            let mut builds = txn.open_table(BUILDS).map_err(err)?;
            let mut by_repo = txn.open_table(BY_REPO).map_err(err)?;
            let mut by_seq = txn.open_table(BY_SEQ).map_err(err)?;
            for (seq, event) in events {
                let id = event.build_id.as_str();
                let before: Option<Build> = match builds.get(id).map_err(err)? {
                    Some(v) => Some(serde_json::from_slice(v.value()).map_err(err)?),
                    None => None,
                };
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
                builds
                    .insert(id, serde_json::to_vec(&after).map_err(err)?.as_slice())
                    .map_err(err)?;
            }
            Ok(())
        })
    }

    /// Stores a batch of log lines. Lines of an attempt older than the build's current one (a
    /// runner presumed dead woke up) are not kept.
    pub fn apply_logs(&self, stream: &str, batch: &[(u64, LogLine)]) -> Result<(), StoreError> {
        self.apply_batch(stream, batch, |txn, lines| {
            let mut logs = txn.open_table(LOGS).map_err(err)?;
            let builds = txn.open_table(BUILDS).map_err(err)?;
            let mut current: std::collections::HashMap<&str, u32> =
                std::collections::HashMap::new();
            for (_, l) in lines {
                let id = l.build_id.as_str();
                let attempt = match current.get(id) {
                    Some(a) => *a,
                    None => {
                        let a = match builds.get(id).map_err(err)? {
                            Some(v) => {
                                serde_json::from_slice::<Build>(v.value()).map_or(0, |b| b.attempt)
                            }
                            None => 0,
                        };
                        current.insert(id, a);
                        a
                    }
                };
                if l.attempt >= attempt {
                    logs.insert((id, l.attempt, l.line), l.text.as_str())
                        .map_err(err)?;
                }
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

    /// The builds of `repo` (all repositories when `None`), newest first.
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
        let repo = RepoName::parse("o/r").expect("valid");
        let events: Vec<(u64, Envelope)> = (1..=3)
            .map(|n| {
                let q = Queued {
                    number: n,
                    trigger: TriggerEvent::Push,
                    git_ref: "refs/heads/main".into(),
                    commit: CommitSha::parse(&"a".repeat(40)).expect("sha"),
                    clone_url: "file:///r".into(),
                    pull_request: None,
                    delivery: None,
                    restarted_from: None,
                };
                let id = BuildId::parse(&format!("b{n}")).expect("id");
                (
                    n,
                    Envelope::new(
                        id,
                        repo.clone(),
                        0,
                        time::OffsetDateTime::UNIX_EPOCH,
                        BuildEvent::Queued(q),
                    ),
                )
            })
            .collect();
        store.apply_builds("S", &events).expect("apply");
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

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hermes-store-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
