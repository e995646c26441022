//! `deqc fmt`: the canonical layout is a fixed point, keeps every token and
//! comment, and keeps the meaning (the AST up to spans, the checked HIR, the
//! diagnostics of invalid programs) on every example, stdlib file, test
//! model and UI program, and on generated programs (proptest). The
//! repository's own `.deq` files (but not the UI programs, whose snapshots
//! point at lines and columns) are kept formatted.

mod common;
use common::cli::deqc;

use std::path::{Path, PathBuf};

use deqc::fmt::format_source;
use deqc::source::{FileId, SourceMap};
use proptest::prelude::*;

fn deq_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deq"))
        .collect();
    files.sort();
    files
}

/// The AST printout without its `@start..end` spans.
fn ast_without_spans(text: &str) -> Result<String, String> {
    let file = deqc::syntax::parse_file(FileId(0), text).map_err(|e| e.to_string())?;
    let printed = deqc::syntax::print::print_file(&file);
    Ok(printed
        .lines()
        .map(|l| match l.rfind(" @") {
            Some(i) if l[i + 2..].contains("..") => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The checked program's dump, or the diagnostics' codes and messages, for
/// `text` read as if it were the file at `path` (so `use` resolves alike).
fn meaning(path: &Path, text: &str) -> String {
    let mut sources = SourceMap::new();
    let root = sources.add(path.display().to_string(), Some(path.to_path_buf()), text);
    let (program, diags) = deqc::sema::check(&mut sources, root);
    match program {
        Some(p) => deqc::sema::print::print_program(&p),
        None => diags
            .items
            .iter()
            .map(|d| {
                let code = d.error.code().map(|c| c.to_string()).unwrap_or_default();
                format!("{code}: {}\n", d.error)
            })
            .collect(),
    }
}

fn all_programs() -> Vec<PathBuf> {
    let mut files = deq_files("examples");
    files.extend(deq_files("examples/transfer"));
    files.extend(deq_files("stdlib"));
    files.extend(deq_files("tests/models"));
    files.extend(deq_files("tests/ui"));
    files.extend(deq_files("tests/ui/aux"));
    files
}

#[test]
fn formatting_is_a_fixed_point_that_keeps_the_meaning() {
    let mut formatted_count = 0;
    for path in all_programs() {
        let text = std::fs::read_to_string(&path).unwrap();
        let Ok(once) = format_source(&text) else {
            // Only programs with syntax errors are refused.
            assert!(
                deqc::syntax::parse_file(FileId(0), &text).is_err(),
                "{} parses but was not formatted",
                path.display()
            );
            continue;
        };
        formatted_count += 1;
        let twice = format_source(&once).unwrap();
        assert_eq!(once, twice, "{}: not a fixed point", path.display());
        assert_eq!(
            ast_without_spans(&text),
            ast_without_spans(&once),
            "{}: the syntax tree changed",
            path.display()
        );
        assert_eq!(
            meaning(&path, &text),
            meaning(&path, &once),
            "{}: the checked program or its diagnostics changed",
            path.display()
        );
        let comments = |t: &str| {
            deqc::fmt::lexer::lex(t)
                .into_iter()
                .filter(|t| t.is_comment())
                .map(|t| t.text.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(comments(&text), comments(&once), "{}", path.display());
    }
    assert!(
        formatted_count >= 50,
        "only {formatted_count} programs formatted"
    );
}

#[test]
fn the_repositorys_programs_are_formatted() {
    // tests/ui is left out on purpose: its snapshots point at lines and
    // columns, and its `//~` markers at lines.
    let mut files = deq_files("examples");
    files.extend(deq_files("examples/transfer"));
    files.extend(deq_files("stdlib"));
    files.extend(deq_files("tests/models"));
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let formatted = format_source(&text).unwrap();
        assert!(
            formatted == text,
            "{} is not formatted; run `deqc fmt {}`",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn the_canonical_layout() {
    let messy = "// head comment\nuse   nn ;\n\n\n\nconst  H=2*-3 ;   // trailing\n\
layer L[h:int,k :int=2 ](x:f32[ *,h ])->[*,h]{param w:[h,h]=eye(h) ; let y=x@w+x[..,0:k:1][ :, ::2];\n\
  equilibrium z:[B,h]=tanh(z@w+y)\n with solver=anderson(m=5),\n backward=implicit ;\n\n\n  z }\n\
model M(x: [B, 4])->[B,4]{ if true { x } else { -x } } train M { epochs=1;batch_size = 2 ; }\n\
fn f(a,b)=nn::relu(a)-b;/* block\n   comment */\n";
    let want = "// head comment\nuse nn;\n\nconst H = 2 * -3; // trailing\n\
layer L[h: int, k: int = 2](x: f32[*, h]) -> [*, h] {\n    param w: [h, h] = eye(h);\n    let y = x @ w + x[.., 0:k:1][:, ::2];\n    equilibrium z: [B, h] = tanh(z @ w + y)\n        with solver = anderson(m = 5),\n        backward = implicit;\n\n    z\n}\n\
model M(x: [B, 4]) -> [B, 4] { if true { x } else { -x } }\ntrain M {\n    epochs = 1;\n    batch_size = 2;\n}\n\
fn f(a, b) = nn::relu(a) - b; /* block\n   comment */\n";
    let got = format_source(messy).unwrap();
    assert_eq!(got, want, "got:\n{got}");
    assert_eq!(format_source(&got).unwrap(), got);
    assert_eq!(format_source("").unwrap(), "");
    assert_eq!(format_source("  // only\n\n").unwrap(), "// only\n");
}

#[test]
fn brackets_broken_over_lines_indent_one_level_each() {
    let src = "model M(x: [B, 4]) -> [B, 4] {\nequilibrium (a: [B, 4], b: [B, 4]) = (\nf(g(\nb,\n// why\na)),\n   b\n) with solver = broyden(tol = 1e-3);\na }\n";
    let want = "model M(x: [B, 4]) -> [B, 4] {\n    equilibrium (a: [B, 4], b: [B, 4]) = (\n        f(g(\n            b,\n            // why\n            a)),\n        b\n    ) with solver = broyden(tol = 1e-3);\n    a\n}\n";
    assert_eq!(format_source(src).unwrap(), want);
}

#[test]
fn a_file_that_does_not_parse_is_refused() {
    let err = format_source("const A = 1\nconst B = 2;").unwrap_err();
    assert!(err.to_string().contains("expected `;`"), "{err}");
}

#[test]
fn the_command_checks_and_rewrites_files() {
    let dir = std::env::temp_dir().join(format!("deqc-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let messy = dir.join("messy.deq");
    let tidy = dir.join("tidy.deq");
    let broken = dir.join("broken.deq");
    std::fs::write(&messy, "const A=1;\n").unwrap();
    std::fs::write(&tidy, "const A = 1;\n").unwrap();
    std::fs::write(&broken, "const A = ;\n").unwrap();
    let (m, t, b) = (
        messy.to_str().unwrap(),
        tidy.to_str().unwrap(),
        broken.to_str().unwrap(),
    );
    let (code, out, _) = deqc(&["fmt", "--check", m, t]);
    assert_eq!(code, 1);
    assert!(
        out.contains("messy.deq") && !out.contains("tidy.deq"),
        "{out}"
    );
    assert_eq!(std::fs::read_to_string(&messy).unwrap(), "const A=1;\n");
    let (code, _, _) = deqc(&["fmt", "--check", t]);
    assert_eq!(code, 0);
    let (code, _, err) = deqc(&["fmt", m, t]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&messy).unwrap(), "const A = 1;\n");
    let (code, _, err) = deqc(&["fmt", b]);
    assert_eq!(code, 1);
    assert!(err.contains("deq::parse::syntax"), "{err}");
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), "const A = ;\n");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------ proptest

fn sources() -> Vec<String> {
    let mut files = deq_files("examples");
    files.extend(deq_files("stdlib"));
    files.extend(deq_files("tests/models"));
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Whitespace (and comments) that may go between two tokens that had
/// whitespace between them.
fn gap() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just(" "),
        2 => Just("\n"),
        1 => Just("  \t "),
        1 => Just("\n\n\n"),
        1 => Just(" /* c */ "),
        1 => Just("/*x*/"),
        1 => Just(" // note\n"),
        1 => Just("\n    // own line\n"),
    ]
}

/// A program of the repository re-spaced at random: every gap replaced,
/// comments inserted, and some spaces added where there were none (except
/// inside `a::b` and `f32[`, where the grammar forbids them).
fn respaced() -> impl Strategy<Value = String> {
    let texts = sources();
    (
        0..texts.len(),
        proptest::collection::vec((gap(), any::<bool>()), 400),
    )
        .prop_map(move |(i, gaps)| {
            let text = &texts[i];
            let tokens = deqc::fmt::lexer::lex(text);
            let mut out = String::new();
            for (k, t) in tokens.iter().enumerate() {
                let (g, add) = gaps[k % gaps.len()];
                if k > 0 {
                    let p = &tokens[k - 1];
                    let glued = p.text == "::"
                        || t.text == "::"
                        || (p.text == ":" && t.text == ":")
                        || (t.text == "[" && ["f32", "f64", "i64"].contains(&p.text));
                    if t.space_before || p.is_comment() {
                        out.push_str(match g {
                            _ if p.kind == deqc::fmt::lexer::Kind::LineComment => "\n",
                            // `//*x*/` would start a line comment.
                            "/*x*/" if p.text.ends_with('/') => " /*x*/",
                            g => g,
                        });
                    } else if add && !glued {
                        out.push(' ');
                    }
                }
                out.push_str(t.text);
            }
            out
        })
}

#[derive(Debug, Clone)]
enum E {
    Name(&'static str),
    Num(&'static str),
    Neg(Box<E>),
    Bin(&'static str, Box<E>, Box<E>),
    Call(Box<E>, Vec<E>),
    Index(Box<E>, Vec<E>),
    Slice(Box<E>, Option<Box<E>>, Option<Box<E>>),
    Paren(Box<E>),
}

fn expr() -> impl Strategy<Value = E> {
    let leaf = prop_oneof![
        prop_oneof![Just("a"), Just("b"), Just("nn::x"), Just("true")].prop_map(E::Name),
        prop_oneof![Just("1"), Just("2.5"), Just("1e-3")].prop_map(E::Num),
    ];
    leaf.prop_recursive(5, 40, 4, |inner| {
        let op = prop_oneof![
            Just("+"),
            Just("-"),
            Just("*"),
            Just("/"),
            Just("@"),
            Just("^"),
            Just("=="),
            Just("<="),
            Just(">")
        ];
        prop_oneof![
            inner.clone().prop_map(|e| E::Neg(Box::new(e))),
            (op, inner.clone(), inner.clone()).prop_map(|(o, l, r)| E::Bin(
                o,
                Box::new(l),
                Box::new(r)
            )),
            (
                inner.clone(),
                proptest::collection::vec(inner.clone(), 0..3)
            )
                .prop_map(|(f, a)| E::Call(Box::new(f), a)),
            (
                inner.clone(),
                proptest::collection::vec(inner.clone(), 1..3)
            )
                .prop_map(|(x, i)| E::Index(Box::new(x), i)),
            (
                inner.clone(),
                proptest::option::of(inner.clone()),
                proptest::option::of(inner.clone())
            )
                .prop_map(|(x, lo, hi)| E::Slice(
                    Box::new(x),
                    lo.map(Box::new),
                    hi.map(Box::new)
                )),
            inner.prop_map(|e| E::Paren(Box::new(e))),
        ]
    })
}

/// `e` written with `sep` between its tokens where spaces are allowed.
fn write(e: &E, sep: &str) -> String {
    let list = |xs: &[E]| {
        xs.iter()
            .map(|x| write(x, sep))
            .collect::<Vec<_>>()
            .join(&format!(",{sep}"))
    };
    match e {
        E::Name(n) | E::Num(n) => n.to_string(),
        E::Neg(x) => format!("-{sep}{}", write(x, sep)),
        E::Bin(o, l, r) => format!(
            "({sep}{}{sep}{o}{sep}{}{sep})",
            write(l, sep),
            write(r, sep)
        ),
        E::Call(f, a) => format!("({}){sep}({sep}{}{sep})", write(f, sep), list(a)),
        E::Index(x, i) => format!("({})[{sep}{}{sep}]", write(x, sep), list(i)),
        E::Slice(x, lo, hi) => format!(
            "({})[{}{sep}:{sep}{}]",
            write(x, sep),
            lo.as_ref().map_or(String::new(), |l| write(l, sep)),
            hi.as_ref().map_or(String::new(), |h| write(h, sep))
        ),
        E::Paren(x) => format!("({sep}{}{sep})", write(x, sep)),
    }
}

fn check_formatting(text: &str) -> Result<(), TestCaseError> {
    let before = ast_without_spans(text);
    prop_assert!(
        before.is_ok(),
        "the generated program does not parse:\n{text}"
    );
    let once = format_source(text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    prop_assert_eq!(
        before,
        ast_without_spans(&once),
        "AST changed:\n{}\n---\n{}",
        text,
        once
    );
    let twice = format_source(&once).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&once, &twice, "not a fixed point:\n{}", text);
    for line in once.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let in_comment =
            line.trim_start().starts_with("//") || line.contains("/*") || line.contains("*/");
        prop_assert!(
            in_comment || (indent % 4 == 0 && !line.ends_with(' ') && !line.contains('\t')),
            "badly laid out line {:?} in\n{}",
            line,
            once
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn respaced_programs_format_to_a_fixed_point_with_the_same_tree(text in respaced()) {
        check_formatting(&text)?;
    }

    #[test]
    fn generated_expressions_format_to_a_fixed_point_with_the_same_tree(
        e in expr(),
        sep in prop_oneof![Just(""), Just(" "), Just("\n"), Just(" /**/ ")],
    ) {
        check_formatting(&format!("const X = {};\n", write(&e, sep)))?;
    }
}
