//! Where the CPU time of a phase went: this process, the children it has waited for (`wrk`), the
//! `nats-server`, and how much of the machine stayed idle. Read from `/proc` (Linux), so that a
//! figure can say what each delivery cost each program, not only how many went through.

use std::time::Instant;

/// Cumulative CPU times at one moment, in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    at: Instant,
    /// This process (user + system).
    own: u64,
    /// The children this process has waited for (a `wrk` counts once it has exited).
    children: u64,
    /// The `nats-server` (0 when its pid is unknown or it is gone).
    nats: u64,
    /// The machine's idle (idle + iowait) and total ticks, over all CPUs.
    machine_idle: u64,
    machine_total: u64,
}

/// CPU use between two [`CpuTimes`], in seconds of one CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    pub wall_s: f64,
    pub own_s: f64,
    pub children_s: f64,
    pub nats_s: f64,
    /// Idle share of the whole machine, 0..1.
    pub idle: f64,
}

impl CpuTimes {
    /// `None` where `/proc` cannot be read (not Linux).
    pub fn now(nats_pid: Option<u32>) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let own = stat_fields(&own)?;
        let nats = nats_pid
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .and_then(|s| stat_fields(&s))
            .map_or(0, |f| f.utime + f.stime);
        let (machine_idle, machine_total) = machine(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(Self {
            at: Instant::now(),
            own: own.utime + own.stime,
            children: own.cutime + own.cstime,
            nats,
            machine_idle,
            machine_total,
        })
    }

    /// What was used from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> CpuUse {
        let s = |now: u64, then: u64| now.saturating_sub(then) as f64 / TICKS_PER_S;
        let total = self.machine_total.saturating_sub(earlier.machine_total);
        CpuUse {
            wall_s: self.at.duration_since(earlier.at).as_secs_f64(),
            own_s: s(self.own, earlier.own),
            children_s: s(self.children, earlier.children),
            nats_s: s(self.nats, earlier.nats),
            idle: if total == 0 {
                0.0
            } else {
                self.machine_idle.saturating_sub(earlier.machine_idle) as f64 / total as f64
            },
        }
    }
}

/// What was used since `before` (taken with the same `nats_pid`), if `/proc` could be read both times.
pub fn used_since(before: Option<CpuTimes>, nats_pid: Option<u32>) -> Option<CpuUse> {
    Some(CpuTimes::now(nats_pid)?.since(&before?))
}

impl CpuUse {
    /// The sum of two phases; the idle share weighted by their wall time.
    pub fn add(&mut self, other: CpuUse) {
        let wall = self.wall_s + other.wall_s;
        self.idle = if wall > 0.0 {
            (self.idle * self.wall_s + other.idle * other.wall_s) / wall
        } else {
            0.0
        };
        self.wall_s = wall;
        self.own_s += other.own_s;
        self.children_s += other.children_s;
        self.nats_s += other.nats_s;
    }

    /// Microseconds of CPU per item, for `count` items.
    pub fn us_per(seconds: f64, count: u64) -> f64 {
        if count == 0 {
            return f64::NAN;
        }
        (seconds * 1e6 / count as f64 * 10.0).round() / 10.0
    }
}

/// Linux's `USER_HZ`, the unit of `/proc/*/stat` times; 100 on every architecture Linux ships.
const TICKS_PER_S: f64 = 100.0;

#[derive(Debug, PartialEq)]
struct StatFields {
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

/// Fields 14–17 of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the count starts after its last `)`.
fn stat_fields(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ") ": field 3 (state) is index 0, so field N is index N - 3.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some(StatFields {
        utime: n(14)?,
        stime: n(15)?,
        cutime: n(16)?,
        cstime: n(17)?,
    })
}

/// (idle + iowait, total) ticks of the `cpu` line of `/proc/stat` (user … steal).
fn machine(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if v.len() < 5 {
        return None;
    }
    Some((v[3] + v[4], v.iter().sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_after_the_last_parenthesis() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 731 129 17 5 20 0 9 0 123 4567 89";
        assert_eq!(
            stat_fields(stat),
            Some(StatFields {
                utime: 731,
                stime: 129,
                cutime: 17,
                cstime: 5
            })
        );
        assert_eq!(stat_fields("4242 (cut) S 1 2"), None);
    }

    #[test]
    fn machine_idle_is_idle_plus_iowait() {
        let stat = "cpu  100 5 50 800 20 3 7 15 0 0\ncpu0 50 2 25 400 10 1 3 7 0 0\n";
        assert_eq!(machine(stat), Some((820, 1000)));
        assert_eq!(machine("cpu0 1 2 3\n"), None);
    }

    #[test]
    fn a_phase_of_this_process_is_measured() {
        let before = CpuTimes::now(None).expect("/proc is readable");
        // Spins until /proc shows 30 ms of this process's CPU, for at most 10 s of wall time.
        let t = Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let used = CpuTimes::now(None)
                .expect("/proc is readable")
                .since(&before);
            if used.own_s >= 0.03 || t.elapsed().as_secs() >= 10 {
                break used;
            }
        };
        assert!(used.own_s >= 0.03, "{used:?}");
        assert!(used.wall_s >= used.own_s * 0.5, "{used:?}");
        assert_eq!(used.nats_s, 0.0);
        assert!((0.0..=1.0).contains(&used.idle), "{used:?}");
    }

    #[test]
    fn phases_add_up() {
        let mut a = CpuUse {
            wall_s: 1.0,
            own_s: 0.5,
            children_s: 0.1,
            nats_s: 0.4,
            idle: 0.2,
        };
        a.add(CpuUse {
            wall_s: 3.0,
            own_s: 1.5,
            children_s: 0.3,
            nats_s: 1.2,
            idle: 0.6,
        });
        assert_eq!(a.wall_s, 4.0);
        assert_eq!(a.own_s, 2.0);
        assert!((a.idle - 0.5).abs() < 1e-9);
        assert_eq!(CpuUse::us_per(0.5, 10_000), 50.0);
        assert!(CpuUse::us_per(1.0, 0).is_nan());
    }
}
