//! Stage snapshots and example checks: every example and stdlib module
//! checks clean, and the AST and HIR printers are stable for the examples.

use std::path::{Path, PathBuf};

fn deq_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deq"))
        .collect();
    files.sort();
    files
}

fn name(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn examples_and_stdlib_check_clean() {
    let files: Vec<PathBuf> = deq_files("examples")
        .into_iter()
        .chain(deq_files("stdlib"))
        .collect();
    assert!(files.len() >= 5);
    for f in files {
        let compiled = deqc::compile_path(&f).unwrap();
        let ok = compiled.program.is_some();
        let rendered = compiled.render_plain(100);
        assert!(
            ok && rendered.is_empty(),
            "{} does not check:\n{rendered}",
            f.display()
        );
    }
}

#[test]
fn language_examples_have_their_models_and_trains() {
    for (file, model, params, has_train) in [
        ("examples/mnist_mlp.deq", "DeqMlp", 269_322, true),
        ("examples/mdeq_mnist.deq", "Mdeq", 12_202, true),
        ("examples/char_lm.deq", "CharDeq", 214_720, true),
        ("examples/mondeq.deq", "MonDeq", 134_538, false),
        ("examples/trellis_lm.deq", "TrellisLm", 210_496, true),
    ] {
        let p = deqc::compile_path(Path::new(file))
            .unwrap()
            .program
            .unwrap();
        let m = p.model(model).unwrap();
        assert_eq!(m.param_count(), params, "{file}");
        assert_eq!(m.equilibria().len(), 1, "{file}");
        assert_eq!(p.trains.len(), usize::from(has_train), "{file}");
    }
}

#[test]
fn ast_snapshots() {
    for f in deq_files("examples") {
        let text = std::fs::read_to_string(&f).unwrap();
        let ast = deqc::syntax::parse_file(deqc::source::FileId(0), &text).unwrap();
        insta::assert_snapshot!(
            format!("ast__{}", name(&f)),
            deqc::syntax::print::print_file(&ast)
        );
    }
}

#[test]
fn hir_snapshots() {
    for f in deq_files("examples") {
        let p = deqc::compile_path(&f).unwrap().program.unwrap();
        insta::assert_snapshot!(
            format!("hir__{}", name(&f)),
            deqc::sema::print::print_program(&p)
        );
    }
}

#[test]
fn check_summary_snapshot() {
    let p = deqc::compile_path(Path::new("examples/mnist_mlp.deq"))
        .unwrap()
        .program
        .unwrap();
    insta::assert_snapshot!("summary__mnist_mlp", deqc::sema::print::summary(&p));
}

#[test]
fn an_instance_never_called_is_a_warning_not_an_error() {
    let src =
        "use nn;\nmodel M(x: [B, 4]) -> [B, 4] {\n    let unused = nn::Linear[4, 4];\n    x\n}\n";
    let c = deqc::compile_source("warn.deq", src);
    assert!(c.program.is_some(), "a warning must not fail the check");
    let models = c.program.as_ref().map_or(0, |p| p.models.len());
    assert_eq!(models, 1, "a warning must not drop the model");
    assert_eq!(c.diags.items.len(), 1);
    assert!(!c.diags.items[0].is_error());
    let text = c.render_plain(80);
    assert!(text.contains("`unused` is never used"), "{text}");
    assert!(
        text.contains("never called, so it has no parameters"),
        "{text}"
    );
}

#[test]
fn symbolic_dimensions_simplify_through_layers() {
    // A layer generic in T sees (T + 2) - 2 as T, and reshape infers -1
    // through the batch dimension.
    let src = r#"
layer Pad[d: int](x: [B, T, d]) -> [B, T, d] {
    let p = concat((zeros([B, 2, d]), x), 1);
    p[:, 2:, :]
}
model M(x: [B, T, 4]) -> [B, 4 * T] {
    let pad = Pad[4];
    reshape(pad(x), [B, -1])
}
"#;
    let c = deqc::compile_source("sym.deq", src);
    let p = c.program.expect("checks");
    let out = p.models[0].output_types[0].to_string();
    assert_eq!(out, "[B, 4 * T]");
}

#[test]
fn instances_name_parameters_and_share_weights() {
    let src = r#"
use nn;
layer Pair[d: int](x: [B, d]) -> [B, d] {
    let inner = nn::Linear[d, d];
    inner(inner(x)) + nn::Linear[d, d](x) + nn::Linear[d, d, bias = false](x)
}
model M(x: [B, 4]) -> [B, 4] {
    let outer = Pair[4];
    outer(x) + outer(x) + nn::Linear[4, 4](x)
}
"#;
    let p = deqc::compile_source("inst.deq", src)
        .program
        .expect("checks");
    let paths: Vec<&str> = p.models[0].params.iter().map(|p| p.path.as_str()).collect();
    // `inner` and `outer` are called twice but own one weight each;
    // anonymous instances are numbered per layer type in their parent.
    assert_eq!(
        paths,
        [
            "outer.inner.w",
            "outer.inner.b",
            "outer.linear_0.w",
            "outer.linear_0.b",
            "outer.linear_1.w",
            "linear_0.w",
            "linear_0.b"
        ]
    );
}
