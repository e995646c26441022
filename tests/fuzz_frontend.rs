//! The whole front end (parse + check) never panics: on arbitrary text, and
//! on randomly mutated copies of the examples and the stdlib.

use proptest::prelude::*;

const SEEDS: &[&str] = &[
    include_str!("../examples/mnist_mlp.deq"),
    include_str!("../examples/mdeq_mnist.deq"),
    include_str!("../examples/char_lm.deq"),
    include_str!("../examples/mondeq.deq"),
    include_str!("../stdlib/nn.deq"),
];

/// Tokens that make mutations likely to stay near-valid.
const TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    ":",
    "::",
    "..",
    "=",
    "==",
    "@",
    "^",
    "-",
    "*",
    "/",
    "+",
    "<",
    "0",
    "1",
    "-1",
    "2.5",
    "B",
    "T",
    "x",
    "z",
    "nn::Linear",
    "tanh",
    "reshape",
    "sum",
    "axis = 3",
    "let ",
    "param ",
    "equilibrium ",
    "with ",
    "return ",
    "if true { x } else { z }",
    "\"s\"",
    "[*, 4]",
    "i64",
    "anderson(m = 0)",
    "unroll",
    "use \"nope.deq\";",
    "layer",
    "model",
    "fn f(a) = f(a);",
];

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, usize),
    Swap(usize, usize),
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        if chars.is_empty() {
            break;
        }
        match *e {
            Edit::Delete(at, len) => {
                let at = at % chars.len();
                let end = (at + len % 12).min(chars.len());
                chars.drain(at..end);
            }
            Edit::Insert(at, tok) => {
                let at = at % (chars.len() + 1);
                let t: Vec<char> = TOKENS[tok % TOKENS.len()].chars().collect();
                chars.splice(at..at, t);
            }
            Edit::Swap(a, b) => {
                let (a, b) = (a % chars.len(), b % chars.len());
                chars.swap(a, b);
            }
        }
    }
    chars.into_iter().collect()
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Delete(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Insert(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let c = deqc::compile_source("fuzz.deq", &text);
        let _ = c.render_plain(80);
    }

    #[test]
    fn mutated_examples_never_panic(seed in 0..SEEDS.len(), edits in proptest::collection::vec(edit(), 1..6)) {
        let text = apply(SEEDS[seed], &edits);
        let c = deqc::compile_source("fuzz.deq", &text);
        let _ = c.render_plain(80);
    }
}
