//! The front-end fuzzer's corpus and mutations, shared by
//! `tests/fuzz_frontend.rs` (the checker never panics) and `tests/lsp.rs`
//! (the language server survives the same programs sent as edits).
#![allow(dead_code)]

pub const SEEDS: &[&str] = &[
    include_str!("../../examples/mnist_mlp.deq"),
    include_str!("../../examples/mdeq_mnist.deq"),
    include_str!("../../examples/char_lm.deq"),
    include_str!("../../examples/mondeq.deq"),
    include_str!("../../stdlib/nn.deq"),
];

/// Tokens that make mutations likely to stay near-valid.
pub const TOKENS: &[&str] = &[
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
pub enum Edit {
    Delete(usize, usize),
    Insert(usize, usize),
    Swap(usize, usize),
}

pub fn apply(text: &str, edits: &[Edit]) -> String {
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
