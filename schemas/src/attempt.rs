//! Which attempt owns a build: the one rule every reader of build events applies (the fold, the
//! log store, the runner, the notifier and the live log), kept here so that it is written once.
//!
//! A build's attempts are numbered from 1 and a number is never used twice for one build. The
//! rule:
//!
//! - **A start counts** when the build has not ended and no attempt as new or newer started.
//! - **An end counts** when the build has not ended and the attempt is the current one or newer
//!   (a newer one that ended without starting: a runner gave the build up, or canceled it before
//!   it started). The end of attempt 0 (the scheduler's, for a build no runner held) therefore
//!   loses to any attempt that started.
//! - **An attempt is superseded** once a newer one started: its events change nothing, and a
//!   runner still holding it must not report or ack it.
//! - **Log lines** of an attempt older than the newest whose lines came before them are not kept
//!   (a runner presumed dead that woke up after a newer attempt began).

use serde::{Deserialize, Serialize};

/// What a reader knows of a build's attempts: the current one and whether the build ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The current attempt: the newest that started or ended; 0 before any.
    pub current: u32,
    /// Whether an end counted.
    pub ended: bool,
}

impl Ownership {
    /// What the last stored `build.started` and `build.finished` of a build say (a runner or the
    /// notifier reads them from the stream by subject). `None` for neither stored.
    pub fn from_last(started: Option<u32>, finished: Option<u32>) -> Self {
        let started = started.unwrap_or(0);
        match finished {
            Some(f) if f >= started => Self {
                current: f,
                ended: true,
            },
            _ => Self {
                current: started,
                ended: false,
            },
        }
    }

    /// Whether a start of `attempt` counts; if it does, it becomes the current attempt.
    pub fn start(&mut self, attempt: u32) -> bool {
        let counts = !self.ended && attempt > self.current;
        if counts {
            self.current = attempt;
        }
        counts
    }

    /// Whether an end of `attempt` counts; if it does, the build has ended at it.
    pub fn end(&mut self, attempt: u32) -> bool {
        let counts = !self.ended && attempt >= self.current;
        if counts {
            self.current = attempt;
            self.ended = true;
        }
        counts
    }

    /// Whether `attempt` has been replaced by a newer one.
    pub fn superseded(&self, attempt: u32) -> bool {
        attempt < self.current
    }

    /// The number the next attempt takes.
    pub fn next_attempt(&self) -> u32 {
        self.current.saturating_add(1)
    }
}

/// Which attempt's log lines are kept: decided by the log stream alone, so that a replay (which
/// may fold the build stream far ahead of the log stream) keeps the same lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOwnership {
    /// The newest attempt whose lines came.
    pub newest: u32,
}

impl LogOwnership {
    /// Whether a line of `attempt` is kept; a newer attempt's line makes it the newest.
    pub fn keep(&mut self, attempt: u32) -> bool {
        if attempt < self.newest {
            return false;
        }
        self.newest = attempt;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(events: &[(&str, u32)]) -> Ownership {
        let mut o = Ownership::default();
        for (what, attempt) in events {
            match *what {
                "started" => o.start(*attempt),
                "finished" => o.end(*attempt),
                other => panic!("unknown event {other}"),
            };
        }
        o
    }

    #[test]
    fn given_a_start_when_it_ends_then_the_build_ended_at_it() {
        let mut o = given(&[("started", 1)]);
        assert!(o.end(1));
        assert_eq!(
            o,
            Ownership {
                current: 1,
                ended: true
            }
        );
        assert!(!o.end(1), "an end counts once");
        assert!(!o.start(2), "nothing starts after the end");
    }

    #[test]
    fn given_a_newer_start_when_the_old_attempt_ends_then_nothing_changes() {
        let mut o = given(&[("started", 1), ("started", 2)]);
        assert!(o.superseded(1));
        assert!(!o.end(1));
        assert!(!o.start(1), "an older or repeated start changes nothing");
        assert!(!o.start(2));
        assert!(o.end(2));
    }

    #[test]
    fn given_a_running_attempt_when_attempt_0_ends_then_it_loses() {
        let mut o = given(&[("started", 1)]);
        assert!(
            !o.end(0),
            "the scheduler's cancel loses to a started attempt"
        );
        let mut queued = Ownership::default();
        assert!(queued.end(0), "but ends a build no runner held");
        assert!(!queued.start(1), "and nothing starts after it");
    }

    #[test]
    fn given_a_start_when_a_newer_attempt_ends_without_starting_then_it_counts() {
        let mut o = given(&[("started", 1)]);
        assert!(o.end(3));
        assert_eq!(o.current, 3);
    }

    #[test]
    fn from_the_last_stored_events_then_the_same_ownership_as_the_fold() {
        for events in [
            &[][..],
            &[("started", 1)],
            &[("started", 1), ("finished", 1)],
            &[("started", 1), ("started", 2)],
            &[("finished", 0)],
            &[("started", 2), ("finished", 3)],
        ] {
            let folded = given(events);
            let last = |what| {
                events
                    .iter()
                    .rev()
                    .find(|(w, _)| *w == what)
                    .map(|(_, a)| *a)
            };
            assert_eq!(
                Ownership::from_last(last("started"), last("finished")),
                folded,
                "{events:?}"
            );
        }
        assert_eq!(Ownership::from_last(Some(2), None).next_attempt(), 3);
        assert_eq!(Ownership::from_last(None, None).next_attempt(), 1);
    }

    #[test]
    fn given_lines_of_attempt_2_when_a_line_of_attempt_1_comes_then_it_is_dropped() {
        let mut logs = LogOwnership::default();
        assert!(logs.keep(1));
        assert!(logs.keep(2));
        assert!(!logs.keep(1));
        assert!(logs.keep(2));
        assert_eq!(logs.newest, 2);
    }
}
