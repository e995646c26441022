//! The size of the CPU thread pool: `--threads N` and `threads = N`.
//!
//! Owns the one place that sizes it. candle runs its CPU kernels on rayon's
//! global pool and sizes gemm's matrix products (and its own pool) from
//! `RAYON_NUM_THREADS`, read at each product; so both are set, before the
//! first tensor is computed. Guarantees: after [`configure`] returns `Ok`,
//! rayon's global pool has exactly `n` threads and candle's matrix products
//! use `n` threads (none when `n` is 1); a count outside `1..=MAX_THREADS`
//! or a pool already started with another size is an error, never ignored.
//! [`one_pool`] keeps candle's own elementwise pool from starting;
//! [`on_pool`] runs a command's work on a thread of the pool while the
//! others spin for work; it returns (or panics) when the work does.
//! [`serially`] keeps the ops of one part of a parallel evaluation on its
//! thread ([`available`] is what ops size their splits with).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::sema::spec::MAX_THREADS;

/// The threads of rayon's global pool (started with rayon's default, or
/// `RAYON_NUM_THREADS`, if [`configure`] was not called).
pub fn in_use() -> usize {
    rayon::current_num_threads()
}

thread_local! {
    /// Set inside [`serially`]: ops started on this thread stay on it.
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// The threads an op started on this thread may spread its work over:
/// the pool's size, or 1 inside [`serially`]. Kernels, matrix products and
/// convolutions size their parallel splits with it.
pub fn available() -> usize {
    if SERIAL.with(Cell::get) {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Run `work` with every op it starts on this thread kept to this thread
/// ([`available`] is 1 meanwhile; restored on return and on panic). For
/// work that is itself one of several parts running in parallel
/// (`exec::parts`), where splitting each op again would only add
/// synchronization.
pub fn serially<R>(work: impl FnOnce() -> R) -> R {
    with_flag_set(&SERIAL, work)
}

/// Run `work` with the thread-local `flag` set, restoring its value on
/// return and on panic.
pub(crate) fn with_flag_set<R>(
    flag: &'static std::thread::LocalKey<Cell<bool>>,
    work: impl FnOnce() -> R,
) -> R {
    struct Restore(&'static std::thread::LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            self.0.with(|s| s.set(self.1));
        }
    }
    let _restore = Restore(flag, flag.with(|s| s.replace(true)));
    work()
}

/// Keep candle's separate pool for elementwise ops from starting, unless
/// the user set `CANDLE_NUM_THREADS`. Its idle workers spin for a while
/// after each op, taking cores from rayon's pool, where the fused kernels,
/// matrix products and solver loops run (DEQ transformer step about 8%
/// faster on 2 cores without it). The `deqc` binary calls this first thing,
/// before any thread or tensor exists.
pub fn one_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Run `work` on a thread of rayon's global pool (starting it, at the size
/// [`configure`] gave it, if it has not started) and wait for it, the
/// other threads of the pool spinning for work meanwhile.
///
/// Each parallel kernel, matrix product and solver pass forked from
/// inside the pool runs its first share on the forking thread and hands
/// the rest to the others; forked from outside (the main thread), every
/// one of the hundreds per training step was injected into the pool, woke
/// its workers and put the caller to sleep until they finished (DEQ
/// transformer step 8–13% shorter on 2 cores).
///
/// Between two forks rayon's idle workers go to sleep after a few dozen
/// rounds of looking for work, and waking one again took about 0.1 ms
/// here: a third of a small matrix product's time, paid at every fork.
/// So, as OpenMP's busy-wait policy does, the other workers stay awake
/// while the command runs: each runs a job that executes any pending work
/// of the pool and otherwise spins, until `work` returns or panics
/// (transformer and MDEQ steps 8–9% shorter on 2 cores, `docs/performance-log.md`).
/// The cost is a busy core during the command's serial stretches.
/// Only the outermost call spins; nested or concurrent calls just run
/// their work in the pool. Call it after [`configure`]: it starts the pool.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let first = SPINNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    if !first {
        return rayon::scope(|_| work());
    }
    let _release = SetOnDrop(&SPINNING, false);
    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        // Spawned first, so they are the oldest jobs on this thread's
        // queue: a thief takes them before any job of `work`, and this
        // thread never waits for a stolen job while a spinner is still
        // queued behind it (it would run it and wait for itself).
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(|_| spin_until(&done));
        }
        let _finish = SetOnDrop(&done, true);
        work()
    })
}

/// Whether an [`on_pool`] call has spinners running.
static SPINNING: AtomicBool = AtomicBool::new(false);

/// Execute pending jobs of the pool, or spin, until `done` is set. Between
/// two looks that found nothing the spinner yields its core to any other
/// runnable thread (a system call of about a microsecond when there is
/// none, far below a wake-up), so that another process's threads on an
/// oversubscribed machine still run, and many spinners on a large machine
/// do not crowd the queues they all scan. After [`BLOCK_TIME`] without
/// work (a serial stretch: loading data, writing a checkpoint) it naps
/// between looks instead, as OpenMP's threads go to sleep after theirs, so
/// a long serial stretch does not keep every core busy.
fn spin_until(done: &AtomicBool) {
    let mut last_work = Instant::now();
    while !done.load(Ordering::Acquire) {
        if matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
            last_work = Instant::now();
        } else if last_work.elapsed() < BLOCK_TIME {
            std::thread::yield_now();
        } else {
            std::thread::sleep(NAP);
        }
    }
}

/// How long a spinner keeps spinning after it last found work.
const BLOCK_TIME: Duration = Duration::from_millis(5);

/// A spinner's nap between looks after [`BLOCK_TIME`] without work.
const NAP: Duration = Duration::from_micros(200);

/// Stores its value in its flag when dropped, also while a panic unwinds.
struct SetOnDrop<'a>(&'a AtomicBool, bool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(self.1, Ordering::Release);
    }
}

/// Size the CPU pool to `n` threads; returns the size observed afterwards.
pub fn configure(n: usize) -> Result<usize, String> {
    if !(1..=MAX_THREADS).contains(&n) {
        return Err(format!(
            "{n} threads: expected a number of threads from 1 to {MAX_THREADS}"
        ));
    }
    // Read by candle for each matrix product and by rayon for its pool;
    // set while no other thread of ours is running.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());

    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    let observed = in_use();
    if observed != n {
        return Err(match built {
            Err(e) => format!(
                "cannot size the CPU pool to {n} threads: it already runs with {observed} ({e})"
            ),
            Ok(()) => format!("asked for {n} threads, the CPU pool has {observed}"),
        });
    }
    let gemm = candle_core::utils::get_num_threads();
    if gemm != n {
        return Err(format!(
            "asked for {n} threads, candle's matrix products would use {gemm}"
        ));
    }
    Ok(observed)
}

/// Parse `--threads N` (clap value parser).
pub fn parse_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a number of threads from 1 to {MAX_THREADS}, found `{text}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_parse_within_range_only() {
        assert_eq!(parse_count("1"), Ok(1));
        assert_eq!(parse_count("16"), Ok(16));
        for bad in ["0", "-1", "two", "", "1.5", "1025"] {
            let e = parse_count(bad).unwrap_err();
            assert!(e.contains("from 1 to 1024"), "{bad}: {e}");
        }
        // Out of range is refused before anything global changes.
        assert!(configure(0).is_err());
        assert!(configure(MAX_THREADS + 1).is_err());
    }

    /// Run `f` on another thread; fail instead of hanging.
    fn within_a_minute<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("on_pool hung")
    }

    /// The work's result comes back, parallel work inside it is complete,
    /// nested and concurrent calls finish, and a panic in the work reaches
    /// the caller (the spinners stop) and leaves the pool usable.
    #[test]
    fn work_on_the_pool_returns_nests_and_panics_without_hanging() {
        use rayon::prelude::*;
        let sum = within_a_minute(|| {
            on_pool(|| (0..100_000u64).into_par_iter().map(|x| x % 7).sum::<u64>())
        });
        assert_eq!(sum, (0..100_000u64).map(|x| x % 7).sum::<u64>());
        let nested = within_a_minute(|| on_pool(|| on_pool(|| rayon::join(|| 1, || 2))));
        assert_eq!(nested, (1, 2));
        let concurrent = within_a_minute(|| {
            let others: Vec<_> = (0..4u64)
                .map(|i| {
                    std::thread::spawn(move || {
                        on_pool(|| (0..10_000u64).into_par_iter().map(|x| x * i).sum::<u64>())
                    })
                })
                .collect();
            others
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .sum::<u64>()
        });
        assert_eq!(concurrent, 6 * (0..10_000u64).sum::<u64>());
        let panicked = within_a_minute(|| {
            std::panic::catch_unwind(|| on_pool(|| -> u32 { panic!("inside the pool") })).is_err()
        });
        assert!(panicked);
        assert!(!SPINNING.load(Ordering::Acquire), "spinners left running");
        assert_eq!(within_a_minute(|| on_pool(|| 5)), 5);
    }

    /// A spinner that has been idle past its block time (napping) still
    /// stops when told to.
    #[test]
    fn an_idle_spinner_stops_when_done() {
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let spinner = std::thread::spawn(move || spin_until(&flag));
        std::thread::sleep(BLOCK_TIME * 4);
        done.store(true, Ordering::Release);
        within_a_minute(move || spinner.join().expect("spinner"));
    }
}
