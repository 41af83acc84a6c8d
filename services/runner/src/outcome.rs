//! What an attempt comes to, as types, and the runner's two decisions as pure functions: what to
//! do with a command it takes ([`admit`]), and what to do once its attempt ended ([`conclude`]).
//! Both read what the build stream says of the build's attempts through the one attempt rule,
//! [`Ownership`].

use std::fmt;
use std::time::Duration;

use hermes_schemas::attempt::Ownership;
use hermes_schemas::events::BuildStatus;

/// Why an attempt ended other than by its pipeline passing or a step failing on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Hermes could not run the pipeline (clone refused, `Hermes.yaml` invalid, Docker
    /// unavailable …); the text says what, for the build's `error` and its log.
    Errored(String),
    /// The build went past its time limit.
    Timeout(Duration),
    /// A step used more memory than a build may (`HERMES_BUILD_MEMORY`, in bytes).
    OutOfMemory { limit: u64 },
    /// Every runner that took the build stopped before it finished, `max_attempts` times.
    GaveUp { attempts: u32 },
}

impl Reason {
    /// The status the build ends with: a build over its memory ran and failed; the rest were
    /// not run to their end by Hermes.
    pub fn status(&self) -> BuildStatus {
        match self {
            Self::OutOfMemory { .. } => BuildStatus::Failed,
            Self::Errored(_) | Self::Timeout(_) | Self::GaveUp { .. } => BuildStatus::Errored,
        }
    }

    /// What the build's `error` says: for a time limit only `timeout` (the log has the limit);
    /// otherwise the whole reason.
    pub fn error(&self) -> String {
        match self {
            Self::Timeout(_) => "timeout".to_owned(),
            _ => self.to_string(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Errored(why) => f.write_str(why),
            Self::Timeout(after) => write!(f, "timeout after {after:?}"),
            Self::OutOfMemory { limit } => write!(
                f,
                "out of memory: a step used more than the build's {} (HERMES_BUILD_MEMORY)",
                size(*limit)
            ),
            Self::GaveUp { attempts } => write!(
                f,
                "gave up after {attempts} attempts: every runner that took this build stopped before it finished"
            ),
        }
    }
}

/// `bytes` as a person would write it: `32 MiB`, `4 GiB`, else in bytes.
pub fn size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The pipeline ran and passed.
    Succeeded,
    /// The pipeline ran and a step returned non-zero.
    Failed,
    /// A cancel of the build was heard or found.
    Canceled,
    /// It ended for this reason, with [`Reason::status`].
    Stopped(Reason),
    /// The runner is shutting down and its grace period is over: the command goes back to the
    /// queue, and the build's end is another attempt's.
    HandBack,
}

impl Ending {
    /// The build's final status and why, `None` for a hand-back.
    pub fn finished(&self) -> Option<(BuildStatus, Option<&Reason>)> {
        match self {
            Self::Succeeded => Some((BuildStatus::Succeeded, None)),
            Self::Failed => Some((BuildStatus::Failed, None)),
            Self::Canceled => Some((BuildStatus::Canceled, None)),
            Self::Stopped(reason) => Some((reason.status(), Some(reason))),
            Self::HandBack => None,
        }
    }
}

/// What a runner does with a build command it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The build has ended (its last started attempt, or a newer one, ended; or it was canceled
    /// before any started): nothing to do but ack.
    Ended,
    /// A cancel was requested: end the build `canceled` at `attempt` without running it, then
    /// ack. (The scheduler's end of a queued build is attempt 0 and loses to an attempt that
    /// started, so a build whose runner left would otherwise stay `running`.)
    Cancel { attempt: u32 },
    /// `max_attempts` attempts started and none ended: end the build `errored` at `attempt`.
    GiveUp { attempt: u32 },
    /// Start `attempt`.
    Start { attempt: u32 },
}

/// Decides what to do with a command, given what the build stream says of the build's attempts,
/// whether a cancel of it is on the control stream, and how many attempts a build may have. The
/// attempt is always the build's next ([`Ownership::next_attempt`]): a domain fact, never the
/// transport's delivery count, which starts again at 1 when the consumer is made again.
pub fn admit(known: Ownership, cancel_requested: bool, max_attempts: u32) -> Admission {
    if known.ended {
        return Admission::Ended;
    }
    let attempt = known.next_attempt();
    if cancel_requested {
        Admission::Cancel { attempt }
    } else if attempt > max_attempts {
        Admission::GiveUp { attempt }
    } else {
        Admission::Start { attempt }
    }
}

/// What a runner does once its attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conclusion {
    /// Publish the attempt's `build.finished` with this status and `error`, then ack the command.
    Finish {
        status: BuildStatus,
        error: Option<String>,
    },
    /// A newer attempt started (this runner was presumed dead: paused, cut off): report nothing
    /// and leave the command, which is the newer attempt's now.
    Drop { current: u32 },
    /// Whether a newer attempt started could not be learnt before the runner had to stop: report
    /// nothing and leave the command unacked, so that it comes back. Never assume "no".
    Leave,
    /// Hand the command back to the queue at once.
    HandBack,
}

/// Decides what to do once `attempt` came to `ending`, given what the build stream says of the
/// build's attempts then (`None`: it could not be read).
pub fn conclude(ending: &Ending, attempt: u32, known: Option<Ownership>) -> Conclusion {
    let Some((status, reason)) = ending.finished() else {
        return Conclusion::HandBack;
    };
    match known {
        None => Conclusion::Leave,
        Some(o) if o.superseded(attempt) => Conclusion::Drop { current: o.current },
        Some(_) => Conclusion::Finish {
            status,
            error: reason.map(Reason::error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(started: Option<u32>, finished: Option<u32>) -> Ownership {
        Ownership::from_last(started, finished)
    }

    #[test]
    fn given_a_new_build_when_a_runner_takes_it_then_attempt_1_starts() {
        assert_eq!(
            admit(known(None, None), false, 3),
            Admission::Start { attempt: 1 }
        );
    }

    #[test]
    fn given_a_started_attempt_when_the_command_comes_again_then_the_next_attempt_starts() {
        // Whatever the transport counts: a consumer made again delivers it as its first.
        assert_eq!(
            admit(known(Some(1), None), false, 3),
            Admission::Start { attempt: 2 }
        );
        assert_eq!(
            admit(known(Some(2), None), false, 3),
            Admission::Start { attempt: 3 }
        );
    }

    #[test]
    fn given_max_attempts_started_when_the_command_comes_again_then_the_build_is_given_up() {
        assert_eq!(
            admit(known(Some(3), None), false, 3),
            Admission::GiveUp { attempt: 4 }
        );
        assert_eq!(
            admit(known(Some(1), None), false, 1),
            Admission::GiveUp { attempt: 2 }
        );
    }

    #[test]
    fn given_an_ended_build_when_its_command_comes_again_then_it_is_only_acked() {
        // Finished, but the ack was lost with its runner.
        assert_eq!(admit(known(Some(1), Some(1)), false, 3), Admission::Ended);
        // Canceled by the scheduler before any runner took it.
        assert_eq!(admit(known(None, Some(0)), true, 3), Admission::Ended);
        // Given up, or canceled by a runner, at an attempt that never started.
        assert_eq!(admit(known(Some(3), Some(4)), false, 3), Admission::Ended);
    }

    #[test]
    fn given_a_cancel_when_the_last_started_attempt_did_not_end_then_the_next_one_ends_it() {
        assert_eq!(
            admit(known(Some(1), Some(0)), true, 3),
            Admission::Cancel { attempt: 2 }
        );
        assert_eq!(
            admit(known(None, None), true, 3),
            Admission::Cancel { attempt: 1 }
        );
        // A cancel wins over giving up: the user asked for it.
        assert_eq!(
            admit(known(Some(3), None), true, 3),
            Admission::Cancel { attempt: 4 }
        );
    }

    #[test]
    fn given_an_attempt_that_ended_when_no_newer_one_started_then_it_finishes() {
        assert_eq!(
            conclude(&Ending::Succeeded, 2, Some(known(Some(2), None))),
            Conclusion::Finish {
                status: BuildStatus::Succeeded,
                error: None
            }
        );
        // The scheduler's attempt-0 cancel lost to this attempt.
        assert_eq!(
            conclude(&Ending::Canceled, 1, Some(known(Some(1), Some(0)))),
            Conclusion::Finish {
                status: BuildStatus::Canceled,
                error: None
            }
        );
        // The API's error of a time limit is `timeout`, typed, not found again in a text.
        assert_eq!(
            conclude(
                &Ending::Stopped(Reason::Timeout(Duration::from_secs(5))),
                1,
                Some(known(Some(1), None))
            ),
            Conclusion::Finish {
                status: BuildStatus::Errored,
                error: Some("timeout".into())
            }
        );
        assert_eq!(
            conclude(
                &Ending::Stopped(Reason::OutOfMemory { limit: 32 << 20 }),
                1,
                Some(known(Some(1), None))
            ),
            Conclusion::Finish {
                status: BuildStatus::Failed,
                error: Some(
                    "out of memory: a step used more than the build's 32 MiB (HERMES_BUILD_MEMORY)"
                        .into()
                )
            }
        );
    }

    #[test]
    fn given_a_newer_attempt_when_the_old_one_ends_then_it_is_dropped() {
        assert_eq!(
            conclude(&Ending::Succeeded, 1, Some(known(Some(2), None))),
            Conclusion::Drop { current: 2 }
        );
        // A newer runner ended it canceled without starting.
        assert_eq!(
            conclude(&Ending::Failed, 1, Some(known(Some(1), Some(2)))),
            Conclusion::Drop { current: 2 }
        );
    }

    #[test]
    fn given_nats_unreadable_when_an_attempt_ends_then_nothing_is_reported_or_acked() {
        for ending in [
            Ending::Succeeded,
            Ending::Failed,
            Ending::Canceled,
            Ending::Stopped(Reason::Timeout(Duration::from_secs(1))),
        ] {
            assert_eq!(conclude(&ending, 1, None), Conclusion::Leave, "{ending:?}");
        }
    }

    #[test]
    fn given_a_shutdown_when_the_grace_is_over_then_the_command_is_handed_back() {
        assert_eq!(conclude(&Ending::HandBack, 1, None), Conclusion::HandBack);
        assert_eq!(
            conclude(&Ending::HandBack, 1, Some(known(Some(1), None))),
            Conclusion::HandBack
        );
    }

    #[test]
    fn reasons_are_typed_and_say_what_the_api_and_the_log_show() {
        let timeout = Reason::Timeout(Duration::from_secs(2));
        assert_eq!(timeout.error(), "timeout");
        assert_eq!(timeout.to_string(), "timeout after 2s");
        assert_eq!(timeout.status(), BuildStatus::Errored);
        let oom = Reason::OutOfMemory { limit: 32 << 20 };
        assert_eq!(
            oom.error(),
            "out of memory: a step used more than the build's 32 MiB (HERMES_BUILD_MEMORY)"
        );
        assert_eq!(oom.status(), BuildStatus::Failed);
        assert_eq!(
            Ending::Stopped(oom.clone()).finished(),
            Some((BuildStatus::Failed, Some(&oom)))
        );
        // A reason that merely begins like a timeout is not one.
        let clone = Reason::Errored("timeout of git fetch".into());
        assert_eq!(clone.error(), "timeout of git fetch");
        assert_eq!(size(4 << 30), "4 GiB");
        assert_eq!(size(1536 << 20), "1536 MiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
