//! Graph-to-graph optimization passes and the pipeline that runs them.
//!
//! Owns the [`Pass`] trait, [`Pipeline`] and its [`PipelineSettings`].
//! Guarantees: every pass preserves what the graph computes (tested by
//! executing graphs before and after, outputs and gradients); passes recurse
//! into equilibrium bodies; the verifier runs after every pass in debug and
//! test builds. Passes remove nodes, so node ids held from before a pass may
//! be stale afterwards (petgraph reuses slots).

pub mod attention;
pub mod attention_backward;
pub mod cse;
pub mod dce;
pub mod fold;
pub mod fuse;
pub mod hoist;
pub mod per_sample;

use crate::ir::{debug_verify, Graph, IrError, Op};

/// One transformation of a graph.
pub trait Pass {
    fn name(&self) -> &'static str;
    /// Transform `g` in place (bodies included); `true` when it changed.
    fn run(&self, g: &mut Graph) -> Result<bool, IrError>;
}

/// A pass that is one function `$run(&mut Graph)`: its unit struct and
/// its [`Pass`] implementation.
macro_rules! fn_pass {
    ($(#[$doc:meta])* $pass:ident, $name:literal, $run:ident) => {
        $(#[$doc])*
        pub struct $pass;

        impl $crate::passes::Pass for $pass {
            fn name(&self) -> &'static str {
                $name
            }
            fn run(&self, g: &mut Graph) -> Result<bool, IrError> {
                $run(g)
            }
        }
    };
}
pub(crate) use fn_pass;

/// Which passes the default pipeline runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelineSettings {
    pub fold: bool,
    pub cse: bool,
    pub dce: bool,
    /// Move state-independent work out of equilibrium bodies.
    pub hoist: bool,
    /// Rounds of the whole sequence at most (stops early at a fixed point).
    pub max_rounds: usize,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            fold: true,
            cse: true,
            dce: true,
            hoist: true,
            max_rounds: 4,
        }
    }
}

pub struct Pipeline {
    passes: Vec<Box<dyn Pass>>,
    max_rounds: usize,
}

impl Pipeline {
    pub fn new(settings: PipelineSettings) -> Pipeline {
        let mut passes: Vec<Box<dyn Pass>> = Vec::new();
        if settings.fold {
            passes.push(Box::new(fold::ConstantFold));
        }
        if settings.cse {
            passes.push(Box::new(cse::Cse));
        }
        if settings.hoist {
            passes.push(Box::new(hoist::HoistInvariants));
        }
        if settings.dce {
            passes.push(Box::new(dce::Dce));
        }
        Pipeline {
            passes,
            max_rounds: settings.max_rounds,
        }
    }

    /// Run the passes until nothing changes (or `max_rounds`).
    pub fn run(&self, g: &mut Graph) -> Result<(), IrError> {
        for _ in 0..self.max_rounds {
            let mut changed = false;
            for p in &self.passes {
                changed |= p.run(g)?;
                debug_verify(g, p.name())?;
            }
            if !changed {
                break;
            }
        }
        Ok(())
    }
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline::new(PipelineSettings::default())
    }
}

/// Apply `f` to the body of every equilibrium node of `g`.
pub(crate) fn for_each_body(
    g: &mut Graph,
    f: &dyn Fn(&mut Graph) -> Result<bool, IrError>,
) -> Result<bool, IrError> {
    let mut changed = false;
    for id in g.node_ids() {
        if let Op::Equilibrium(eq) = &mut g.node_mut(id).op {
            changed |= f(&mut eq.body)?;
        }
    }
    Ok(changed)
}
