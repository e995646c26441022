//! The graph container and the verifier.

use deqc::ir::{verify, Graph, GraphInput, Op};
use deqc::sema::dim::Dim;
use deqc::sema::hir::{DType, Type};

fn ty(shape: &[i64]) -> Type {
    Type::new(DType::F32, shape.iter().map(|d| Dim::konst(*d)).collect())
}

fn two_inputs() -> (Graph, deqc::ir::NodeId, deqc::ir::NodeId) {
    let mut g = Graph::new("g");
    for n in ["a", "b"] {
        g.inputs.push(GraphInput {
            name: n.into(),
            ty: ty(&[2]),
        });
    }
    let a = g.add(Op::Input(0), ty(&[2]), &[], None);
    let b = g.add(Op::Input(1), ty(&[2]), &[], None);
    (g, a, b)
}

#[test]
fn operands_come_back_in_slot_order() {
    let (mut g, a, b) = two_inputs();
    let s = g.add_inferred(Op::Sub, &[b, a], None).expect("sub");
    assert_eq!(g.operands(s), vec![b, a]);
    let w = g.add_inferred(Op::Where, &[a, b, a], None).expect("where");
    assert_eq!(g.operands(w), vec![a, b, a]);
    g.set_outputs(vec![s, w]);
    verify::verify(&g).expect("valid");
}

#[test]
fn replace_uses_keeps_slots_and_outputs() {
    let (mut g, a, b) = two_inputs();
    let e = g.add_inferred(Op::Exp, &[a], None).expect("exp");
    let s = g.add_inferred(Op::Sub, &[e, b], None).expect("sub");
    g.set_outputs(vec![s, e]);
    let t = g.add_inferred(Op::Tanh, &[a], None).expect("tanh");
    g.replace_uses(e, t);
    g.remove(e);
    assert_eq!(g.operands(s), vec![t, b]);
    assert_eq!(g.outputs(), &[s, t]);
    verify::verify(&g).expect("valid");
}

#[test]
fn verifier_rejects_broken_graphs() {
    // Wrong arity.
    let (mut g, a, _) = two_inputs();
    let bad = g.add(Op::Add, ty(&[2]), &[a], None);
    g.set_outputs(vec![bad]);
    assert!(verify::verify(&g).is_err());
    // A type that contradicts the shape rule.
    let (mut g, a, b) = two_inputs();
    let bad = g.add(Op::MatMul, ty(&[2]), &[a, b], None);
    g.set_outputs(vec![bad]);
    assert!(verify::verify(&g).is_err());
    // A state outside a body.
    let (mut g, _, _) = two_inputs();
    let s = g.add(Op::State(0), ty(&[2]), &[], None);
    g.set_outputs(vec![s]);
    assert!(verify::verify(&g).is_err());
    // An input index out of range.
    let (mut g, _, _) = two_inputs();
    let s = g.add(Op::Input(5), ty(&[2]), &[], None);
    g.set_outputs(vec![s]);
    assert!(verify::verify(&g).is_err());
    // A non-scalar constant.
    let (mut g, _, _) = two_inputs();
    let c = g.add(Op::Const(1.0), ty(&[2]), &[], None);
    g.set_outputs(vec![c]);
    assert!(verify::verify(&g).is_err());
    // Broadcasting that cannot work.
    let (mut g, a, _) = two_inputs();
    let c = g.add(Op::Input(1), ty(&[3]), &[], None);
    assert!(g.add_inferred(Op::Add, &[a, c], None).is_err());
}

#[test]
fn shape_rules_with_symbolic_dims() {
    let mut g = Graph::new("g");
    let b = Dim::sym("B", true);
    let t = Type::new(DType::F32, vec![b.clone(), Dim::konst(3)]);
    g.inputs.push(GraphInput {
        name: "x".into(),
        ty: t.clone(),
    });
    let x = g.add(Op::Input(0), t, &[], None);
    let s = g
        .add_inferred(
            Op::Reduce {
                op: deqc::ir::ReduceOp::Sum,
                axes: vec![1],
                keepdim: true,
            },
            &[x],
            None,
        )
        .expect("sum");
    assert_eq!(g.ty(s).shape, vec![b.clone(), Dim::konst(1)]);
    let back = g
        .add_inferred(
            Op::BroadcastTo {
                shape: vec![b.clone(), Dim::konst(3)],
            },
            &[s],
            None,
        )
        .expect("broadcast");
    let summed = g
        .add_inferred(
            Op::SumTo {
                shape: vec![Dim::konst(3)],
            },
            &[back],
            None,
        )
        .expect("sum_to");
    assert_eq!(g.ty(summed).shape, vec![Dim::konst(3)]);
    g.set_outputs(vec![summed]);
    verify::verify(&g).expect("valid");
}
