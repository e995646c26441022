//! Per-equilibrium solver statistics of a run: what the warnings, the
//! progress bar, the epoch lines and `metrics.jsonl` say about the solves.
//!
//! Owns [`SolveReport`]. Guarantees:
//! - Every equilibrium is counted apart, identified by its state names and
//!   the source line of its `equilibrium` statement; a model with two
//!   equilibria in sequence solved 10 times reports 10 solves of each, never
//!   20 of one.
//! - An equilibrium solved inside another one's body is reported as
//!   *nested* (its own entry, counted once per evaluation of the outer
//!   body, and for the outer one's gradient; see [`mark_nested`]); adjoint (backward) solves are counted under their equilibrium's
//!   `bwd_*` figures, apart from its forward ones.
//! - The aggregate figures ([`SolveReport::fwd_iters`] and friends, the old
//!   `fwd_iters`/`fwd_residual`/`bwd_iters`/`bwd_residual` metrics) are
//!   means per solve over the top-level equilibria only: nested solves,
//!   which run many times per step, would swamp them.
//! - `unroll` solves are an explicit network of fixed depth: their residual
//!   is reported but never called unconverged.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::deq::SolveRecord;
use crate::source::{SourceMap, Span};

/// An equilibrium as the graph knows it: its state names and the span of
/// its `equilibrium` statement.
pub type EqName = (Vec<String>, Option<Span>);

/// Mark as nested every solve of an equilibrium that is not one of the
/// model's top-level ones (`top_level`: state names and span). A nested
/// equilibrium is also solved outside any other solve, where the gradient
/// of the equilibrium around it differentiates its body at the fixed
/// point; those solves still belong to the nested equilibrium.
pub fn mark_nested(records: &mut [SolveRecord], top_level: &[EqName]) {
    for r in records {
        let defined_at_top = top_level
            .iter()
            .any(|(states, span)| *states == r.states && *span == r.span);
        r.nested |= !defined_at_top;
    }
}

/// Which equilibrium a solve belongs to (sorted by source position).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EqId {
    /// 1-based line and column of the `equilibrium` statement (0 unknown).
    pub line: usize,
    pub col: usize,
    /// The state names, joined by `,`.
    pub states: String,
    /// Solved inside another equilibrium's body.
    pub nested: bool,
}

impl EqId {
    fn of(states: &[String], span: Option<Span>, nested: bool, sources: &SourceMap) -> EqId {
        let (line, col) = span.map_or((0, 0), |s| sources.line_col(s));
        EqId {
            line,
            col,
            states: states.join(","),
            nested,
        }
    }

    /// The key of this equilibrium in `metrics.jsonl`: `z@12`, `h@5/nested`.
    pub fn key(&self) -> String {
        let nested = if self.nested { "/nested" } else { "" };
        format!("{}@{}{nested}", self.states, self.line)
    }
}

/// The solves of one direction (forward or adjoint) of one equilibrium.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideStats {
    pub solves: usize,
    /// Solves in which some sample missed `tol` (never counted for `unroll`).
    pub unconverged: usize,
    /// Solves that blow-up protection stopped.
    pub protected: usize,
    iterations: f64,
    /// Sum and maximum over solves of each solve's worst per-sample residual.
    residual_sum: f64,
    pub worst_residual: f64,
    /// The tolerance of the last solve.
    pub tol: f64,
}

impl SideStats {
    fn add(&mut self, r: &SolveRecord) {
        let worst = r.stats.residual.iter().cloned().fold(0.0, |a: f64, b| {
            if b.is_nan() {
                f64::INFINITY
            } else {
                a.max(b)
            }
        });
        self.solves += 1;
        self.iterations += r.stats.iterations as f64;
        self.residual_sum += worst;
        self.worst_residual = self.worst_residual.max(worst);
        self.tol = r.stats.tol;
        if !r.stats.converged && r.stats.solver != "unroll" {
            self.unconverged += 1;
        }
        if r.stats.stopped_by_protection.is_some() {
            self.protected += 1;
        }
    }

    /// Mean iterations per solve (0 without solves).
    pub fn mean_iters(&self) -> f64 {
        self.iterations / self.solves.max(1) as f64
    }

    /// Mean over solves of the worst per-sample residual (0 without solves).
    pub fn mean_residual(&self) -> f64 {
        self.residual_sum / self.solves.max(1) as f64
    }

    fn merge(&mut self, o: &SideStats) {
        self.solves += o.solves;
        self.unconverged += o.unconverged;
        self.protected += o.protected;
        self.iterations += o.iterations;
        self.residual_sum += o.residual_sum;
        self.worst_residual = self.worst_residual.max(o.worst_residual);
        self.tol = o.tol;
    }
}

/// Everything reported about one equilibrium.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EqStats {
    /// `file:line:col` of the `equilibrium` statement, for messages.
    pub place: String,
    pub fwd: SideStats,
    pub bwd: SideStats,
    /// Largest spectral radius estimate of `J_f(z*)` (test records only).
    pub spectral_radius: Option<f64>,
}

/// Solver statistics over some steps (one step, or an epoch), per
/// equilibrium.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SolveReport {
    eqs: BTreeMap<EqId, EqStats>,
}

impl SolveReport {
    pub fn new() -> SolveReport {
        SolveReport::default()
    }

    /// Count a batch of solve records.
    pub fn add(&mut self, records: &[SolveRecord], sources: &SourceMap) {
        for r in records {
            let entry = self.entry(&r.states, r.span, r.nested, sources);
            if r.backward {
                entry.bwd.add(r);
            } else {
                entry.fwd.add(r);
            }
        }
    }

    /// Record the spectral radius estimate of a top-level equilibrium.
    pub fn set_spectral_radius(
        &mut self,
        states: &[String],
        span: Option<Span>,
        radius: f64,
        sources: &SourceMap,
    ) {
        let entry = self.entry(states, span, false, sources);
        entry.spectral_radius = Some(entry.spectral_radius.map_or(radius, |r| r.max(radius)));
    }

    fn entry(
        &mut self,
        states: &[String],
        span: Option<Span>,
        nested: bool,
        sources: &SourceMap,
    ) -> &mut EqStats {
        self.eqs
            .entry(EqId::of(states, span, nested, sources))
            .or_insert_with(|| EqStats {
                place: span
                    .map(|s| {
                        let (l, c) = sources.line_col(s);
                        format!("{}:{l}:{c}", sources.file(s.file).name)
                    })
                    .unwrap_or_else(|| "an unknown place".into()),
                ..EqStats::default()
            })
    }

    /// The equilibria in source order, outer before nested at one line.
    pub fn equilibria(&self) -> impl Iterator<Item = (&EqId, &EqStats)> {
        self.eqs.iter()
    }

    fn top_level(&self, forward: bool) -> SideStats {
        let mut all = SideStats::default();
        for (_, s) in self.eqs.iter().filter(|(id, _)| !id.nested) {
            all.merge(if forward { &s.fwd } else { &s.bwd });
        }
        all
    }

    /// Mean forward iterations per solve of the top-level equilibria.
    pub fn fwd_iters(&self) -> f64 {
        self.top_level(true).mean_iters()
    }

    /// Mean worst forward residual per solve of the top-level equilibria.
    pub fn fwd_residual(&self) -> f64 {
        self.top_level(true).mean_residual()
    }

    pub fn bwd_iters(&self) -> f64 {
        self.top_level(false).mean_iters()
    }

    pub fn bwd_residual(&self) -> f64 {
        self.top_level(false).mean_residual()
    }

    /// The largest spectral radius estimate of any equilibrium.
    pub fn spectral_radius(&self) -> Option<f64> {
        self.eqs
            .values()
            .filter_map(|s| s.spectral_radius)
            .reduce(f64::max)
    }

    /// Solves stopped by blow-up protection: (forward, adjoint), all
    /// equilibria.
    pub fn protected(&self) -> (usize, usize) {
        self.eqs.values().fold((0, 0), |(f, b), s| {
            (f + s.fwd.protected, b + s.bwd.protected)
        })
    }

    /// One warning per equilibrium whose forward or adjoint solves missed
    /// their tolerance, naming it and its source line.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, s) in &self.eqs {
            let what = if id.nested {
                format!(
                    "the nested equilibrium {} at {} (solved inside another equilibrium's body)",
                    id.states, s.place
                )
            } else {
                format!("the equilibrium {} at {}", id.states, s.place)
            };
            if s.fwd.unconverged > 0 {
                out.push(format!(
                    "{what} did not reach tol {:e} in {} of {} forward solves (worst residual {:.3e}); consider a larger max_iter or Jacobian regularization",
                    s.fwd.tol, s.fwd.unconverged, s.fwd.solves, s.fwd.worst_residual
                ));
            }
            if s.bwd.unconverged > 0 {
                out.push(format!(
                    "the adjoint of {what} did not reach tol {:e} in {} of {} backward solves (worst residual {:.3e}); its gradients are approximate there",
                    s.bwd.tol, s.bwd.unconverged, s.bwd.solves, s.bwd.worst_residual
                ));
            }
        }
        out
    }

    /// The progress bar's compact form: `z 12.3/30.1 it 4.2e-5` per
    /// equilibrium (forward/backward mean iterations, mean forward
    /// residual), nested ones marked `*`.
    pub fn compact(&self) -> String {
        let parts: Vec<String> = self
            .eqs
            .iter()
            .map(|(id, s)| {
                let star = if id.nested { "*" } else { "" };
                let bwd = if s.bwd.solves > 0 {
                    format!("/{:.1}", s.bwd.mean_iters())
                } else {
                    String::new()
                };
                format!(
                    "{}{star} {:.1}{bwd} it {:.1e}",
                    id.states,
                    s.fwd.mean_iters(),
                    s.fwd.mean_residual()
                )
            })
            .collect();
        parts.join(", ")
    }

    /// The epoch line's form: `z: fwd 28.6 it, bwd 37.9 it, spectral radius
    /// 0.913` per equilibrium, joined by `; `.
    pub fn epoch_summary(&self, test: Option<&SolveReport>) -> String {
        let mut ids: Vec<&EqId> = self.eqs.keys().collect();
        if let Some(t) = test {
            ids.extend(t.eqs.keys().filter(|k| !self.eqs.contains_key(*k)));
            ids.sort();
        }
        let parts: Vec<String> = ids
            .into_iter()
            .map(|id| {
                let mut text = format!(
                    "{}{}: ",
                    id.states,
                    if id.nested { " (nested)" } else { "" }
                );
                let mut fields = Vec::new();
                if let Some(s) = self.eqs.get(id) {
                    fields.push(format!("fwd {:.1} it", s.fwd.mean_iters()));
                    if s.bwd.solves > 0 {
                        fields.push(format!("bwd {:.1} it", s.bwd.mean_iters()));
                    }
                }
                let radius = test
                    .and_then(|t| t.eqs.get(id))
                    .and_then(|s| s.spectral_radius);
                if let Some(r) = radius {
                    fields.push(format!("spectral radius {r:.3}"));
                }
                text.push_str(&fields.join(", "));
                text
            })
            .collect();
        parts.join("; ")
    }

    /// The `equilibria` object of a metrics record (schema in the README).
    pub fn to_json(&self) -> Map<String, Value> {
        fn num(x: f64) -> Value {
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        let mut out = Map::new();
        for (id, s) in &self.eqs {
            let mut m = Map::new();
            m.insert("states".into(), id.states.clone().into());
            m.insert("line".into(), id.line.into());
            m.insert("nested".into(), id.nested.into());
            for (prefix, side) in [("fwd", &s.fwd), ("bwd", &s.bwd)] {
                m.insert(format!("{prefix}_solves"), side.solves.into());
                if side.solves > 0 {
                    m.insert(format!("{prefix}_unconverged"), side.unconverged.into());
                    m.insert(format!("{prefix}_protected"), side.protected.into());
                    m.insert(format!("{prefix}_iters"), num(side.mean_iters()));
                    m.insert(format!("{prefix}_residual"), num(side.mean_residual()));
                }
            }
            if let Some(r) = s.spectral_radius {
                m.insert("spectral_radius".into(), num(r));
            }
            out.insert(id.key(), Value::Object(m));
        }
        out
    }
}

#[cfg(test)]
mod tests;
