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
//! [`on_pool`] runs a command's work on a thread of the pool.

use crate::sema::spec::MAX_THREADS;

/// The threads of rayon's global pool (started with rayon's default, or
/// `RAYON_NUM_THREADS`, if [`configure`] was not called).
pub fn in_use() -> usize {
    rayon::current_num_threads()
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
/// [`configure`] gave it, if it has not started) and wait for it.
///
/// Each parallel kernel, matrix product and solver pass forked from
/// inside the pool runs its first share on the forking thread and hands
/// the rest to the others; forked from outside (the main thread), every
/// one of the hundreds per training step was injected into the pool, woke
/// its workers and put the caller to sleep until they finished. DEQ
/// transformer step 8–13% shorter on 2 cores (`docs/architecture.md`).
/// Call it after [`configure`]: it starts the pool.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
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
}
