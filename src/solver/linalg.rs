//! Tiny dense linear solves on the host, in f64.
//!
//! Owns the `m x m` solves of Anderson mixing (m is a handful). Guarantees:
//! never panics on any input (wrong sizes, NaN, singular matrices): a solve
//! that cannot be done well returns `None` and the caller falls back.

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

    #[test]
    fn degenerate_inputs_give_none() {
        assert!(solve_spd(&[0.0; 4], 2, &[1.0, 1.0]).is_none());
        assert!(solve_lu(&[0.0; 4], 2, &[1.0, 1.0]).is_none());
        assert!(solve_spd(&[f64::NAN], 1, &[1.0]).is_none());
        assert!(solve_lu(&[1.0, 2.0], 2, &[1.0, 1.0]).is_none());
        assert_eq!(solve_spd(&[], 0, &[]), Some(vec![]));
    }
}
