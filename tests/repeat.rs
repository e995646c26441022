//! `repeat(N, Layer[...])`: N distinct instances with paths `name.i`,
//! applied as a chain with static shapes; numerically the same model as the
//! instances written out by hand; gradient-checked; its paths in `deqc
//! check`'s parameter list.

mod common;

use deqc::exec::Executor;

fn program(src: &str) -> deqc::sema::hir::Program {
    common::checked("repeat.deq", src).0
}

fn repeated() -> String {
    std::fs::read_to_string("tests/models/repeated.deq").expect("model")
}

/// The same model with its three blocks written out.
const BY_HAND: &str = "use nn;\nlayer Block[d](x: [B, d]) -> [B, d] {\n    let lin = nn::Linear[d, d];\n    x + tanh(lin(x))\n}\nmodel Stack(x: [B, 8]) -> [B, 4] {\n    let b0 = Block[8];\n    let b1 = Block[8];\n    let b2 = Block[8];\n    let head = nn::Linear[8, 4];\n    head(b2(b1(b0(x))))\n}\n";

fn paths(p: &deqc::sema::hir::Program) -> Vec<String> {
    p.models[0].params.iter().map(|p| p.path.clone()).collect()
}

#[test]
fn each_repetition_is_its_own_instance_under_an_indexed_path() {
    let p = program(&repeated());
    assert_eq!(
        paths(&p),
        [
            "blocks.0.lin.w",
            "blocks.0.lin.b",
            "blocks.1.lin.w",
            "blocks.1.lin.b",
            "blocks.2.lin.w",
            "blocks.2.lin.b",
            "head.w",
            "head.b"
        ]
    );
}

#[test]
fn a_chain_computes_what_the_written_out_instances_compute() {
    let a = common::lower(&repeated());
    let b = common::lower(BY_HAND);
    assert_eq!(a.params.len(), b.params.len());
    // The same values in the same order (the paths differ only by name).
    let (params, inputs) = common::random_feeds(&a, &[("B", 3)], 4);
    let exec = Executor::cpu_f64();
    let ya = exec.run(&a, &params, &inputs).unwrap().outputs;
    let yb = exec.run(&b, &params, &inputs).unwrap().outputs;
    common::assert_close(&common::values(&ya[0]), &common::values(&yb[0]), 1e-12);
    // Each block has its own weights: shuffling one block's changes the output.
    let mut other = params.clone();
    other[2] = other[2].affine(-1.0, 0.0).unwrap();
    let yc = exec.run(&a, &other, &inputs).unwrap().outputs;
    let diff: f64 = common::values(&ya[0])
        .iter()
        .zip(common::values(&yc[0]))
        .map(|(x, y)| (x - y).abs())
        .sum();
    assert!(diff > 1e-3, "blocks.1 changed nothing");
}

#[test]
fn repeated_blocks_pass_gradcheck_inside_an_equilibrium() {
    let src = "use nn;\nlayer Block[d](x: [B, d]) -> [B, d] {\n    let lin = nn::Linear[d, d];\n    tanh(lin(x))\n}\nmodel M(x: [B, 4]) -> [B, 4] {\n    let blocks = repeat(2, Block[4]);\n    let inject = nn::Linear[4, 4];\n    let u = inject(x);\n    equilibrium z: [B, 4] = 0.5 * blocks(z) + u\n        with solver = fixed_point(tol = 1e-12, max_iter = 400, stop = \"abs\");\n    z\n}\n";
    let report = common::gradcheck_dims(src, &[("B", 2)]);
    let names: Vec<&str> = report.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"param blocks.1.lin.w"), "{names:?}");
}

#[test]
fn one_element_can_be_called_alone_and_the_count_can_be_a_hyper_parameter() {
    let src = "use nn;\nlayer Deep[n, d](x: [B, d]) -> [B, d] {\n    let layers = repeat(n, nn::Linear[d, d]);\n    layers[n - 1](layers(x))\n}\nmodel M(x: [B, 4]) -> [B, 4] {\n    let deep = Deep[2, 4];\n    deep(x)\n}\n";
    let p = program(src);
    assert_eq!(
        paths(&p),
        [
            "deep.layers.0.w",
            "deep.layers.0.b",
            "deep.layers.1.w",
            "deep.layers.1.b"
        ]
    );
}

#[test]
fn an_element_never_called_is_a_warning() {
    let src = "use nn;\nmodel M(x: [B, 4]) -> [B, 4] {\n    let layers = repeat(3, nn::Linear[4, 4]);\n    layers[0](x)\n}\n";
    let c = deqc::compile_source("repeat.deq", src);
    let p = c
        .program
        .as_ref()
        .expect("a warning does not fail the check");
    assert_eq!(p.models.len(), 1, "the model is kept");
    assert_eq!(p.models[0].params.len(), 2);
    let text = c.render_plain(100);
    assert!(text.contains("`layers.1` is never used"), "{text}");
    assert!(text.contains("`layers.2` is never used"), "{text}");
}

#[test]
fn deqc_check_lists_the_repeated_paths() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deqc"))
        .args(["check", "tests/models/repeated.deq"])
        .output()
        .expect("deqc runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for path in ["blocks.0.lin.w", "blocks.1.lin.b", "blocks.2.lin.w"] {
        assert!(text.contains(path), "{path} missing:\n{text}");
    }
}
