//! The process's memory budget: resident memory (RSS) watched a few times a
//! second, the allocator asked to return freed memory when it nears the
//! budget, ingestion refused (retry later) and merges postponed while it is
//! within 10 % of it.
//!
//! Why: the write buffer and the query pool count the bytes they hold, but
//! RSS is what the machine (and a container's OOM killer) sees. Between them
//! sit the Parquet writer, merges, decode buffers, and — largest — memory
//! the allocator has been given back but keeps for a while (mimalloc holds
//! freed pages for 1 s before returning them to the OS: under a burst of
//! flushes and queries that doubled RSS). Asking it to return them only
//! near the budget keeps its speed the rest of the time.
//!
//! One guard per process: the allocator's settings are process-wide, and
//! RSS is the whole process's. (The binary runs one server.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

/// What the guard can ask of the global allocator; provided by the binary
/// that chose it.
#[derive(Debug, Clone, Copy)]
pub struct AllocatorControl {
    /// Return the memory freed so far to the OS now.
    pub release_now: fn(),
    /// Return freed memory to the OS as soon as it is freed (true), or
    /// keep it a while for reuse as the allocator normally does (false).
    pub release_eagerly: fn(bool),
}

static ALLOCATOR: OnceLock<AllocatorControl> = OnceLock::new();

/// Set once, before `serve`.
pub fn set_allocator_control(control: AllocatorControl) {
    let _ = ALLOCATOR.set(control);
}

/// The smallest budget derived from small write-buffer and query-memory
/// settings: below it the binary, its runtime and one Parquet writer would
/// not fit and ingestion would never be admitted. (A budget set explicitly
/// is taken as given.)
pub const MIN_DEFAULT_BUDGET: u64 = 256 << 20;

/// Above this share of the budget freed memory is returned at once, until
/// RSS falls under `RELAX_AT`.
const RELEASE_AT: f64 = 0.75;
const RELAX_AT: f64 = 0.5;
/// Above this share ingestion waits and merges are postponed, until RSS
/// is under `ADMIT_AT` (so a hovering RSS does not flip it ten times a
/// second). The margin is for memory already on its way in (a part being
/// written, a merge or a query running) when the guard looks.
const REFUSE_AT: f64 = 0.9;
const ADMIT_AT: f64 = 0.85;

#[derive(Debug)]
pub struct MemoryGuard {
    budget: u64,
    resident: AtomicU64,
    over: AtomicBool,
    eager: AtomicBool,
    releases: AtomicU64,
    refusals: AtomicU64,
    merges_postponed: AtomicU64,
}

impl MemoryGuard {
    fn new(budget: u64) -> MemoryGuard {
        MemoryGuard {
            budget,
            resident: AtomicU64::new(0),
            over: AtomicBool::new(false),
            eager: AtomicBool::new(false),
            releases: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            merges_postponed: AtomicU64::new(0),
        }
    }

    /// Starts watching every `interval` on a thread of its own (so a busy
    /// async runtime cannot delay it); it stops when the guard is dropped.
    /// Without a readable RSS (no /proc) the guard never refuses.
    pub fn spawn(budget: u64, interval: Duration) -> Arc<MemoryGuard> {
        let guard = Arc::new(MemoryGuard::new(budget));
        guard
            .resident
            .store(resident_bytes().unwrap_or(0), Ordering::Relaxed);
        let weak: Weak<MemoryGuard> = Arc::downgrade(&guard);
        let spawned = std::thread::Builder::new()
            .name("memory-guard".into())
            .spawn(move || {
                while let Some(guard) = weak.upgrade() {
                    guard.check(&resident_bytes, ALLOCATOR.get());
                    drop(guard);
                    std::thread::sleep(interval);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the memory guard; RSS is not watched");
        }
        guard
    }

    /// One look at RSS: release freed memory if near the budget, then
    /// decide whether ingestion must wait.
    fn check(&self, read_rss: &dyn Fn() -> Option<u64>, allocator: Option<&AllocatorControl>) {
        let Some(mut rss) = read_rss() else {
            return;
        };
        if let Some(allocator) = allocator {
            let share = rss as f64 / self.budget as f64;
            if share > RELEASE_AT {
                // What the allocator kept goes back first, then what is
                // freed from now on (mimalloc: see the binary's `allocator`).
                (allocator.release_now)();
                if !self.eager.swap(true, Ordering::Relaxed) {
                    (allocator.release_eagerly)(true);
                }
                self.releases.fetch_add(1, Ordering::Relaxed);
                rss = read_rss().unwrap_or(rss);
            } else if share < RELAX_AT && self.eager.swap(false, Ordering::Relaxed) {
                (allocator.release_eagerly)(false);
            }
        }
        self.resident.store(rss, Ordering::Relaxed);
        let limit = if self.over.load(Ordering::Relaxed) {
            ADMIT_AT
        } else {
            REFUSE_AT
        };
        let over = rss as f64 > self.budget as f64 * limit;
        if over != self.over.swap(over, Ordering::Relaxed) {
            if over {
                tracing::warn!(
                    resident_mib = rss >> 20,
                    budget_mib = self.budget >> 20,
                    "resident memory near its budget: ingestion answers retry-later and merges wait until it is back under 85 %"
                );
            } else {
                tracing::info!(
                    resident_mib = rss >> 20,
                    "resident memory back under 85 % of its budget"
                );
            }
        }
    }

    /// True from when RSS passes 90 % of the budget until it is back under
    /// 85 % (as of the last look).
    pub fn over_budget(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// Counts a request refused because of [`Self::over_budget`].
    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a maintenance round that skipped merging because of
    /// [`Self::over_budget`].
    pub fn merge_postponed(&self) {
        self.merges_postponed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn merges_postponed(&self) -> u64 {
        self.merges_postponed.load(Ordering::Relaxed)
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn resident(&self) -> u64 {
        self.resident.load(Ordering::Relaxed)
    }

    /// Times the allocator was asked to return freed memory.
    pub fn releases(&self) -> u64 {
        self.releases.load(Ordering::Relaxed)
    }

    /// Requests refused because of [`Self::over_budget`].
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

impl Drop for MemoryGuard {
    /// The allocator setting is process-wide: leave it as it was found.
    fn drop(&mut self) {
        if *self.eager.get_mut()
            && let Some(allocator) = ALLOCATOR.get()
        {
            (allocator.release_eagerly)(false);
        }
    }
}

/// This process's resident set size, from /proc/self/statm (pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_counts_touched_memory() {
        assert!(resident_bytes().expect("/proc/self/statm") > 0);
        // black_box: an optimised build would otherwise drop the unread block.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let rss = resident_bytes().unwrap();
        assert!(rss >= 64 << 20, "{rss}");
        drop(block);
    }

    /// RSS readings in order, the last repeated.
    fn readings(values: &[u64]) -> impl Fn() -> Option<u64> + '_ {
        let next = AtomicU64::new(0);
        move || {
            let i = next.fetch_add(1, Ordering::Relaxed) as usize;
            Some(values[i.min(values.len() - 1)])
        }
    }

    #[test]
    fn near_its_budget_it_releases_and_over_it_refuses_until_back_under() {
        static RELEASES: AtomicU64 = AtomicU64::new(0);
        static EAGER: AtomicBool = AtomicBool::new(false);
        static EAGER_CALLS: AtomicU64 = AtomicU64::new(0);
        let allocator = AllocatorControl {
            release_now: || {
                RELEASES.fetch_add(1, Ordering::Relaxed);
            },
            release_eagerly: |on| {
                EAGER.store(on, Ordering::Relaxed);
                EAGER_CALLS.fetch_add(1, Ordering::Relaxed);
            },
        };
        let a = Some(&allocator);
        let state = || {
            (
                RELEASES.load(Ordering::Relaxed),
                EAGER.load(Ordering::Relaxed),
                EAGER_CALLS.load(Ordering::Relaxed),
            )
        };
        let g = MemoryGuard::new(1000);
        // Under ¾ of the budget: nothing to do.
        g.check(&readings(&[700]), a);
        assert!(!g.over_budget());
        assert_eq!(state(), (0, false, 0));
        assert_eq!(g.resident(), 700);
        // Near it: freed memory goes back now and from now on; what counts
        // is RSS after the release.
        g.check(&readings(&[1200, 900]), a);
        assert!(!g.over_budget());
        assert_eq!(state(), (1, true, 1));
        assert_eq!((g.releases(), g.resident()), (1, 900));
        // Still over 90 % after releasing: ingestion must wait (eager
        // already on).
        g.check(&readings(&[1300, 901]), a);
        assert!(g.over_budget());
        assert_eq!(state(), (2, true, 1));
        // Under 90 % but not under 85 %: still refused (no flapping).
        g.check(&readings(&[950, 880]), a);
        assert!(g.over_budget());
        assert_eq!(state(), (3, true, 1));
        // Under 85 % (even above ¾, released again): admitted.
        g.check(&readings(&[950, 840]), a);
        assert!(!g.over_budget());
        assert_eq!(state(), (4, true, 1));
        // Under ¾ but above half: nothing released, still eager.
        g.check(&readings(&[600]), a);
        assert!(!g.over_budget());
        assert_eq!(state(), (4, true, 1));
        // Under half: the allocator keeps freed memory again.
        g.check(&readings(&[400]), a);
        assert_eq!(state(), (4, false, 2));
        g.check(&readings(&[300]), a);
        assert_eq!(state(), (4, false, 2));
        // No allocator control (the system allocator): RSS alone decides.
        g.check(&readings(&[901]), None);
        assert!(g.over_budget());
        assert_eq!(g.releases(), 4);
        // Unreadable RSS changes nothing.
        g.check(&|| None, a);
        assert!(g.over_budget());
    }
}
