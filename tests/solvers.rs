//! The equilibrium solvers on small problems with known answers (f64 unless
//! a test says otherwise).

use candle_core::{DType, Device, Tensor};
use deqc::solver::{
    self, solve_lu, Anderson, Broyden, Control, FixedPoint, Protection, Solution, Solver,
    SolverError, SolverKind, SolverSpec, Stop, Unroll,
};

type R<T> = Result<T, SolverError>;

/// xorshift64*: deterministic numbers in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// A random `n x n` matrix (row-major) with spectral norm `rho`.
fn matrix(rng: &mut Rng, n: usize, rho: f64) -> Vec<f64> {
    let a = rng.vec(n * n);
    let sigma = spectral_norm(&a, n);
    a.iter().map(|x| x * rho / sigma).collect()
}

/// The largest singular value, by power iteration on `A^T A`.
fn spectral_norm(a: &[f64], n: usize) -> f64 {
    let mut v = vec![1.0; n];
    let mut sigma = 0.0;
    for _ in 0..500 {
        let av: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a[i * n + j] * v[j]).sum())
            .collect();
        let atav: Vec<f64> = (0..n)
            .map(|j| (0..n).map(|i| a[i * n + j] * av[i]).sum())
            .collect();
        let norm = atav.iter().map(|x| x * x).sum::<f64>().sqrt();
        sigma = norm.sqrt();
        v = atav.iter().map(|x| x / norm).collect();
    }
    sigma
}

fn tensor(data: Vec<f64>, rows: usize, cols: usize) -> Tensor {
    Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap()
}

fn spec(kind: SolverKind, tol: f64, max_iter: usize, stop: Stop) -> SolverSpec {
    SolverSpec {
        kind,
        tol,
        max_iter,
        stop,
    }
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    rows(a)
        .iter()
        .flatten()
        .zip(rows(b).iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn all_finite(t: &Tensor) -> bool {
    rows(t).iter().flatten().all(|x| x.is_finite())
}

/// The solver kinds every test runs, with enough iterations for a tight
/// tolerance on a contraction of factor ~0.8.
fn all_kinds() -> Vec<SolverKind> {
    vec![
        SolverKind::FixedPoint { damping: 1.0 },
        SolverKind::FixedPoint { damping: 0.8 },
        SolverKind::Anderson {
            m: 5,
            beta: 1.0,
            lam: 1e-4,
        },
        SolverKind::Anderson {
            m: 3,
            beta: 0.8,
            lam: 0.0,
        },
        SolverKind::Broyden { memory: 40 },
        SolverKind::Broyden { memory: 4 },
    ]
}

/// `z = z A + b`, closed form `b (I - A)^-1`.
struct Linear {
    a: Tensor,
    b: Tensor,
    exact: Tensor,
}

fn linear(n: usize, batch: usize, rho: f64, seed: u64) -> Linear {
    let mut rng = Rng(seed);
    let a = matrix(&mut rng, n, rho);
    let b = rng.vec(batch * n);
    // z (I - A) = b  <=>  (I - A)^T z^T = b^T.
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            m[j * n + i] = f64::from(u8::from(i == j)) - a[i * n + j];
        }
    }
    let mut exact = Vec::new();
    for r in 0..batch {
        exact.extend(solve_lu(&m, n, &b[r * n..(r + 1) * n]).unwrap());
    }
    Linear {
        a: tensor(a, n, n),
        b: tensor(b, batch, n),
        exact: tensor(exact, batch, n),
    }
}

#[test]
fn linear_equilibrium_matches_closed_form_for_every_solver() {
    let p = linear(12, 3, 0.8, 7);
    let z0 = p.b.zeros_like().unwrap();
    let mut kinds = all_kinds();
    kinds.push(SolverKind::Unroll { steps: 300 });
    for stop in [Stop::Abs, Stop::Rel] {
        for kind in &kinds {
            let mut f = |z: &Tensor| -> R<Tensor> { Ok((z.matmul(&p.a)? + &p.b)?) };
            let s = solver::solve(&spec(kind.clone(), 1e-10, 400, stop), &mut f, &z0).unwrap();
            let err = max_diff(&s.z, &p.exact);
            assert!(err < 1e-8, "{kind:?} {stop:?}: error {err:e}; {}", s.stats);
            assert!(s.stats.converged, "{kind:?}: {}", s.stats);
            assert!(s.stats.stopped_by_protection.is_none());
            assert_eq!(s.stats.trace.len(), s.stats.iterations);
        }
    }
}

#[test]
fn anderson_terminates_on_a_small_linear_map_like_gmres() {
    // On a linear map in N dimensions, undamped unregularized Anderson with
    // a history of at least N + 1 spans the Krylov space after N + 1
    // residuals: the next iterate is the fixed point (up to rounding). A
    // mix-up of history slots in its Gram matrix breaks this at once, even
    // where a contraction still converges slowly. With m = 3 < N + 1 the
    // ring buffer wraps and the solve needs more iterations.
    let n = 4;
    let p = linear(n, 3, 0.95, 3);
    let z0 = p.b.zeros_like().unwrap();
    let mut f = |z: &Tensor| -> R<Tensor> { Ok((z.matmul(&p.a)? + &p.b)?) };
    let full = Anderson {
        m: n + 1,
        beta: 1.0,
        lam: 0.0,
    };
    let ctl = Control {
        tol: 1e-9,
        max_iter: 50,
        stop: Stop::Abs,
    };
    let s = full.solve(&ctl, &mut f, &z0).unwrap();
    assert!(s.stats.converged, "{}", s.stats);
    let worst: Vec<f64> = s
        .stats
        .trace
        .iter()
        .map(|r| r.iter().cloned().fold(0.0, f64::max))
        .collect();
    assert!(s.stats.iterations <= n + 3, "{} {worst:?}", s.stats);
    assert!(max_diff(&s.z, &p.exact) < 1e-8);
    let short = Anderson { m: 3, ..full };
    let s = short.solve(&ctl, &mut f, &z0).unwrap();
    assert!(
        s.stats.converged && max_diff(&s.z, &p.exact) < 1e-8,
        "{}",
        s.stats
    );
    assert!(s.stats.iterations > n + 3, "{}", s.stats);
}

/// Two states `(x: [B, 6], y: [B, 4])` flattened into one `z: [B, 10]`:
/// `x = tanh(x W1 + y W2 + u)`, `y = 0.5 tanh(x W3) + v`.
#[test]
fn multi_state_equilibrium() {
    let (b, nx, ny) = (3, 6, 4);
    let mut rng = Rng(11);
    let w1 = tensor(matrix(&mut rng, nx, 0.5), nx, nx);
    let w2 = tensor(rng.vec(ny * nx).iter().map(|x| 0.2 * x).collect(), ny, nx);
    let w3 = tensor(rng.vec(nx * ny).iter().map(|x| 0.3 * x).collect(), nx, ny);
    let u = tensor(rng.vec(b * nx), b, nx);
    let v = tensor(rng.vec(b * ny), b, ny);
    let fx = |x: &Tensor, y: &Tensor| -> R<Tensor> {
        Ok((x.matmul(&w1)? + y.matmul(&w2)? + &u)?.tanh()?)
    };
    let fy = |x: &Tensor| -> R<Tensor> { Ok(((x.matmul(&w3)?.tanh()? * 0.5)? + &v)?) };
    let z0 = Tensor::zeros((b, nx + ny), DType::F64, &Device::Cpu).unwrap();
    let mut answers = Vec::new();
    for kind in all_kinds() {
        let mut f = |z: &Tensor| -> R<Tensor> {
            let x = z.narrow(1, 0, nx)?;
            let y = z.narrow(1, nx, ny)?;
            Ok(Tensor::cat(&[fx(&x, &y)?, fy(&x)?], 1)?)
        };
        let s = solver::solve(&spec(kind.clone(), 1e-11, 300, Stop::Abs), &mut f, &z0).unwrap();
        assert!(s.stats.converged, "{kind:?}: {}", s.stats);
        // Each state satisfies its own equation.
        let x = s.z.narrow(1, 0, nx).unwrap();
        let y = s.z.narrow(1, nx, ny).unwrap();
        assert!(max_diff(&x, &fx(&x, &y).unwrap()) < 1e-10, "{kind:?}");
        assert!(max_diff(&y, &fy(&x).unwrap()) < 1e-10, "{kind:?}");
        answers.push(s.z);
    }
    for z in &answers[1..] {
        assert!(max_diff(z, &answers[0]) < 1e-9);
    }
}

/// A random symmetric `n x n` matrix with spectral norm (and radius) `rho`.
fn symmetric(rng: &mut Rng, n: usize, rho: f64) -> Vec<f64> {
    let a = rng.vec(n * n);
    let mut s = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            s[i * n + j] = a[i * n + j] + a[j * n + i];
        }
    }
    let norm = spectral_norm(&s, n);
    s.iter().map(|x| x * rho / norm).collect()
}

/// `tanh(z W + x)` with a symmetric `W`, `||W|| = 0.9`.
fn tanh_problem(dtype: DType) -> (Tensor, Tensor) {
    let (b, n) = (3, 16);
    let mut rng = Rng(3);
    let w = tensor(symmetric(&mut rng, n, 0.9), n, n)
        .to_dtype(dtype)
        .unwrap();
    let x = tensor(rng.vec(b * n).iter().map(|v| 0.3 * v).collect(), b, n)
        .to_dtype(dtype)
        .unwrap();
    (w, x)
}

fn solve_tanh(kind: SolverKind, dtype: DType, tol: f64, max_iter: usize) -> Solution {
    let (w, x) = tanh_problem(dtype);
    let mut f = |z: &Tensor| -> R<Tensor> { Ok((z.matmul(&w)? + &x)?.tanh()?) };
    let z0 = x.zeros_like().unwrap();
    solver::solve(&spec(kind, tol, max_iter, Stop::Rel), &mut f, &z0).unwrap()
}

#[test]
fn anderson_and_broyden_need_fewer_iterations_than_fixed_point() {
    let fp = solve_tanh(
        SolverKind::FixedPoint { damping: 1.0 },
        DType::F64,
        1e-8,
        500,
    );
    let aa = solve_tanh(
        SolverKind::Anderson {
            m: 5,
            beta: 1.0,
            lam: 1e-4,
        },
        DType::F64,
        1e-8,
        500,
    );
    let br = solve_tanh(SolverKind::Broyden { memory: 40 }, DType::F64, 1e-8, 500);
    for s in [&fp, &aa, &br] {
        assert!(s.stats.converged, "{}", s.stats);
    }
    eprintln!("{}\n{}\n{}", fp.stats, aa.stats, br.stats);
    assert!(
        3 * aa.stats.iterations <= fp.stats.iterations,
        "anderson {} vs fixed point {}",
        aa.stats.iterations,
        fp.stats.iterations
    );
    assert!(
        3 * br.stats.iterations <= fp.stats.iterations,
        "broyden {} vs fixed point {}",
        br.stats.iterations,
        fp.stats.iterations
    );
    assert!(max_diff(&aa.z, &fp.z) < 1e-4);
    assert!(max_diff(&br.z, &fp.z) < 1e-4);
}

#[test]
fn f32_solves_converge() {
    for kind in all_kinds() {
        let s = solve_tanh(kind.clone(), DType::F32, 1e-4, 200);
        assert_eq!(s.z.dtype(), DType::F32);
        assert!(s.stats.converged, "{kind:?}: {}", s.stats);
        assert!(all_finite(&s.z));
    }
}

#[test]
fn samples_stop_on_their_own_and_keep_their_best() {
    // Sample 0 contracts by 0.1, sample 1 by 0.9.
    let rho = tensor(vec![0.1, 0.9], 2, 1);
    let c = tensor(vec![1.0; 8], 2, 4);
    let mut f = |z: &Tensor| -> R<Tensor> { Ok((z.broadcast_mul(&rho)? + &c)?) };
    let z0 = c.zeros_like().unwrap();
    let tol = 1e-8;
    let s = FixedPoint { damping: 1.0 }
        .solve(
            &Control {
                tol,
                max_iter: 500,
                stop: Stop::Abs,
            },
            &mut f,
            &z0,
        )
        .unwrap();
    let st = &s.stats;
    assert!(st.converged);
    let (fast, slow) = (st.converged_at[0].unwrap(), st.converged_at[1].unwrap());
    assert!(fast <= 12 && slow >= 150, "{fast} {slow}");
    assert_eq!(
        st.iterations, slow,
        "the solve ends once every sample met tol"
    );
    // The fast sample kept iterating and kept improving.
    assert!(st.best_iteration[0].unwrap() > fast);
    assert!(st.residual[0] <= tol && st.residual[1] <= tol);
    let exact = tensor([vec![1.0 / 0.9; 4], vec![1.0 / 0.1; 4]].concat(), 2, 4);
    assert!(max_diff(&s.z, &exact) < 1e-7);
}

/// A map whose residual oscillates: `f(z) = z + r_k e` at its k-th call,
/// `||e|| = 1`, so the residual of the k-th iterate is `r_k` whatever the
/// solver does. Every solver must return the iterate it evaluated with the
/// smallest residual, per sample.
#[test]
fn every_solver_returns_the_best_iterate_not_the_last() {
    let r = [[1.0, 0.01, 0.5, 0.3, 0.2], [1.0, 0.5, 0.4, 0.05, 0.6]];
    let n = 4;
    let e = Tensor::full(0.5f64, (2, n), &Device::Cpu).unwrap();
    let z0 = Tensor::ones((2, n), DType::F64, &Device::Cpu).unwrap();
    for kind in all_kinds() {
        let mut inputs: Vec<Tensor> = Vec::new();
        let mut f = |z: &Tensor| -> R<Tensor> {
            let k = inputs.len();
            inputs.push(z.clone());
            let scale = tensor(vec![r[0][k], r[1][k]], 2, 1);
            Ok((z + e.broadcast_mul(&scale)?)?)
        };
        let s = solver::solve(&spec(kind.clone(), 1e-6, 5, Stop::Abs), &mut f, &z0).unwrap();
        let st = &s.stats;
        assert_eq!(st.iterations, 5);
        assert!(!st.converged);
        assert_eq!(st.best_iteration, vec![Some(2), Some(4)], "{kind:?}");
        assert!((st.residual[0] - 0.01).abs() < 1e-12, "{kind:?}");
        assert!((st.residual[1] - 0.05).abs() < 1e-12, "{kind:?}");
        assert_eq!(st.trace.len(), 5);
        assert!((st.trace[4][1] - 0.6).abs() < 1e-12);
        let want = Tensor::cat(
            &[
                inputs[1].narrow(0, 0, 1).unwrap(),
                inputs[3].narrow(0, 1, 1).unwrap(),
            ],
            0,
        )
        .unwrap();
        assert_eq!(max_diff(&s.z, &want), 0.0, "{kind:?}");
    }
}

#[test]
fn unroll_runs_exactly_its_steps_and_returns_the_last_iterate() {
    let c = tensor(vec![1.0, 2.0, 3.0, 4.0], 2, 2);
    let mut calls = 0;
    let mut f = |z: &Tensor| -> R<Tensor> {
        calls += 1;
        Ok(((z * 0.5)? + &c)?)
    };
    let z0 = c.zeros_like().unwrap();
    // A huge tol: every sample "converges" at once, unroll still runs on.
    let s = solver::solve(
        &spec(SolverKind::Unroll { steps: 7 }, 10.0, 40, Stop::Abs),
        &mut f,
        &z0,
    )
    .unwrap();
    assert_eq!(calls, 7);
    assert_eq!(s.stats.iterations, 7);
    // z_7 = c (1 - 0.5^7) / 0.5.
    let want = (&c * ((1.0 - 0.5f64.powi(7)) / 0.5)).unwrap();
    assert!(max_diff(&s.z, &want) < 1e-14);
    // The reported residual is that of z_6: ||z_7 - z_6|| = 0.5^6 ||c_b||.
    let r0 = 0.5f64.powi(6) * 5f64.sqrt();
    assert!((s.stats.residual[0] - r0).abs() < 1e-12);
}

#[test]
fn divergent_affine_map_is_stopped() {
    // z -> 3z + 1 diverges under plain iteration.
    let z0 = Tensor::zeros((3, 5), DType::F64, &Device::Cpu).unwrap();
    for kind in [
        SolverKind::FixedPoint { damping: 1.0 },
        SolverKind::FixedPoint { damping: 0.5 },
        SolverKind::Unroll { steps: 100 },
    ] {
        for stop in [Stop::Abs, Stop::Rel] {
            let mut f = |z: &Tensor| -> R<Tensor> { Ok(((z * 3.0)? + 1.0)?) };
            let s = solver::solve(&spec(kind.clone(), 1e-6, 100, stop), &mut f, &z0).unwrap();
            let p = s.stats.stopped_by_protection.clone();
            assert!(
                matches!(p, Some(Protection::BlowUp { .. })),
                "{kind:?} {stop:?}: {}",
                s.stats
            );
            assert!(s.stats.iterations < 20, "{}", s.stats);
            assert!(!s.stats.converged);
            assert!(all_finite(&s.z));
            assert!(s.stats.to_string().contains("blew up"));
        }
    }
    // Anderson and Broyden find its (repelling) fixed point -1/2.
    for kind in all_kinds().into_iter().skip(2) {
        let mut f = |z: &Tensor| -> R<Tensor> { Ok(((z * 3.0)? + 1.0)?) };
        let s = solver::solve(&spec(kind.clone(), 1e-10, 100, Stop::Abs), &mut f, &z0).unwrap();
        assert!(s.stats.converged, "{kind:?}: {}", s.stats);
        let want = Tensor::full(-0.5f64, (3, 5), &Device::Cpu).unwrap();
        assert!(max_diff(&s.z, &want) < 1e-9);
    }
}

#[test]
fn map_without_fixed_point_is_stopped_by_every_solver() {
    // f(z) = z + 1 + z^2 has no real fixed point; iterates run away.
    let z0 = Tensor::zeros((2, 3), DType::F64, &Device::Cpu).unwrap();
    let mut kinds = all_kinds();
    kinds.push(SolverKind::Unroll { steps: 200 });
    for kind in kinds {
        let mut f = |z: &Tensor| -> R<Tensor> { Ok(((z + 1.0)? + z.sqr()?)?) };
        let s = solver::solve(&spec(kind.clone(), 1e-6, 200, Stop::Abs), &mut f, &z0).unwrap();
        assert!(!s.stats.converged);
        assert!(all_finite(&s.z), "{kind:?}");
        eprintln!("{kind:?}: {}", s.stats);
    }
}

#[test]
fn nan_and_inf_from_the_map_are_stopped_and_never_returned() {
    let c = tensor(vec![1.0, -1.0, 0.5, 2.0, 0.0, 1.0], 2, 3);
    let z0 = c.zeros_like().unwrap();
    let mut kinds = all_kinds();
    kinds.push(SolverKind::Unroll { steps: 10 });
    for bad in [f64::NAN, f64::INFINITY] {
        for sample in [0, 1] {
            for kind in &kinds {
                let mut calls = 0;
                let mut f = |z: &Tensor| -> R<Tensor> {
                    calls += 1;
                    let fz = ((z * 0.5)? + &c)?.tanh()?;
                    if calls < 4 {
                        return Ok(fz);
                    }
                    let mut poison = vec![1.0; 6];
                    poison[sample * 3 + 1] = bad;
                    Ok((fz * tensor(poison, 2, 3))?)
                };
                let s =
                    solver::solve(&spec(kind.clone(), 1e-12, 10, Stop::Rel), &mut f, &z0).unwrap();
                assert_eq!(
                    s.stats.stopped_by_protection,
                    Some(Protection::NonFinite {
                        iteration: 4,
                        sample
                    }),
                    "{kind:?}"
                );
                assert!(all_finite(&s.z), "{kind:?}");
                assert_eq!(s.stats.iterations, 4);
                assert!(s.stats.residual.iter().all(|r| r.is_finite()));
                assert!(s.stats.to_string().contains("NaN/Inf"));
            }
        }
    }
}

#[test]
fn nan_at_the_first_evaluation_returns_the_start() {
    let z0 = Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap();
    let mut f = |z: &Tensor| -> R<Tensor> { Ok((z * f64::NAN)?) };
    let s = Anderson::default()
        .solve(
            &Control {
                tol: 1e-4,
                max_iter: 10,
                stop: Stop::Rel,
            },
            &mut f,
            &z0,
        )
        .unwrap();
    assert_eq!(max_diff(&s.z, &z0), 0.0);
    assert_eq!(s.stats.residual, vec![f64::INFINITY; 2]);
    assert_eq!(s.stats.best_iteration, vec![None, None]);
}

#[test]
fn zero_iterations_return_the_start_unmeasured() {
    let z0 = Tensor::ones((2, 3), DType::F64, &Device::Cpu).unwrap();
    for kind in all_kinds() {
        let mut f = |z: &Tensor| -> R<Tensor> { Ok(z.clone()) };
        let s = solver::solve(&spec(kind, 1e-4, 0, Stop::Rel), &mut f, &z0).unwrap();
        assert_eq!(s.stats.iterations, 0);
        assert!(s.stats.residual.iter().all(|r| r.is_nan()));
        assert!(!s.stats.converged);
        assert_eq!(max_diff(&s.z, &z0), 0.0);
    }
}

#[derive(Debug)]
enum MyError {
    #[allow(dead_code)]
    Solver(SolverError),
    Mine(&'static str),
}

impl From<SolverError> for MyError {
    fn from(e: SolverError) -> Self {
        MyError::Solver(e)
    }
}

impl From<candle_core::Error> for MyError {
    fn from(e: candle_core::Error) -> Self {
        MyError::Solver(e.into())
    }
}

#[test]
fn errors_are_reported_not_panicked() {
    let ctl = Control {
        tol: 1e-4,
        max_iter: 10,
        stop: Stop::Rel,
    };
    let mut id = |z: &Tensor| -> R<Tensor> { Ok(z.clone()) };
    let flat = Tensor::ones(4, DType::F64, &Device::Cpu).unwrap();
    assert!(matches!(
        FixedPoint::default().solve(&ctl, &mut id, &flat),
        Err(SolverError::BadStart(_))
    ));
    let ints = Tensor::ones((2, 2), DType::U32, &Device::Cpu).unwrap();
    assert!(matches!(
        FixedPoint::default().solve(&ctl, &mut id, &ints),
        Err(SolverError::BadDType(_))
    ));
    let nan = tensor(vec![0.0, 1.0, f64::NAN, 0.0], 2, 2);
    assert!(matches!(
        Broyden { memory: 3 }.solve(&ctl, &mut id, &nan),
        Err(SolverError::NonFiniteStart { sample: 1 })
    ));
    let z0 = tensor(vec![0.0; 4], 2, 2);
    let mut wide = |z: &Tensor| -> R<Tensor> { Ok(Tensor::cat(&[z, z], 1)?) };
    assert!(matches!(
        Anderson::default().solve(&ctl, &mut wide, &z0),
        Err(SolverError::MapShape { .. })
    ));
    let mut f32s = |z: &Tensor| -> R<Tensor> { Ok(z.to_dtype(DType::F32)?) };
    assert!(matches!(
        Unroll { steps: 2 }.solve(&ctl, &mut f32s, &z0),
        Err(SolverError::MapDType { .. })
    ));
    for bad in [
        SolverKind::FixedPoint { damping: 0.0 },
        SolverKind::FixedPoint { damping: 1.5 },
        SolverKind::Anderson {
            m: 0,
            beta: 1.0,
            lam: 0.0,
        },
        SolverKind::Anderson {
            m: 2,
            beta: f64::NAN,
            lam: 0.0,
        },
        SolverKind::Anderson {
            m: 2,
            beta: 1.0,
            lam: -1.0,
        },
    ] {
        let r = solver::solve(&spec(bad, 1e-4, 10, Stop::Rel), &mut id, &z0);
        assert!(matches!(r, Err(SolverError::InvalidSetting(_))));
    }
    let r = solver::solve(
        &spec(SolverKind::Broyden { memory: 2 }, -1.0, 10, Stop::Rel),
        &mut id,
        &z0,
    );
    assert!(matches!(r, Err(SolverError::InvalidSetting(_))));
    // The map's own error comes back unchanged.
    let mut failing = |_: &Tensor| -> Result<Tensor, MyError> { Err(MyError::Mine("boom")) };
    let r = solver::solve(&SolverSpec::default_forward(), &mut failing, &z0);
    assert!(matches!(r, Err(MyError::Mine("boom"))));
}

#[test]
fn summary_line() {
    let s = solve_tanh(
        SolverKind::Anderson {
            m: 5,
            beta: 1.0,
            lam: 1e-4,
        },
        DType::F64,
        1e-4,
        40,
    );
    let line = s.stats.to_string();
    assert!(line.starts_with("anderson: "), "{line}");
    assert!(line.contains("converged 3/3"), "{line}");
    assert!(line.contains("(rel, tol 1e-4)"), "{line}");
    assert!(!line.contains("stopped"), "{line}");
    assert_eq!(s.stats.max_trace().len(), s.stats.iterations);
    assert!(s.stats.max_trace()[0] >= s.stats.mean_trace()[0]);
}
