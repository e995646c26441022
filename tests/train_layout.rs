//! The typed layouts of the training graphs on a model with two top-level
//! equilibria (one with another nested in its body): the regularization
//! graph's inputs, which its builder adds equilibrium by equilibrium (fixed
//! points, then probes), are fed by meaning, not by the step's output order.

use candle_core::{Device, Tensor};
use deqc::ir::lower::lower_model;
use deqc::sema::spec::Loss;
use deqc::train::program::{jacobian_step, step_graph};

fn two_eq() -> deqc::ir::Graph {
    let src = std::fs::read_to_string("tests/models/two_eq.deq").expect("model");
    let compiled = deqc::compile_source("two_eq.deq", &src);
    let program = compiled.program.expect("checks");
    lower_model(program.model("TwoEq").expect("TwoEq")).expect("lowers")
}

#[test]
fn each_fixed_point_and_probe_goes_to_its_own_input() {
    let model = two_eq();
    let step = step_graph(&model, &Loss::CROSS_ENTROPY).expect("step graph");
    let jac = jacobian_step(&model)
        .expect("builds")
        .expect("has equilibria");
    let layout = &jac.layout;
    assert_eq!(step.layout.zstars.len(), 2);
    assert_eq!(layout.zstar_inputs.len(), 2);
    let names = |at: &[usize]| -> Vec<String> {
        at.iter()
            .map(|i| jac.graph.inputs[*i].name.clone())
            .collect()
    };
    // The step's fixed points are `z` then `y`; so are the layout's slots.
    assert_eq!(names(&layout.zstar_inputs), ["z*", "y*"]);
    assert_eq!(names(&layout.probe_inputs), ["probe:z", "probe:y"]);
    // Assembled inputs: each tensor lands on the input of its name.
    let mark = |v: f32| Tensor::new(v, &Device::Cpu).expect("scalar");
    let model_inputs: Vec<Tensor> = (0..layout.model_inputs).map(|_| mark(0.0)).collect();
    let inputs = layout
        .inputs(
            &model_inputs,
            &[mark(1.0), mark(2.0)],
            &[mark(-1.0), mark(-2.0)],
        )
        .expect("assembles");
    let by_name = |name: &str| -> f32 {
        let i = jac
            .graph
            .inputs
            .iter()
            .position(|inp| inp.name == name)
            .expect("input");
        inputs[i].to_scalar::<f32>().expect("scalar")
    };
    assert_eq!(
        ["z*", "probe:z", "y*", "probe:y"].map(by_name),
        [1.0, -1.0, 2.0, -2.0]
    );
}
