//! Snapshot tests of the IR printers for every example in `examples/`.

use deqc::ir::{lower::lower_model, print, verify};

fn lower_file(path: &str) -> Vec<deqc::ir::Graph> {
    let compiled = deqc::compile_path(std::path::Path::new(path)).expect("example readable");
    let program = compiled.program.expect("example checks");
    program
        .models
        .iter()
        .map(|m| lower_model(m).expect("lowering succeeds"))
        .collect()
}

fn text_of(path: &str) -> String {
    lower_file(path)
        .iter()
        .map(|g| {
            verify::verify(g).expect("lowered graph verifies");
            print::to_text(g)
        })
        .collect()
}

#[test]
fn mnist_mlp_ir() {
    insta::assert_snapshot!(text_of("examples/mnist_mlp.deq"));
}

#[test]
fn mdeq_mnist_ir() {
    insta::assert_snapshot!(text_of("examples/mdeq_mnist.deq"));
}

#[test]
fn mondeq_ir() {
    insta::assert_snapshot!(text_of("examples/mondeq.deq"));
}

#[test]
fn char_lm_ir() {
    insta::assert_snapshot!(text_of("examples/char_lm.deq"));
}

#[test]
fn dot_output_is_well_formed() {
    for g in lower_file("examples/mdeq_mnist.deq") {
        let dot = print::to_dot(&g);
        assert!(dot.starts_with("digraph"));
        assert!(dot.contains("subgraph cluster_"));
        assert_eq!(dot.matches('{').count(), dot.matches('}').count());
    }
}
