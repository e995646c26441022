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

#[test]
fn backward_graph_text() {
    let compiled = deqc::compile_source(
        "small.deq",
        "model Small(x: [B, 3], w: [3, 2]) { param b: [2] = zeros; sum(tanh(x @ w + b), axis = 1) }",
    );
    let g = lower_model(&compiled.program.expect("checks").models[0]).expect("lowers");
    let b = deqc::autodiff::backward_graph(&g, &deqc::autodiff::NoImplicitBackward)
        .expect("backward graph");
    insta::assert_snapshot!(print::to_text(&b));
}

#[test]
fn dot_renders_with_graphviz_when_installed() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let Ok(mut child) = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("graphviz is not installed; skipping");
        return;
    };
    let g = &lower_file("examples/mdeq_mnist.deq")[0];
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(print::to_dot(g).as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("dot runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
