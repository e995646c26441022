//! Parser tests: the LANGUAGE.md examples, precedence, literals, spans and
//! syntax errors. Expressions are checked through [`sexpr`], a compact
//! fully-parenthesized rendering that makes grouping visible.

mod examples;
mod proptests;

use deqc::source::FileId;
use deqc::syntax::ast::*;
use deqc::syntax::print::print_file;
use deqc::syntax::{parse_file, ParseError};

fn parse(src: &str) -> File {
    match parse_file(FileId(0), src) {
        Ok(f) => f,
        Err(e) => panic!("parse failed: {e} at {:?}\n--- source:\n{src}", e.span()),
    }
}

fn parse_err(src: &str) -> ParseError {
    match parse_file(FileId(0), src) {
        Ok(f) => panic!("expected an error, parsed:\n{}", print_file(&f)),
        Err(e) => e,
    }
}

/// The value of `const X = <src>;`.
fn expr(src: &str) -> Expr {
    let file = parse(&format!("const X = {src};"));
    match file.items.into_iter().next() {
        Some(Item::Const(c)) => c.value,
        other => panic!("not a const: {other:?}"),
    }
}

fn sexpr(e: &Expr) -> String {
    let list = |xs: &[Expr]| xs.iter().map(sexpr).collect::<Vec<_>>().join(" ");
    let opt = |x: &Option<Expr>| x.as_ref().map_or("_".to_string(), sexpr);
    match &e.kind {
        ExprKind::Int(v) => v.to_string(),
        ExprKind::Float(v) => format!("{v:?}"),
        ExprKind::Bool(v) => v.to_string(),
        ExprKind::Str(s) => format!("{s:?}"),
        ExprKind::Path(p) => p
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join("::"),
        ExprKind::Tuple(xs) => format!("(tuple {})", list(xs)).replace(" )", ")"),
        ExprKind::List(xs) => format!("[{}]", list(xs)),
        ExprKind::Unary(UnOp::Neg, x) => format!("(neg {})", sexpr(x)),
        ExprKind::Binary(op, l, r) => format!("({} {} {})", op.symbol(), sexpr(l), sexpr(r)),
        ExprKind::Call { callee, args } => {
            let args: Vec<String> = args
                .iter()
                .map(|a| match &a.name {
                    Some(n) => format!("{}={}", n.name, sexpr(&a.value)),
                    None => sexpr(&a.value),
                })
                .collect();
            format!("(call {} {})", sexpr(callee), args.join(" ")).replace(" )", ")")
        }
        ExprKind::Bracket { base, items } => {
            let items: Vec<String> = items
                .iter()
                .map(|it| match it {
                    BracketItem::Expr(x) => sexpr(x),
                    BracketItem::Named { name, value, .. } => {
                        format!("{}={}", name.name, sexpr(value))
                    }
                    BracketItem::Slice {
                        start, end, step, ..
                    } => format!("{}:{}:{}", opt(start), opt(end), opt(step)),
                    BracketItem::Ellipsis(_) => "..".to_string(),
                })
                .collect();
            format!("(idx {} {})", sexpr(base), items.join(" ")).replace(" )", ")")
        }
        ExprKind::If {
            cond,
            then,
            otherwise,
        } => {
            let tail = |b: &Block| b.tail.as_ref().map_or("_".to_string(), |t| sexpr(t));
            format!("(if {} {} {})", sexpr(cond), tail(then), tail(otherwise))
        }
    }
}

fn check(src: &str, want: &str) {
    assert_eq!(sexpr(&expr(src)), want, "source: {src}");
}

// ------------------------------------------------------------ examples

#[test]
fn example_mnist_mlp() {
    let f = parse(examples::MNIST_MLP);
    assert_eq!(f.items.len(), 3);
    let Item::Layer(m) = &f.items[1] else {
        panic!()
    };
    assert_eq!(m.kind, LayerKind::Model);
    assert!(m.hyper.is_empty());
    assert_eq!(m.inputs.len(), 1);
    assert_eq!(m.output.as_ref().map(Vec::len), Some(1));
    let eq = m.body.stmts.iter().find_map(|s| match s {
        Stmt::Equilibrium { options, tuple, .. } => Some((options, *tuple)),
        _ => None,
    });
    let (options, tuple) = eq.expect("an equilibrium statement");
    assert!(!tuple);
    let names: Vec<&str> = options.iter().map(|o| o.name.name.as_str()).collect();
    assert_eq!(names, ["solver", "backward"]);
    assert_eq!(sexpr(m.body.tail.as_ref().unwrap()), "(call head z)");
    let Item::Train(t) = &f.items[2] else {
        panic!()
    };
    assert_eq!(t.model.name, "DeqMlp");
    assert_eq!(t.entries.len(), 5);
    assert_eq!(
        sexpr(&t.entries[0].value),
        r#"(call mnist "data/mnist-10k" flatten=true normalize=true)"#
    );
}

#[test]
fn example_mdeq() {
    let f = parse(examples::MDEQ);
    let Item::Layer(m) = &f.items[1] else {
        panic!()
    };
    let Some(Stmt::Equilibrium {
        states,
        tuple,
        body,
        options,
        ..
    }) = m
        .body
        .stmts
        .iter()
        .find(|s| matches!(s, Stmt::Equilibrium { .. }))
    else {
        panic!()
    };
    assert!(tuple);
    assert_eq!(states.len(), 2);
    assert!(matches!(&body.kind, ExprKind::Tuple(xs) if xs.len() == 2));
    assert_eq!(options.len(), 2);
    assert_eq!(
        sexpr(m.body.tail.as_ref().unwrap()),
        "(call head (call flatten (call avg_pool2d l 2 2) start=1))"
    );
}

#[test]
fn example_char_lm() {
    let f = parse(examples::CHAR_LM);
    assert_eq!(f.items.len(), 6);
    let Item::Layer(b) = &f.items[3] else {
        panic!()
    };
    assert_eq!(b.kind, LayerKind::Layer);
    let hyper: Vec<&str> = b.hyper.iter().map(|h| h.name.name.as_str()).collect();
    assert_eq!(hyper, ["d", "heads"]);
    assert!(matches!(b.hyper[0].ty, Some(ParamType::Int(_))));
    let Item::Layer(m) = &f.items[4] else {
        panic!()
    };
    assert_eq!(m.inputs[0].ty.dtype, Some(DType::I64));
}

#[test]
fn example_mondeq() {
    let f = parse(examples::MONDEQ);
    let Item::Layer(cell) = &f.items[1] else {
        panic!()
    };
    let params = cell
        .body
        .stmts
        .iter()
        .filter(|s| matches!(s, Stmt::Param { .. }));
    assert_eq!(params.count(), 4);
    let Stmt::Let { value, .. } = &cell.body.stmts[5] else {
        panic!()
    };
    assert_eq!(
        sexpr(value),
        "(- (+ (- (* (- 1.0 m) (call eye n)) (@ (call transpose a 0 1) a)) s) (call transpose s 0 1))"
    );
}

#[test]
fn example_equilibrium_snippet() {
    let src = examples::eq_snippet_in_model();
    let f = parse(&src);
    let Item::Layer(m) = &f.items[0] else {
        panic!()
    };
    let Stmt::Equilibrium { options, .. } = &m.body.stmts[0] else {
        panic!()
    };
    let names: Vec<&str> = options.iter().map(|o| o.name.name.as_str()).collect();
    assert_eq!(names, ["solver", "backward", "init"]);
}

#[test]
fn printing_is_deterministic_and_stamps_spans() {
    for src in [
        examples::MNIST_MLP,
        examples::MDEQ,
        examples::CHAR_LM,
        examples::MONDEQ,
    ] {
        let a = print_file(&parse(src));
        let b = print_file(&parse(src));
        assert_eq!(a, b);
        assert!(a.starts_with("File\n"));
    }
    let f = parse_file(FileId(7), "const A = 1;").unwrap();
    assert_eq!(f.items[0].span().file, FileId(7));
}

#[test]
fn print_snapshot_small() {
    let src = "use nn;\nfn f(a, k: int = 3) = a[.., 0:k] + -k^2;\n";
    let want = "\
File
  Use module nn @0..7
  Fn f @8..48
    Param a @13..14
    Param k @16..26
      type: int @19..22
      default: Int 3 @25..26
    body: Block @28..48
      tail: Binary + @30..47
        Bracket @30..40
          base: Path a @30..31
          Ellipsis @32..34
          Slice @36..39
            start: Int 0 @36..37
            end: Path k @38..39
        Neg @43..47
          Binary ^ @44..47
            Path k @44..45
            Int 2 @46..47
";
    assert_eq!(print_file(&parse(src)), want);
}

#[test]
fn print_snapshots_of_examples() {
    insta::assert_snapshot!("mnist_mlp", print_file(&parse(examples::MNIST_MLP)));
    insta::assert_snapshot!("mdeq", print_file(&parse(examples::MDEQ)));
}

// ---------------------------------------------------------- expressions

#[test]
fn precedence_and_associativity() {
    check("a + b * c", "(+ a (* b c))");
    check("a * b + c", "(+ (* a b) c)");
    check("a - b - c", "(- (- a b) c)");
    check("a / b * c @ d", "(@ (* (/ a b) c) d)");
    check("x @ w + b", "(+ (@ x w) b)");
    check("a < b + c", "(< a (+ b c))");
    check("a == b != c", "(!= (== a b) c)");
    check("a <= b >= c", "(>= (<= a b) c)");
    check("-x^2", "(neg (^ x 2))");
    check("2^3^2", "(^ 2 (^ 3 2))");
    check("2^-1", "(^ 2 (neg 1))");
    check("-a * b", "(* (neg a) b)");
    check("1 - -1", "(- 1 (neg 1))");
    check("- - a", "(neg (neg a))");
    check("(a + b) * c", "(* (+ a b) c)");
    check("-f(x)[0]", "(neg (idx (call f x) 0))");
    check("f(x)(y)", "(call (call f x) y)");
    check("a^b(c)", "(^ a (call b c))");
    check(
        "nn::Linear[784, 256](x)",
        "(call (idx nn::Linear 784 256) x)",
    );
    check("x[0][1]", "(idx (idx x 0) 1)");
}

#[test]
fn slices_and_ellipsis() {
    check("x[:, 0:10]", "(idx x _:_:_ 0:10:_)");
    check("x[.., -1]", "(idx x .. (neg 1))");
    check("x[1:-1]", "(idx x 1:(neg 1):_)");
    check("x[::2]", "(idx x _:_:2)");
    check("x[a::2]", "(idx x a:_:2)");
    check("x[T-1:]", "(idx x (- T 1):_:_)");
    check("x[:T - 1]", "(idx x _:(- T 1):_)");
    check("x[lo:hi:step]", "(idx x lo:hi:step)");
    check("x[:]", "(idx x _:_:_)");
    check("x[1::]", "(idx x 1:_:_)");
    check("x[stride = 2]", "(idx x stride=2)");
    check("x[a == 2]", "(idx x (== a 2))");
    check("x[]", "(idx x)");
    check("x[nn::k:3]", "(idx x nn::k:3:_)");
}

#[test]
fn named_args_and_comparisons() {
    check("f(k = 5, k == 5, j=1)", "(call f k=5 (== k 5) j=1)");
    check("f(a, k = -1)", "(call f a k=(neg 1))");
    check("f()", "(call f)");
}

#[test]
fn tuples_lists_and_parens() {
    check("()", "(tuple)");
    check("(a,)", "(tuple a)");
    check("(a)", "a");
    check("((a))", "a");
    check("(a, b)", "(tuple a b)");
    check("(a, b,)", "(tuple a b)");
    check("[a, b, -1]", "[a b (neg 1)]");
    check("[]", "[]");
    check("[1,]", "[1]");
    check("concat((a, b), 1)", "(call concat (tuple a b) 1)");
}

#[test]
fn trailing_commas_everywhere() {
    let src = "layer L[h: int, k: int = 2,](x: [*, h,], u: [B, h],) -> ([B, h], [B, h],) {
        let (a, b,) = f(x, u,);
        equilibrium (p: [B, h], q: [B, h],) = (a, b,) with solver = s(m = 1,);
        (p, q)
    }";
    let f = parse(src);
    let Item::Layer(l) = &f.items[0] else {
        panic!()
    };
    assert_eq!((l.hyper.len(), l.inputs.len()), (2, 2));
    assert_eq!(l.output.as_ref().map(Vec::len), Some(2));
    assert_eq!(l.inputs[0].ty.dims.len(), 2);
}

#[test]
fn comments_everywhere() {
    let src = "// head\n/* block\n * with stars */use /*a*/ nn /*b*/;//x\n\
        const /**/ A /* */ = /* mid */ 1 /* */ + // line\n 2 /***/;\n\
        model M(x /*c*/: [B /*d*/, 4 /**/]) /*e*/ -> [B, 4] { x // tail\n }\n// last line without newline";
    let f = parse(src);
    assert_eq!(f.items.len(), 3);
    let Item::Const(c) = &f.items[1] else {
        panic!()
    };
    assert_eq!(sexpr(&c.value), "(+ 1 2)");
    check("a / /* c */ b", "(/ a b)");
    check("a /*/ still comment */ + b", "(+ a b)");
    assert!(parse("").items.is_empty());
    assert!(parse("  // only a comment").items.is_empty());
}

#[test]
fn keywords_as_identifier_prefixes() {
    check("letter + iffy + returned", "(+ (+ letter iffy) returned)");
    check(
        "true_val + model_x + with_ + elsewhere",
        "(+ (+ (+ true_val model_x) with_) elsewhere)",
    );
    check("int + float + bool + f32", "(+ (+ (+ int float) bool) f32)");
    check("trueish", "trueish");
    check("true", "true");
    check("false", "false");
    let f = parse("fn usex(layered, constant) = layered;");
    let Item::Fn(func) = &f.items[0] else {
        panic!()
    };
    assert_eq!(func.name.name, "usex");
}

#[test]
fn if_chains() {
    check("if c { 1 } else { 2 }", "(if c 1 2)");
    check(
        "if a { 1 } else if b { 2 } else { 3 }",
        "(if a 1 (if b 2 3))",
    );
    check(
        "if a { 1 } else if b { 2 } else if c { 3 } else { 4 }",
        "(if a 1 (if b 2 (if c 3 4)))",
    );
    check(
        "if x < 1 { let y = 2; y } else { 0 } + 1",
        "(+ (if (< x 1) y 0) 1)",
    );
    let e = expr("if a { 1 } else if b { 2 } else { 3 }");
    let ExprKind::If { otherwise, .. } = &e.kind else {
        panic!()
    };
    // The `else if` block spans the nested `if`, which starts at its `if`.
    assert_eq!((otherwise.span.start, otherwise.span.end), (26, 47));
    assert!(otherwise.stmts.is_empty());
    // `else` is required.
    assert!(parse_file(FileId(0), "const X = if a { 1 };").is_err());
}

#[test]
fn numbers_and_strings() {
    check("42", "42");
    check("0", "0");
    check("0.5", "0.5");
    check("1e-4", "0.0001");
    check("2.5E3", "2500.0");
    check("1E5", "100000.0");
    check("1e+3", "1000.0");
    check("9223372036854775807", "9223372036854775807");
    assert!(matches!(expr("1E5").kind, ExprKind::Float(_)));
    assert!(matches!(expr("7").kind, ExprKind::Int(7)));
    check(r#""a \"q\" \\ \n \t""#, r#""a \"q\" \\ \n \t""#);
    check(r#""héllo""#, r#""héllo""#);
    check(r#""""#, r#""""#);
    let f = parse(r#"use "lib/x.deq";"#);
    let Item::Use(u) = &f.items[0] else { panic!() };
    assert!(matches!(&u.target, UseTarget::File { path, .. } if path == "lib/x.deq"));
}

#[test]
fn items_and_types() {
    let src = "const H = 256;
fn f(a, b, k: int = 3) = a + b * k;
fn g(a, t: f64[B, 4 * d], on: bool = true, s: float) { let b = a; return b; }
layer Plain[](x: [*, h]) { x }
layer Bare(x: []) { x }
model M(x: i64[B, T]) -> [B, T + 2] { x }
train M { epochs = 1; }";
    let f = parse(src);
    assert_eq!(f.items.len(), 7);
    let Item::Fn(func) = &f.items[1] else {
        panic!()
    };
    assert!(func.body.stmts.is_empty());
    assert_eq!(sexpr(func.body.tail.as_ref().unwrap()), "(+ a (* b k))");
    let Item::Fn(g) = &f.items[2] else { panic!() };
    let Some(ParamType::Tensor(t)) = &g.params[1].ty else {
        panic!()
    };
    assert_eq!(t.dtype, Some(DType::F64));
    let DimSyntax::Expr(d) = &t.dims[1] else {
        panic!()
    };
    assert_eq!(sexpr(d), "(* 4 d)");
    assert!(matches!(g.params[2].ty, Some(ParamType::Bool(_))));
    assert!(matches!(g.params[3].ty, Some(ParamType::Float(_))));
    assert!(matches!(g.body.stmts[1], Stmt::Return { .. }));
    assert!(g.body.tail.is_none());
    let Item::Layer(plain) = &f.items[3] else {
        panic!()
    };
    assert!(plain.hyper.is_empty() && plain.output.is_none());
    assert!(matches!(plain.inputs[0].ty.dims[0], DimSyntax::Rest(_)));
    let Item::Layer(bare) = &f.items[4] else {
        panic!()
    };
    assert!(bare.inputs[0].ty.dims.is_empty());
}

// --------------------------------------------------------------- errors

/// `(code, byte offset)` of the error for `src`.
fn err_at(src: &str) -> (&'static str, usize) {
    let e = parse_err(src);
    (e.code_str(), e.span().offset())
}

#[test]
fn syntax_errors_point_at_the_right_place() {
    // Missing `;`: just after the token that should have ended.
    assert_eq!(
        err_at("const A = 1\nconst B = 2;"),
        ("deq::parse::syntax", 11)
    );
    let e = parse_err("const A = 1\nconst B = 2;");
    assert_eq!(e.to_string(), "expected `;` or an operator, found `const`");
    let src = "model M(x: [B]) { let y = x let z = y; z }";
    assert_eq!(err_at(src), ("deq::parse::syntax", 28));
    // Missing `}`: at the end of input (the last character when there is no
    // trailing whitespace, else just after the last token).
    let src = "model M(x: [B]) -> [B] { x";
    assert_eq!(err_at(src), ("deq::parse::syntax", 25));
    assert_eq!(
        parse_err(src).to_string(),
        "expected `}` or an operator, found end of input"
    );
    assert_eq!(
        err_at("model M(x: [B]) -> [B] { x\n\n"),
        ("deq::parse::syntax", 26)
    );
    // A bad token in a type.
    assert_eq!(
        err_at("model M(x: [B, %]) { x }"),
        ("deq::parse::syntax", 15)
    );
    assert_eq!(
        err_at("model M(x: i64 [B]) { x }"),
        ("deq::parse::syntax", 11)
    );
    // A keyword where a name belongs, and a missing expression.
    let e = parse_err("model M(x: [B]) { let let = 1; x }");
    assert_eq!(e.span().offset(), 22);
    assert!(e.to_string().contains("an identifier"));
    assert_eq!(
        err_at("model M(x: [B]) { let y = ; x }"),
        ("deq::parse::syntax", 26)
    );
    assert_eq!(
        parse_err("const X = ;").to_string(),
        "expected an expression, found `;`"
    );
    assert_eq!(err_at("garbage"), ("deq::parse::syntax", 0));
    assert_eq!(err_at("const A = 1; garbage"), ("deq::parse::syntax", 13));
    assert_eq!(err_at("const X = 3x;"), ("deq::parse::syntax", 10));
    assert_eq!(err_at("const X = if a { 1 };"), ("deq::parse::syntax", 20));
    assert_eq!(err_at("const X = a ! b;"), ("deq::parse::syntax", 12));
    assert_eq!(err_at("const X = a\u{a0}+ b;"), ("deq::parse::syntax", 11));
}

#[test]
fn lexical_errors() {
    assert_eq!(
        err_at("use \"abc;\nconst A = 1;"),
        ("deq::parse::unterminated_string", 4)
    );
    assert_eq!(
        err_at("const S = \"abc\\\""),
        ("deq::parse::unterminated_string", 10)
    );
    assert_eq!(
        err_at("const A = 1; /* abc"),
        ("deq::parse::unterminated_comment", 13)
    );
    assert_eq!(err_at("/* a /* b */ c */"), ("deq::parse::syntax", 13));
    let e = parse_err("const A = 99999999999999999999;");
    assert_eq!(
        (e.code_str(), e.span().offset(), e.span().len()),
        ("deq::parse::int_overflow", 10, 20)
    );
    assert_eq!(
        err_at("const A = 9223372036854775808;"),
        ("deq::parse::int_overflow", 10)
    );
    assert_eq!(
        err_at("const A = 1e999;"),
        ("deq::parse::float_overflow", 10)
    );
    assert_eq!(
        err_at(r#"const S = "a\qb";"#),
        ("deq::parse::bad_escape", 12)
    );
}

fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("const X = {}{inner}{};", open.repeat(n), close.repeat(n))
}

#[test]
fn nesting_up_to_the_limit_parses() {
    // Runs on the test harness's thread, with its default stack.
    let n = deqc::syntax::parser::MAX_NESTING - 1;
    for src in [
        nested("(", "a", ")", n),
        nested("[", "a", "]", n),
        nested("f(", "a", ")", n),
        nested("x[", "a", "]", n),
        nested("x[1:", "a", "]", n),
        nested("f(k = ", "a", ")", n),
        nested("(a, ", "a", ")", n),
        nested("if c { ", "a", " } else { 0 }", n),
    ] {
        assert!(parse_file(FileId(0), &src).is_ok(), "{}", &src[..40]);
    }
    let chain = vec!["a"; 200].join(" + ");
    assert!(parse_file(FileId(0), &format!("const X = {chain};")).is_ok());
    let ty = format!(
        "model M(x: [{}B{}]) {{ x }}",
        "(".repeat(n - 1),
        ")".repeat(n - 1)
    );
    assert!(parse_file(FileId(0), &ty).is_ok());
}

#[test]
fn too_deep_nesting_is_an_error_not_a_crash() {
    let limit = deqc::syntax::parser::MAX_NESTING;
    let too_deep = |src: &str| parse_err(src).code_str() == "deq::parse::too_deep";
    // The first bracket past the limit is the one reported.
    assert_eq!(
        err_at(&nested("(", "a", ")", limit + 1)),
        ("deq::parse::too_deep", 10 + limit)
    );
    assert!(too_deep(&nested("[", "a", "]", 100_000)));
    assert!(too_deep(&format!("const X = {};", "(".repeat(1_000_000))));
    assert!(too_deep(&nested("x[", "a", "]", limit + 1)));
    // Deep trees without brackets: operator chains, prefix runs, postfix and
    // `else if` chains.
    assert!(too_deep(&format!(
        "const X = {};",
        vec!["a"; limit + 2].join(" + ")
    )));
    assert!(too_deep(&format!(
        "const X = {};",
        vec!["a"; limit + 2].join("^")
    )));
    assert!(too_deep(&format!("const X = {}a;", "-".repeat(100_000))));
    assert!(too_deep(&format!(
        "const X = {};",
        vec!["a"; 100_000].join("^")
    )));
    assert!(too_deep(&format!(
        "const X = f{};",
        "(a)".repeat(limit + 1)
    )));
    let chain = "if c { 1 } else ".repeat(limit + 1);
    assert!(too_deep(&format!("const X = {chain}{{ 0 }};")));
    // Brackets and chains multiply: each level is fine, the whole is not.
    let inner = vec!["a"; 200].join(" + ");
    assert!(too_deep(&nested("(", &inner, ") + a", 100)));
}

#[test]
fn rendered_errors() {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let cases = [
        "const A = 1\nconst B = 2;",
        "model M(x: [B]) -> [B] { x",
        "model M(x: [B, %]) { x }",
        "use \"abc;\nconst A = 1;",
        "const A = 1; /* abc",
        "const A = 99999999999999999999;",
        "model M(x: [B]) { let let = 1; x }",
        "const X = f(a b);",
        "garbage",
        "const X = \"a\\qb\";",
        "layer L[h: int](x: [B, h]) -> { x }",
    ];
    let handler =
        GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(80);
    let mut out = String::new();
    for src in cases {
        let report = miette::Report::new(parse_err(src)).with_source_code(src.to_string());
        handler.render_report(&mut out, report.as_ref()).unwrap();
        out.push('\n');
    }
    insta::assert_snapshot!("rendered_errors", out);
}
