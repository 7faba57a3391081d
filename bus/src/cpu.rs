//! How much of this process's CPUs the rest of the machine is using right now, so that a
//! compute kernel picks its thread count to fit.
//!
//! ggml (whisper.cpp, llama.cpp) splits each graph across its threads and makes them meet at
//! a spinning barrier after every operation. When there are more such threads than free cores
//! — Whisper's two while the LLM's two generate, on a 2-core machine — a thread that is not
//! scheduled holds the others at every barrier for a whole scheduler slice: a 120 ms decode
//! was measured taking 12 s that way. One thread never waits at a barrier, so with the cores
//! taken, one thread is much faster than two.
//!
//! [`CpuGauge`] samples `/proc/stat` (the CPUs this process may run on) and `/proc/self/stat`
//! every [`SAMPLE`] on a thread of its own, and keeps the CPU time the *other* processes used
//! over the last interval. Where `/proc` cannot be read, it reports nothing busy (the
//! configured thread count stands).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often the gauge samples.
pub const SAMPLE: Duration = Duration::from_millis(200);

/// CPU time used by the other processes on this process's CPUs.
#[derive(Debug)]
pub struct CpuGauge {
    /// CPUs this process may run on.
    cpus: u32,
    /// Busy CPUs (other processes) over the last interval, in thousandths.
    others_milli: AtomicU32,
}

impl CpuGauge {
    /// The process's gauge (its sampling thread starts on first use).
    pub fn shared() -> Arc<CpuGauge> {
        static GAUGE: OnceLock<Arc<CpuGauge>> = OnceLock::new();
        Arc::clone(GAUGE.get_or_init(|| {
            let allowed = allowed_cpus();
            let cpus = allowed.as_ref().map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
                |v| v.len().max(1) as u32,
            );
            let gauge = Arc::new(CpuGauge {
                cpus,
                others_milli: AtomicU32::new(0),
            });
            let g = Arc::clone(&gauge);
            let spawned = std::thread::Builder::new()
                .name("cpu-gauge".into())
                .spawn(move || g.sample_forever(allowed));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the CPU gauge: thread counts stay as configured");
            }
            gauge
        }))
    }

    /// CPUs this process may run on.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }

    /// CPUs the other processes kept busy over the last interval.
    pub fn others_busy(&self) -> f64 {
        f64::from(self.others_milli.load(Ordering::Relaxed)) / 1e3
    }

    /// Threads for a ggml computation that may use up to `max`: as many as there are idle
    /// CPUs (rounded, a CPU counts as free below 70% busy), at least one.
    pub fn threads(&self, max: u32) -> u32 {
        threads_for(max, self.cpus, self.others_busy())
    }

    fn sample_forever(&self, allowed: Option<Vec<usize>>) {
        let mut prev = read_sample(allowed.as_deref());
        if prev.is_none() {
            tracing::info!("no /proc/stat: the CPU gauge reports an idle machine");
            return;
        }
        loop {
            std::thread::sleep(SAMPLE);
            let Some(now) = read_sample(allowed.as_deref()) else {
                return;
            };
            if let Some(p) = prev {
                let busy = now.busy.saturating_sub(p.busy) as f64;
                let total = now.total.saturating_sub(p.total) as f64;
                let own = now.own.saturating_sub(p.own) as f64;
                if total > 0.0 {
                    // `total` ticks are spread over `cpus` CPUs: busy CPUs = busy / total × cpus.
                    let cpus = f64::from(self.cpus);
                    let others = ((busy - own).max(0.0) / total * cpus).min(cpus);
                    self.others_milli
                        .store((others * 1e3) as u32, Ordering::Relaxed);
                }
            }
            prev = Some(now);
        }
    }
}

/// The thread count for `max` wanted, `cpus` in all and `others` of them busy elsewhere.
pub fn threads_for(max: u32, cpus: u32, others: f64) -> u32 {
    let free = (f64::from(cpus) - others + 0.3).floor().max(1.0) as u32;
    free.clamp(1, max.max(1))
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    busy: u64,
    total: u64,
    own: u64,
}

fn read_sample(allowed: Option<&[usize]>) -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (busy, total) = cpu_ticks(&stat, allowed)?;
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| own_ticks(&s))
        .unwrap_or(0);
    Some(Sample { busy, total, own })
}

/// (busy, total) ticks summed over the `cpuN` lines of `/proc/stat` for the CPUs in
/// `allowed` (all of them when `None`). Idle and iowait count as idle; steal is not ours.
fn cpu_ticks(stat: &str, allowed: Option<&[usize]>) -> Option<(u64, u64)> {
    let (mut busy, mut total, mut any) = (0u64, 0u64, false);
    for line in stat.lines() {
        // `cpuN …`; the aggregate line (`cpu  …`) has a space where N would be.
        let Some(rest) = line
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let Some(Ok(n)) = fields.next().map(str::parse::<usize>) else {
            continue;
        };
        if allowed.is_some_and(|a| !a.contains(&n)) {
            continue;
        }
        let v: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
        if v.len() < 4 {
            continue;
        }
        // user nice system idle iowait irq softirq steal …
        let idle = v[3] + v.get(4).copied().unwrap_or(0);
        let steal = v.get(7).copied().unwrap_or(0);
        let all: u64 = v.iter().take(7).sum();
        busy += all - idle;
        total += all + steal;
        any = true;
    }
    any.then_some((busy, total))
}

/// utime + stime of every thread of this process, from `/proc/self/stat`.
fn own_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of the man page, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The CPUs in this process's affinity mask.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect();
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_count_leaves_room_for_what_else_runs() {
        assert_eq!(threads_for(2, 2, 0.0), 2);
        assert_eq!(threads_for(2, 2, 0.5), 1); // a CPU busy half the time is not free
        assert_eq!(threads_for(2, 2, 0.2), 2);
        assert_eq!(threads_for(2, 2, 2.0), 1);
        assert_eq!(threads_for(4, 8, 1.0), 4);
        assert_eq!(threads_for(8, 8, 3.0), 5);
        assert_eq!(threads_for(0, 2, 0.0), 1);
    }

    #[test]
    fn proc_stat_is_read_for_the_allowed_cpus() {
        let stat = "cpu  30 0 10 100 0 0 0 0 0 0\n\
                    cpu0 10 0 5 50 5 0 0 0 0 0\n\
                    cpu1 20 0 5 50 0 0 0 7 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(cpu_ticks(stat, None), Some((40, 152)));
        assert_eq!(cpu_ticks(stat, Some(&[1])), Some((25, 82)));
        assert_eq!(cpu_ticks(stat, Some(&[5])), None);
        let own = "4242 (stt (x) y) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 9";
        assert_eq!(own_ticks(own), Some(150));
    }

    #[test]
    fn the_gauge_sees_a_busy_process_next_door() {
        let g = CpuGauge::shared();
        assert!(g.cpus() >= 1);
        // A child process spinning on every CPU: the gauge sees them busy (not this process's
        // own time, which it subtracts).
        let mut kids: Vec<std::process::Child> = (0..g.cpus())
            .map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .expect("sh")
            })
            .collect();
        let mut seen = 0.0f64;
        for _ in 0..20 {
            std::thread::sleep(SAMPLE);
            seen = seen.max(g.others_busy());
            if seen > f64::from(g.cpus()) * 0.6 {
                break;
            }
        }
        for k in &mut kids {
            let _ = k.kill();
            let _ = k.wait();
        }
        assert!(
            seen > f64::from(g.cpus()) * 0.6,
            "{seen} of {} CPUs busy",
            g.cpus()
        );
        if g.cpus() > 1 {
            assert!(threads_for(g.cpus(), g.cpus(), seen) < g.cpus());
        }
    }
}
