//! `parse_file` never panics: on arbitrary text, on random bytes read as
//! lossy UTF-8, on token soup, and on randomly mutated copies of the
//! LANGUAGE.md examples. Whatever it returns, a successful parse prints
//! deterministically and an error's span lies inside the text.

use deqc::source::FileId;
use deqc::syntax::parse_file;
use deqc::syntax::print::print_file;
use proptest::prelude::*;

use super::examples;

fn examples() -> Vec<String> {
    vec![
        examples::MNIST_MLP.to_string(),
        examples::MDEQ.to_string(),
        examples::CHAR_LM.to_string(),
        examples::MONDEQ.to_string(),
        examples::eq_snippet_in_model(),
    ]
}

/// Parse and check the result's invariants.
fn check(text: &str) {
    match parse_file(FileId(1), text) {
        Ok(file) => {
            let a = print_file(&file);
            assert_eq!(a, print_file(&file));
            for item in &file.items {
                let s = item.span();
                assert!(s.start <= s.end && s.end as usize <= text.len());
            }
        }
        Err(e) => {
            let s = e.span();
            assert!(
                s.offset() + s.len() <= text.len(),
                "{e:?} outside {} bytes",
                text.len()
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Insert(usize, char),
    Swap(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let chars = prop_oneof![
        Just('('),
        Just(')'),
        Just('['),
        Just(']'),
        Just('{'),
        Just('}'),
        Just(';'),
        Just(','),
        Just(':'),
        Just('='),
        Just('"'),
        Just('\\'),
        Just('/'),
        Just('*'),
        Just('-'),
        Just('^'),
        Just('.'),
        Just('e'),
        Just('9'),
        Just(' '),
        Just('\n'),
        any::<char>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), chars).prop_map(|(i, c)| Edit::Insert(i, c)),
        (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Edit::Swap(i, j)),
        (any::<usize>(), 1usize..40).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for e in edits {
        let n = chars.len();
        match *e {
            Edit::Delete(i) if n > 0 => {
                chars.remove(i % n);
            }
            Edit::Insert(i, c) => chars.insert(i % (n + 1), c),
            Edit::Swap(i, j) if n > 0 => chars.swap(i % n, j % n),
            Edit::Duplicate(i, len) if n > 0 => {
                let start = i % n;
                let piece: Vec<char> = chars[start..(start + len).min(n)].to_vec();
                chars.splice(start..start, piece);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// Besides the keywords (`deqc::syntax::KEYWORDS`): names, types,
/// punctuation, literals, comments and blanks.
const OTHER_TOKENS: &[&str] = &[
    "int", "f32", "i64", "x", "nn", "::", "(", ")", "[", "]", "{", "}", ";", ",", ":", "=", "==",
    "->", "..", "*", "+", "-", "^", "@", "<=", "1", "2.5", "1e-4", "\"s\"", "//c\n", "/*c*/", " ",
    "\n",
];

/// Every token the soup is made of.
fn tokens() -> Vec<&'static str> {
    deqc::syntax::KEYWORDS
        .iter()
        .chain(OTHER_TOKENS)
        .copied()
        .collect()
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn token_soup_never_panics(
        toks in proptest::collection::vec(proptest::sample::select(tokens()), 0..120)
    ) {
        check(&toks.concat());
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..5,
        edits in proptest::collection::vec(edit(), 1..12),
    ) {
        check(&apply(&examples()[which], &edits));
    }
}
