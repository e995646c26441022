//! Tiny dense linear solves on the host, in f64.
//!
//! Owns the `m x m` solves of Anderson mixing (m is a handful). Guarantees:
//! never panics on any input (wrong sizes, NaN, singular matrices): a solve
//! that cannot be done well returns `None` and the caller falls back.
//! [`SpdLanes`] solves [`LANES`] such systems at once with each lane's bits
//! those of [`solve_spd_into`]: one sample's solve is a chain of divisions
//! and square roots, each waiting on the last, so solving several samples
//! side by side fills the wait (a DEQ-MLP solves 128 per iteration).

/// Solve `a x = rhs` for a symmetric positive definite `a` (row-major
/// `n x n`) by Cholesky. `None` if `a` is not numerically positive definite,
/// the sizes disagree, or the result is not finite.
pub fn solve_spd(a: &[f64], n: usize, rhs: &[f64]) -> Option<Vec<f64>> {
    let (mut l, mut y, mut x) = (vec![0.0; n * n], vec![0.0; n], vec![0.0; n]);
    solve_spd_into(a, n, rhs, (&mut l, &mut y), &mut x).then_some(x)
}

/// [`solve_spd`] into `x` with caller-owned scratch `(l: n x n, y: n)`, so
/// that a solve per sample and iteration allocates nothing. `false` where
/// `solve_spd` gives `None`.
pub fn solve_spd_into(
    a: &[f64],
    n: usize,
    rhs: &[f64],
    (l, y): (&mut [f64], &mut [f64]),
    x: &mut [f64],
) -> bool {
    if a.len() != n * n || rhs.len() != n || l.len() != n * n || y.len() != n || x.len() != n {
        return false;
    }
    // a = l l^T, l lower triangular, row-major.
    l.fill(0.0);
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if !s.is_finite() || s <= 0.0 {
                    return false;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    // l y = rhs, then l^T x = y.
    for i in 0..n {
        let mut s = rhs[i];
        for k in 0..i {
            s -= l[i * n + k] * y[k];
        }
        y[i] = s / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x.iter().all(|v| v.is_finite())
}

/// How many systems [`SpdLanes`] solves at once.
pub const LANES: usize = 8;

/// Scratch for [`SpdLanes::solve`]: `LANES` systems of one size `n`,
/// element `(i, j)` of every lane's matrix side by side.
pub struct SpdLanes {
    n: usize,
    /// The matrices, `a[i * n + j][lane]`; the caller fills them.
    pub a: Vec<[f64; LANES]>,
    l: Vec<[f64; LANES]>,
    y: Vec<[f64; LANES]>,
    /// The solutions, `x[i][lane]`, where [`SpdLanes::solve`] succeeded.
    pub x: Vec<[f64; LANES]>,
}

impl SpdLanes {
    pub fn new(n: usize) -> SpdLanes {
        SpdLanes {
            n,
            a: vec![[0.0; LANES]; n * n],
            l: vec![[0.0; LANES]; n * n],
            y: vec![[0.0; LANES]; n],
            x: vec![[0.0; LANES]; n],
        }
    }

    /// Solve every lane's `a x = 1` as [`solve_spd_into`] does, operation
    /// for operation (no fused multiply-adds, the same order); `ok[lane]`
    /// is its `true`. A failed lane's `x` is meaningless.
    pub fn solve(&mut self) -> [bool; LANES] {
        let n = self.n;
        let (a, l, y, x) = (&self.a, &mut self.l, &mut self.y, &mut self.x);
        let mut ok = [true; LANES];
        for i in 0..n {
            for j in 0..=i {
                let mut s = a[i * n + j];
                for k in 0..j {
                    let (p, q) = (l[i * n + k], l[j * n + k]);
                    for t in 0..LANES {
                        s[t] -= p[t] * q[t];
                    }
                }
                if i == j {
                    for t in 0..LANES {
                        ok[t] &= s[t].is_finite() && s[t] > 0.0;
                        l[i * n + i][t] = s[t].sqrt();
                    }
                } else {
                    let d = l[j * n + j];
                    for t in 0..LANES {
                        l[i * n + j][t] = s[t] / d[t];
                    }
                }
            }
        }
        for i in 0..n {
            let mut s = [1.0; LANES];
            for k in 0..i {
                let (p, q) = (l[i * n + k], y[k]);
                for t in 0..LANES {
                    s[t] -= p[t] * q[t];
                }
            }
            let d = l[i * n + i];
            for t in 0..LANES {
                y[i][t] = s[t] / d[t];
            }
        }
        for i in (0..n).rev() {
            let mut s = y[i];
            for k in i + 1..n {
                let (p, q) = (l[k * n + i], x[k]);
                for t in 0..LANES {
                    s[t] -= p[t] * q[t];
                }
            }
            let d = l[i * n + i];
            for t in 0..LANES {
                x[i][t] = s[t] / d[t];
            }
        }
        for xi in x.iter() {
            for t in 0..LANES {
                ok[t] &= xi[t].is_finite();
            }
        }
        ok
    }
}

/// Solve `a x = rhs` (row-major `n x n`) by Gaussian elimination with
/// partial pivoting. `None` if a pivot vanishes, the sizes disagree, or the
/// result is not finite.
pub fn solve_lu(a: &[f64], n: usize, rhs: &[f64]) -> Option<Vec<f64>> {
    if a.len() != n * n || rhs.len() != n {
        return None;
    }
    let mut m = a.to_vec();
    let mut x = rhs.to_vec();
    let scale = a.iter().fold(0.0f64, |s, v| s.max(v.abs()));
    for col in 0..n {
        let pivot =
            (col..n).max_by(|&i, &j| m[i * n + col].abs().total_cmp(&m[j * n + col].abs()))?;
        let p = m[pivot * n + col];
        if !p.is_finite() || p.abs() <= scale * 1e-14 {
            return None;
        }
        if pivot != col {
            for k in 0..n {
                m.swap(col * n + k, pivot * n + k);
            }
            x.swap(col, pivot);
        }
        for row in col + 1..n {
            let factor = m[row * n + col] / p;
            for k in col..n {
                m[row * n + k] -= factor * m[col * n + k];
            }
            x[row] -= factor * x[col];
        }
    }
    for i in (0..n).rev() {
        let mut s = x[i];
        for k in i + 1..n {
            s -= m[i * n + k] * x[k];
        }
        x[i] = s / m[i * n + i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn cholesky_and_lu_agree_on_spd() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let x = [1.0, -2.0, 0.5];
        let rhs: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum())
            .collect();
        assert!(close(&solve_spd(&a, 3, &rhs).unwrap(), &x));
        assert!(close(&solve_lu(&a, 3, &rhs).unwrap(), &x));
    }

    #[test]
    fn lu_pivots() {
        // A zero leading entry needs a row swap.
        let a = [0.0, 1.0, 1.0, 0.0];
        assert!(close(&solve_lu(&a, 2, &[2.0, 3.0]).unwrap(), &[3.0, 2.0]));
        assert!(solve_spd(&a, 2, &[2.0, 3.0]).is_none());
    }

    /// Every lane gives `solve_spd_into`'s bits and verdict, failing lanes
    /// (not positive definite, NaN, a zero matrix) beside good ones.
    #[test]
    fn lanes_give_the_bits_of_one_solve() {
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        for n in 1..=6 {
            for round in 0..20 {
                let mut lanes = SpdLanes::new(n);
                let mut singles = Vec::new();
                for t in 0..LANES {
                    // B B^T + ridge: positive definite, of many scales.
                    let b: Vec<f64> = (0..n * n).map(|_| next()).collect();
                    let scale = 10f64.powi((round % 9) - 4);
                    let mut a = vec![0.0; n * n];
                    for i in 0..n {
                        for j in 0..n {
                            a[i * n + j] =
                                scale * (0..n).map(|k| b[i * n + k] * b[j * n + k]).sum::<f64>();
                        }
                        a[i * n + i] += scale * 1e-3;
                    }
                    match (round as usize + t) % 7 {
                        0 => a[n * n - 1] = -1.0,
                        1 => a[0] = f64::NAN,
                        2 => a.fill(0.0),
                        _ => {}
                    }
                    for (k, v) in a.iter().enumerate() {
                        lanes.a[k][t] = *v;
                    }
                    let (mut l, mut y, mut x) = (vec![0.0; n * n], vec![0.0; n], vec![0.0; n]);
                    let ok = solve_spd_into(&a, n, &vec![1.0; n], (&mut l, &mut y), &mut x);
                    singles.push((ok, x));
                }
                let ok = lanes.solve();
                for (t, (want_ok, want_x)) in singles.iter().enumerate() {
                    assert_eq!(ok[t], *want_ok, "n {n} round {round} lane {t}");
                    if *want_ok {
                        let got: Vec<u64> = lanes.x.iter().map(|x| x[t].to_bits()).collect();
                        let want: Vec<u64> = want_x.iter().map(|x| x.to_bits()).collect();
                        assert_eq!(got, want, "n {n} round {round} lane {t}");
                    }
                }
            }
        }
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert!(solve_spd(&[0.0; 4], 2, &[1.0, 1.0]).is_none());
        assert!(solve_lu(&[0.0; 4], 2, &[1.0, 1.0]).is_none());
        assert!(solve_spd(&[f64::NAN], 1, &[1.0]).is_none());
        assert!(solve_lu(&[1.0, 2.0], 2, &[1.0, 1.0]).is_none());
        assert_eq!(solve_spd(&[], 0, &[]), Some(vec![]));
    }
}
