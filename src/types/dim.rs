//! Symbolic dimensions: integer polynomials over named dimensions.
//!
//! Owns the arithmetic of tensor dimensions. A [`Dim`] is a sum of integer
//! multiples of monomials over atoms (a symbolic name such as `B`, or an
//! opaque floor division that could not be simplified). Guarantees: values
//! are kept in one normal form, so two dims are structurally equal exactly
//! when they are equal as polynomials (`(T + 2) - 2` is `T`, `B * 4 * 32` is
//! `128 * B`); a division is exact only when it provably is, otherwise it
//! stays as written (`2 * (N / 2)`).

use std::collections::BTreeMap;
use std::fmt;

/// An indivisible factor of a monomial.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Atom {
    /// A named dimension. `rigid` names are fixed by the data at run time
    /// (a model's `B`); non-rigid ones stand for any value (generic checking
    /// of a layer that is never instantiated), so a mismatch involving them
    /// is not a definite error.
    Sym { name: String, rigid: bool },
    /// `a / b` (floor division) that does not simplify.
    Div(Box<Dim>, Box<Dim>),
}

/// A monomial: a sorted product of atoms (empty for the constant term).
type Monomial = Vec<Atom>;

/// An integer polynomial in normal form (no zero coefficients).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dim {
    terms: BTreeMap<Monomial, i64>,
}

/// The outcome of comparing two dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimCmp {
    Equal,
    Different,
    /// Cannot be decided at compile time (opaque or generic terms).
    Unknown,
}

impl Dim {
    pub fn konst(v: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if v != 0 {
            terms.insert(Vec::new(), v);
        }
        Dim { terms }
    }

    pub fn sym(name: &str, rigid: bool) -> Dim {
        Dim::atom(Atom::Sym {
            name: name.to_string(),
            rigid,
        })
    }

    fn atom(a: Atom) -> Dim {
        let mut terms = BTreeMap::new();
        terms.insert(vec![a], 1);
        Dim { terms }
    }

    /// The value, when the dim is a known integer.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// Checked arithmetic: `None` on integer overflow.
    pub fn add(&self, other: &Dim) -> Option<Dim> {
        let mut terms = self.terms.clone();
        for (m, c) in &other.terms {
            let e = terms.entry(m.clone()).or_insert(0);
            *e = e.checked_add(*c)?;
            if *e == 0 {
                terms.remove(m);
            }
        }
        Some(Dim { terms })
    }

    pub fn neg(&self) -> Option<Dim> {
        let mut terms = BTreeMap::new();
        for (m, c) in &self.terms {
            terms.insert(m.clone(), c.checked_neg()?);
        }
        Some(Dim { terms })
    }

    pub fn sub(&self, other: &Dim) -> Option<Dim> {
        self.add(&other.neg()?)
    }

    pub fn mul(&self, other: &Dim) -> Option<Dim> {
        let mut out = Dim::default();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut m: Monomial = ma.iter().chain(mb.iter()).cloned().collect();
                m.sort();
                let mut term = BTreeMap::new();
                term.insert(m, ca.checked_mul(*cb)?);
                out = out.add(&Dim { terms: term })?;
            }
        }
        Some(out)
    }

    /// Floor division. `None` when dividing by a known zero or on overflow.
    pub fn div(&self, other: &Dim) -> Option<Dim> {
        if let Some(d) = other.as_const() {
            if d == 0 {
                return None;
            }
            if let Some(n) = self.as_const() {
                return Some(Dim::konst(n.div_euclid(d)));
            }
            if self.terms.values().all(|c| c % d == 0) {
                let terms = self.terms.iter().map(|(m, c)| (m.clone(), c / d)).collect();
                return Some(Dim { terms });
            }
        }
        if self == other && !self.terms.is_empty() {
            return Some(Dim::konst(1));
        }
        if let Some(q) = self.div_by_monomial(other) {
            return Some(q);
        }
        Some(Dim::atom(Atom::Div(
            Box::new(self.clone()),
            Box::new(other.clone()),
        )))
    }

    /// Exact division by a single term `c * m` when every term of `self`
    /// is a multiple of it (`128 * B / B` is `128`).
    fn div_by_monomial(&self, other: &Dim) -> Option<Dim> {
        let (dm, dc) = match other.terms.iter().collect::<Vec<_>>().as_slice() {
            [(m, c)] => ((*m).clone(), **c),
            _ => return None,
        };
        let mut terms = BTreeMap::new();
        for (m, c) in &self.terms {
            if c % dc != 0 {
                return None;
            }
            let mut rest = m.clone();
            for a in &dm {
                let pos = rest.iter().position(|x| x == a)?;
                rest.remove(pos);
            }
            terms.insert(rest, c / dc);
        }
        Some(Dim { terms })
    }

    /// Remainder of floor division, when both are known.
    pub fn rem_const(&self, other: &Dim) -> Option<i64> {
        let (a, b) = (self.as_const()?, other.as_const()?);
        (b != 0).then(|| a.rem_euclid(b))
    }

    /// Does the dim mention a non-rigid name or an opaque division?
    fn is_indefinite(&self) -> bool {
        self.terms.keys().flatten().any(|a| match a {
            Atom::Sym { rigid, .. } => !rigid,
            Atom::Div(..) => true,
        })
    }

    pub fn compare(&self, other: &Dim) -> DimCmp {
        match self.sub(other) {
            None => DimCmp::Unknown,
            Some(d) if d.terms.is_empty() => DimCmp::Equal,
            Some(d) if d.is_const() => DimCmp::Different,
            Some(d) if d.is_indefinite() => DimCmp::Unknown,
            Some(_) => DimCmp::Different,
        }
    }

    /// Replace named dims by values (used to instantiate a generic signature).
    pub fn substitute(&self, lookup: &dyn Fn(&str) -> Option<Dim>) -> Option<Dim> {
        let mut out = Dim::default();
        for (m, c) in &self.terms {
            let mut term = Dim::konst(*c);
            for a in m {
                let factor = match a {
                    Atom::Sym { name, .. } => lookup(name).unwrap_or_else(|| Dim::atom(a.clone())),
                    Atom::Div(n, d) => n.substitute(lookup)?.div(&d.substitute(lookup)?)?,
                };
                term = term.mul(&factor)?;
            }
            out = out.add(&term)?;
        }
        Some(out)
    }

    /// The first floor division in the dim that is not exact once named
    /// dims are replaced by `lookup` (`T / 4` with `T = 30`): the division
    /// as written, and its numerator and denominator values.
    pub fn inexact_division(
        &self,
        lookup: &dyn Fn(&str) -> Option<Dim>,
    ) -> Option<(String, i64, i64)> {
        for a in self.terms.keys().flatten() {
            let Atom::Div(n, d) = a else { continue };
            let inner = n.inexact_division(lookup);
            if inner.is_some() {
                return inner;
            }
            let inner = d.inexact_division(lookup);
            if inner.is_some() {
                return inner;
            }
            let value = |x: &Dim| x.substitute(lookup).and_then(|v| v.as_const());
            if let (Some(nv), Some(dv)) = (value(n), value(d)) {
                if dv != 0 && nv.rem_euclid(dv) != 0 {
                    return Some((format!("{} / {}", n.paren(), d.paren()), nv, dv));
                }
            }
        }
        None
    }

    /// The bare symbol name, when the dim is exactly one named dimension.
    pub fn as_symbol(&self) -> Option<&str> {
        if self.terms.len() != 1 {
            return None;
        }
        let (m, c) = self.terms.iter().next()?;
        match (m.as_slice(), c) {
            ([Atom::Sym { name, .. }], 1) => Some(name),
            _ => None,
        }
    }

    /// Every symbol name mentioned.
    pub fn symbols(&self) -> Vec<String> {
        let mut out = Vec::new();
        for m in self.terms.keys() {
            for a in m {
                match a {
                    Atom::Sym { name, .. } => out.push(name.clone()),
                    Atom::Div(n, d) => {
                        out.extend(n.symbols());
                        out.extend(d.symbols());
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Sym { name, .. } => write!(f, "{name}"),
            Atom::Div(n, d) => write!(f, "({} / {})", n.paren(), d.paren()),
        }
    }
}

impl Dim {
    /// Display with parentheses when the dim is a sum.
    fn paren(&self) -> String {
        if self.terms.len() > 1 {
            format!("({self})")
        } else {
            self.to_string()
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return write!(f, "0");
        }
        // Symbolic terms first, in a stable order, then the constant.
        let mut first = true;
        let ordered = self
            .terms
            .iter()
            .filter(|(m, _)| !m.is_empty())
            .chain(self.terms.iter().filter(|(m, _)| m.is_empty()));
        for (m, &c) in ordered {
            let mag = c.unsigned_abs();
            if first {
                if c < 0 {
                    write!(f, "-")?;
                }
            } else {
                write!(f, " {} ", if c < 0 { "-" } else { "+" })?;
            }
            first = false;
            let factors: Vec<String> = m.iter().map(|a| a.to_string()).collect();
            match (factors.is_empty(), mag) {
                (true, _) => write!(f, "{mag}")?,
                (false, 1) => write!(f, "{}", factors.join(" * "))?,
                (false, _) => write!(f, "{mag} * {}", factors.join(" * "))?,
            }
        }
        Ok(())
    }
}

/// NumPy broadcasting of two symbolic shapes (aligned from the right; equal
/// dims, or one of them 1). A pair that cannot be decided at compile time
/// is accepted. On failure, the first pair of dims that clash.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, (Dim, Dim)> {
    let n = a.len().max(b.len());
    let one = Dim::konst(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = (i + a.len()).checked_sub(n).map(|k| &a[k]);
        let db = (i + b.len()).checked_sub(n).map(|k| &b[k]);
        out.push(match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) => match x.compare(y) {
                DimCmp::Equal => x.clone(),
                _ if *x == one => y.clone(),
                _ if *y == one => x.clone(),
                DimCmp::Unknown => x.clone(),
                DimCmp::Different => return Err((x.clone(), y.clone())),
            },
            (None, None) => one.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> Dim {
        Dim::sym(n, true)
    }

    #[test]
    fn linear_simplification() {
        let t = s("T");
        let e = t.add(&Dim::konst(2)).unwrap().sub(&Dim::konst(2)).unwrap();
        assert_eq!(e, t);
        assert_eq!(e.to_string(), "T");
        let b = s("B");
        let lhs = b.mul(&Dim::konst(4)).unwrap().mul(&Dim::konst(32)).unwrap();
        assert_eq!(lhs, b.mul(&Dim::konst(128)).unwrap());
        assert_eq!(lhs.to_string(), "128 * B");
    }

    #[test]
    fn division_stays_unless_exact() {
        let n = s("N");
        let half = n.div(&Dim::konst(2)).unwrap();
        let back = half.mul(&Dim::konst(2)).unwrap();
        assert_ne!(back, n);
        assert_eq!(back.to_string(), "2 * (N / 2)");
        let four_n = n.mul(&Dim::konst(4)).unwrap();
        assert_eq!(
            four_n.div(&Dim::konst(2)).unwrap(),
            n.mul(&Dim::konst(2)).unwrap()
        );
        assert_eq!(Dim::konst(7).div(&Dim::konst(2)).unwrap(), Dim::konst(3));
        assert!(Dim::konst(7).div(&Dim::konst(0)).is_none());
        let b784 = s("B").mul(&Dim::konst(784)).unwrap();
        assert_eq!(b784.div(&s("B")).unwrap(), Dim::konst(784));
    }

    #[test]
    fn comparisons() {
        assert_eq!(s("B").compare(&s("B")), DimCmp::Equal);
        assert_eq!(s("B").compare(&s("T")), DimCmp::Different);
        assert_eq!(Dim::konst(3).compare(&Dim::konst(4)), DimCmp::Different);
        assert_eq!(
            Dim::sym("h", false).compare(&Dim::konst(4)),
            DimCmp::Unknown
        );
        let half = s("N").div(&Dim::konst(2)).unwrap();
        assert_eq!(half.compare(&s("N")), DimCmp::Unknown);
        assert_eq!(
            s("T").add(&Dim::konst(1)).unwrap().compare(&s("T")),
            DimCmp::Different
        );
    }

    #[test]
    fn substitution_and_display() {
        let e = Dim::sym("d", false)
            .mul(&Dim::konst(4))
            .unwrap()
            .add(&Dim::konst(1))
            .unwrap();
        let v = e
            .substitute(&|n| (n == "d").then(|| Dim::konst(8)))
            .unwrap();
        assert_eq!(v, Dim::konst(33));
        assert_eq!(e.to_string(), "4 * d + 1");
        let neg = Dim::konst(2).sub(&s("T")).unwrap();
        assert_eq!(neg.to_string(), "-T + 2");
    }
}
