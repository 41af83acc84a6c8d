//! Refused deliveries, logged once each with the delivery id, event, hook and reason (never the
//! secret or the body), at most [`BURST`] lines in each [`WINDOW`]: someone debugging a wrong
//! secret sees why, and a flood cannot fill the disk (what was not logged is counted, and said).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

/// Lines logged in one window at most.
pub const BURST: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Refusals {
    window: Mutex<(Instant, u32, u64)>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            window: Mutex::new((Instant::now(), 0, 0)),
        }
    }
}

impl Refusals {
    /// Logs a refused delivery (its headers; `status` and `reason` of the answer), unless the
    /// window's lines are used up.
    pub fn log(&self, headers: &HeaderMap, status: u16, reason: &str) {
        let Some(skipped) = self.admit() else {
            return;
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(128).collect::<String>())
                .unwrap_or_default()
        };
        tracing::warn!(
            delivery = %header("x-github-delivery"),
            event = %header("x-github-event"),
            hook = %header("x-github-hook-id"),
            status,
            reason,
            not_logged_before = skipped,
            "Delivery refused."
        );
    }

    /// Whether a line may be written now; with it, how many were not logged since the last one.
    fn admit(&self) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (start, logged, skipped) = &mut *w;
        if start.elapsed() >= WINDOW {
            *start = Instant::now();
            *logged = 0;
        }
        if *logged >= BURST {
            *skipped += 1;
            return None;
        }
        *logged += 1;
        Some(std::mem::take(skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_what_was_cut_is_counted() {
        let r = Refusals::default();
        let admitted = (0..100).filter(|_| r.admit().is_some()).count();
        assert_eq!(admitted, BURST as usize);
        // A new window: the next line says how many were not logged.
        r.window.lock().expect("lock").0 = Instant::now() - WINDOW;
        assert_eq!(r.admit(), Some(100 - u64::from(BURST)));
        assert_eq!(r.admit(), Some(0));
    }
}
