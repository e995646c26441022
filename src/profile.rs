//! Measurement for `deqc bench`: a counting global allocator and cheap
//! scoped timers by category.
//!
//! Owns three things:
//! - [`CountingAlloc`], a wrapper of mimalloc that counts allocations and
//!   live heap bytes (with their peak). The `deqc` binary installs it as
//!   its `#[global_allocator]` and calls [`configure_heap`] first; a
//!   program that does not (the tests, a library user) reads
//!   [`alloc_snapshot`] as `None`.
//! - Scoped timers ([`scope`]) that attribute wall time to a [`Category`]
//!   (gemm/conv library calls, fused kernels, solver bookkeeping, graph
//!   work). Time is *exclusive*: entering a nested scope pauses the outer
//!   one, so a matmul inside a solver's map counts as gemm, not as solver
//!   bookkeeping. Timers are off unless [`set_timing`] turned them on; off,
//!   a scope costs one relaxed atomic load.
//! - Per-op times ([`record_op`], `deqc bench --ops`): the wall time of each
//!   op and fused kernel the executor runs, added up by a description of
//!   the op and its operands' shapes. Off unless [`set_op_timing`] turned
//!   it on (one relaxed atomic load per op then).
//!
//! Guarantees: counting never changes what the allocator returns; timers
//! account on the thread that opens them (the executor and the solvers run
//! on the calling thread; library kernels may fan out to their own pool
//! inside one scope, which is then wall time of that call).

use std::alloc::{GlobalAlloc, Layout};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mimalloc::MiMalloc;

use crate::ir::Op;

// ---- heap settings -------------------------------------------------------

/// mimalloc's option `mi_option_purge_delay` (its place in `mi_option_e`,
/// which the Rust bindings do not name; `purge_delay_is_where_we_set_it`
/// checks it against the option's default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keep freed memory in mimalloc's arenas for reuse, unless the user set
/// `MIMALLOC_PURGE_DELAY` themselves. The binary's heap is mimalloc rather
/// than glibc's malloc for its transparent huge pages: a DEQ step walks a
/// few hundred megabytes of tensors, which in 4 KB pages miss the TLB at
/// every turn (the DEQ transformer's step about 4.5% shorter on 2 threads,
/// `docs/performance-log.md`, "Eighth sitting"). Purged pages would be
/// faulted in again by the next solver iteration (about 1,200 faults a
/// transformer step), so nothing is purged; the cost is freed memory held
/// by the process until it exits, as glibc's raised thresholds did before.
/// Called once by the `deqc` binary before anything allocates much.
pub fn configure_heap() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's global options; no allocation is
        // in flight and the value (-1: never purge) is a documented one.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

// ---- allocation counting -------------------------------------------------

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static PEAK_BYTES: AtomicIsize = AtomicIsize::new(0);

/// mimalloc, counting allocations (a `realloc` counts as one) and live
/// bytes.
pub struct CountingAlloc;

impl CountingAlloc {
    fn grew(bytes: usize) {
        let live = LIVE_BYTES.fetch_add(bytes as isize, Relaxed) + bytes as isize;
        PEAK_BYTES.fetch_max(live, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to mimalloc; the counters are
// atomics updated after the fact and never affect the returned memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = MiMalloc.alloc(layout);
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = MiMalloc.alloc_zeroed(layout);
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            Self::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        MiMalloc.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as isize, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = MiMalloc.realloc(ptr, layout, new_size);
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            if new_size >= layout.size() {
                Self::grew(new_size - layout.size());
            } else {
                LIVE_BYTES.fetch_sub((layout.size() - new_size) as isize, Relaxed);
            }
        }
        p
    }
}

/// The allocator's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocSnapshot {
    /// Allocations (and reallocations) since the program started.
    pub allocations: u64,
    /// Heap bytes in use now.
    pub live_bytes: isize,
    /// The most heap bytes in use since the last [`reset_peak`].
    pub peak_bytes: isize,
}

/// The counters, or `None` when [`CountingAlloc`] is not the global
/// allocator (nothing was ever counted).
pub fn alloc_snapshot() -> Option<AllocSnapshot> {
    let allocations = ALLOCATIONS.load(Relaxed);
    (allocations > 0).then(|| AllocSnapshot {
        allocations,
        live_bytes: LIVE_BYTES.load(Relaxed),
        peak_bytes: PEAK_BYTES.load(Relaxed),
    })
}

/// Start a new peak: from now on `peak_bytes` is the most in use since.
pub fn reset_peak() {
    PEAK_BYTES.store(LIVE_BYTES.load(Relaxed), Relaxed);
}

// ---- scoped timers -------------------------------------------------------

/// Where time goes in a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Matrix products and convolutions (library calls: gemm, candle).
    Gemm,
    /// Fused elementwise kernels.
    Fused,
    /// A solver's own work: mixing, residual norms, masks, best iterates.
    Solver,
    /// Graph work inside a solver's map that is neither of the above
    /// (counted in "everything else" by `deqc bench`).
    Other,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Gemm,
        Category::Fused,
        Category::Solver,
        Category::Other,
    ];

    fn index(self) -> usize {
        match self {
            Category::Gemm => 0,
            Category::Fused => 1,
            Category::Solver => 2,
            Category::Other => 3,
        }
    }

    /// The category an op's kernel counts in (its [`Op::info`] row says
    /// whether the kernel is a matrix product).
    pub fn of(op: &Op) -> Category {
        if op.info().gemm {
            Category::Gemm
        } else {
            Category::Other
        }
    }
}

static TIMING: AtomicBool = AtomicBool::new(false);

static OP_TIMING: AtomicBool = AtomicBool::new(false);

/// Total time and calls by op description, while [`OP_TIMING`] is on.
static OP_TIMES: Mutex<BTreeMap<String, (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Turn the per-op times on or off (off by default).
pub fn set_op_timing(on: bool) {
    OP_TIMING.store(on, Relaxed);
}

/// Whether per-op times are being recorded (on this thread).
pub fn op_timing() -> bool {
    OP_TIMING.load(Relaxed) && !UNRECORDED.with(std::cell::Cell::get)
}

thread_local! {
    /// Set inside [`unrecorded`].
    static UNRECORDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `work` without recording its per-op times on this thread. For the
/// parts of a batch evaluated in parallel (`exec::parts`) other than the
/// caller's: the per-op table then counts each op once, at the caller's
/// part's shapes and wall time, and still adds up to the step's time.
pub fn unrecorded<R>(work: impl FnOnce() -> R) -> R {
    crate::threads::with_flag_set(&UNRECORDED, work)
}

/// Add one call of the op described by `what` that took `took`.
pub fn record_op(what: String, took: Duration) {
    if let Ok(mut times) = OP_TIMES.lock() {
        let entry = times.entry(what).or_insert((Duration::ZERO, 0));
        entry.0 += took;
        entry.1 += 1;
    }
}

/// The per-op times recorded since the last call (description, total
/// time, calls), by description; and reset them. (`deqc bench` adds them
/// up over its steps and orders them then.)
pub fn take_op_times() -> Vec<(String, Duration, u64)> {
    let times = OP_TIMES
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default();
    times.into_iter().map(|(k, (d, n))| (k, d, n)).collect()
}

/// Turn the scoped timers on or off (off by default).
pub fn set_timing(on: bool) {
    TIMING.store(on, Relaxed);
}

struct Timers {
    current: Option<Category>,
    since: Instant,
    totals: [Duration; 4],
}

impl Timers {
    /// Charge the time since the last switch to the running category, then
    /// run `next` instead; returns the category that was running.
    fn switch_to(&mut self, next: Option<Category>) -> Option<Category> {
        let now = Instant::now();
        if let Some(c) = self.current {
            self.totals[c.index()] += now - self.since;
        }
        self.since = now;
        std::mem::replace(&mut self.current, next)
    }
}

thread_local! {
    static TIMERS: RefCell<Timers> = RefCell::new(Timers {
        current: None,
        since: Instant::now(),
        totals: [Duration::ZERO; 4],
    });
}

/// An open timer; time stops counting for its category when it drops.
#[must_use = "the scope times until it is dropped"]
pub struct Scope {
    /// The category that was running before, resumed on drop.
    outer: Option<Category>,
    active: bool,
}

/// Count the time until the returned guard drops as `category`.
pub fn scope(category: Category) -> Scope {
    if !TIMING.load(Relaxed) {
        return Scope {
            outer: None,
            active: false,
        };
    }
    let outer = TIMERS.with(|t| t.borrow_mut().switch_to(Some(category)));
    Scope {
        outer,
        active: true,
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        TIMERS.with(|t| t.borrow_mut().switch_to(self.outer));
    }
}

/// The time counted on this thread per category, in [`Category::ALL`]
/// order, and reset them to zero.
pub fn take_times() -> [Duration; 4] {
    TIMERS.with(|t| std::mem::replace(&mut t.borrow_mut().totals, [Duration::ZERO; 4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_delay_is_where_we_set_it() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // No other option of this mimalloc (v3) defaults to 1000 (its
        // purge delay); a moved index fails here instead of silently
        // changing another setting.
        // SAFETY: reads one global option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, 1000);
    }

    fn busy(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::black_box(0);
        }
    }

    #[test]
    fn matrix_products_count_as_gemm() {
        use crate::ir::op::ConvAttrs;
        let conv = ConvAttrs {
            spatial: 2,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        };
        for op in [Op::MatMul, Op::Conv(conv)] {
            assert_eq!(Category::of(&op), Category::Gemm, "{}", op.name());
        }
        for op in [Op::Tanh, Op::Add, Op::Embedding] {
            assert_eq!(Category::of(&op), Category::Other, "{}", op.name());
        }
    }

    // One test: the switch is global, and parallel tests would race on it.
    #[test]
    fn scopes_count_exclusive_time_and_nothing_when_off() {
        set_timing(false);
        {
            let _s = scope(Category::Gemm);
            busy(Duration::from_millis(5));
        }
        assert_eq!(take_times(), [Duration::ZERO; 4]);

        set_timing(true);
        {
            let _solver = scope(Category::Solver);
            busy(Duration::from_millis(10));
            {
                let _gemm = scope(Category::Gemm);
                busy(Duration::from_millis(100));
            }
            busy(Duration::from_millis(10));
        }
        set_timing(false);
        let [gemm, fused, solver, other] = take_times();
        assert!(gemm >= Duration::from_millis(100), "{gemm:?}");
        assert!(solver >= Duration::from_millis(20), "{solver:?}");
        // The inner 100 ms are not the solver's.
        assert!(solver < Duration::from_millis(100), "{solver:?}");
        assert_eq!((fused, other), (Duration::ZERO, Duration::ZERO));
    }
}
