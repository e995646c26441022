//! Printers of the IR: stable text (`deqc dump --emit=ir`) and Graphviz dot
//! (`deqc graph`).
//!
//! Guarantees: output depends only on the graph's structure (nodes are
//! numbered `%0, %1, ...` in the deterministic topological order, per graph;
//! no addresses or hash order), so it can be snapshot-tested; equilibrium
//! bodies are printed nested, with their own numbering; the dot text is
//! valid Graphviz input (labels escaped, one cluster per body).

use std::collections::HashMap;
use std::fmt::Write;

use super::graph::{Graph, NodeId};
use super::op::{Op, OpClass};

fn numbering(g: &Graph) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
    let order = g.topo_order();
    let num = order.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    (order, num)
}

fn refs(ids: &[NodeId], num: &HashMap<NodeId, usize>) -> String {
    ids.iter()
        .map(|o| match num.get(o) {
            Some(k) => format!("%{k}"),
            None => format!("%?{o}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The op with its attributes and the names the signature gives sources.
fn describe(g: &Graph, op: &Op) -> String {
    match op {
        Op::Input(i) => match g.inputs.get(*i) {
            Some(inp) => format!("input {}", inp.name),
            None => format!("input {i}"),
        },
        Op::Param(i) => match g.params.get(*i) {
            Some(p) => format!("param {}", p.path),
            None => format!("param {i}"),
        },
        other => {
            let a = other.attrs();
            if a.is_empty() {
                other.name().to_string()
            } else {
                format!("{}[{a}]", other.name())
            }
        }
    }
}

fn body_text(out: &mut String, g: &Graph, indent: usize) {
    let pad = " ".repeat(indent);
    let (order, num) = numbering(g);
    for id in &order {
        let node = g.node(*id);
        let operands = g.operands(*id);
        let args = if operands.is_empty() {
            String::new()
        } else {
            format!(" {}", refs(&operands, &num))
        };
        let _ = writeln!(
            out,
            "{pad}%{}: {} = {}{args}",
            num[id],
            node.ty,
            describe(g, &node.op)
        );
        if let Op::Equilibrium(eq) = &node.op {
            let _ = writeln!(out, "{pad}    solver = {}", eq.solver);
            let _ = writeln!(out, "{pad}    backward = {}", eq.backward);
            let states: Vec<String> = eq
                .state_labels()
                .iter()
                .zip(&eq.state_types)
                .map(|(n, t)| format!("{n}: {t}"))
                .collect();
            let _ = writeln!(out, "{pad}    states ({}) {{", states.join(", "));
            body_text(out, &eq.body, indent + 8);
            let _ = writeln!(out, "{pad}    }}");
        }
    }
    let bnum = numbering(g).1;
    let _ = writeln!(out, "{pad}return {}", refs(g.outputs(), &bnum));
}

/// The graph as stable text.
pub fn to_text(g: &Graph) -> String {
    let mut out = String::new();
    let inputs: Vec<String> = g
        .inputs
        .iter()
        .map(|i| format!("{}: {}", i.name, i.ty))
        .collect();
    let _ = writeln!(out, "graph {}({}) {{", g.name, inputs.join(", "));
    for p in &g.params {
        let note = p
            .role
            .note(|i| g.params.get(i).map(|q| q.path.clone()).unwrap_or_default());
        let note = note.map(|n| format!("  // {n}")).unwrap_or_default();
        let _ = writeln!(out, "    param {}: {} = {}{note}", p.path, p.ty, p.init);
    }
    body_text(&mut out, g, 4);
    let _ = writeln!(out, "}}");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot_nodes(out: &mut String, g: &Graph, prefix: &str, counter: &mut usize) {
    let (order, num) = numbering(g);
    let name = |id: &NodeId| format!("{prefix}_{}", num[id]);
    for id in &order {
        let node = g.node(*id);
        let label = format!(
            "%{}: {}\\n{}",
            num[id],
            escape(&describe(g, &node.op)),
            node.ty
        );
        let shape = if node.op.info().class == OpClass::Source {
            "ellipse"
        } else if matches!(node.op, Op::Equilibrium(_)) {
            "doubleoctagon"
        } else {
            "box"
        };
        let _ = writeln!(out, "  {} [shape={shape}, label=\"{label}\"];", name(id));
        if let Op::Equilibrium(eq) = &node.op {
            *counter += 1;
            let sub = format!("{prefix}_eq{}", *counter);
            let _ = writeln!(out, "  subgraph cluster_{sub} {{");
            let _ = writeln!(
                out,
                "  label=\"equilibrium ({})\"; style=dashed;",
                escape(&eq.state_labels().join(", "))
            );
            dot_nodes(out, &eq.body, &sub, counter);
            let _ = writeln!(out, "  }}");
            let bnum = numbering(&eq.body).1;
            for o in eq.body.outputs() {
                let _ = writeln!(
                    out,
                    "  {sub}_{} -> {} [style=dashed, label=\"yield\"];",
                    bnum[o],
                    name(id)
                );
            }
        }
    }
    for id in &order {
        for (slot, o) in g.operands(*id).iter().enumerate() {
            let _ = writeln!(out, "  {} -> {} [label=\"{slot}\"];", name(o), name(id));
        }
    }
    for (k, o) in g.outputs().iter().enumerate() {
        let _ = writeln!(
            out,
            "  {prefix}_out{k} [shape=plaintext, label=\"output {k}\"];\n  {} -> {prefix}_out{k};",
            name(o)
        );
    }
}

/// The graph as Graphviz dot.
pub fn to_dot(g: &Graph) -> String {
    let mut out = String::new();
    let title = if g.name.is_empty() { "graph" } else { &g.name };
    let _ = writeln!(out, "digraph \"{}\" {{", escape(title));
    let _ = writeln!(out, "  rankdir=TB; node [fontname=\"monospace\"];");
    let mut counter = 0;
    dot_nodes(&mut out, g, "n", &mut counter);
    let _ = writeln!(out, "}}");
    out
}
