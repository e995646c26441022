//! The formatter's token stream: words, numbers, strings, punctuation and
//! comments, each with the whitespace that preceded it in the source.
//!
//! Guarantees: concatenating every token's text with its original
//! whitespace gives back the input exactly; comments are tokens (their text
//! verbatim, a line comment without its line break), so a formatter that
//! only changes whitespace between tokens keeps them in place. The lexer is
//! run on text that already parsed, so it never has to report errors: an
//! unexpected character becomes a one-character punctuation token.

/// What a token is, as far as layout is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An identifier or a keyword.
    Word,
    Number,
    Str,
    Punct,
    LineComment,
    BlockComment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: Kind,
    pub text: &'a str,
    /// Line breaks in the whitespace before this token.
    pub newlines_before: usize,
    /// Whether any whitespace came before this token (on its line or not).
    pub space_before: bool,
}

impl Token<'_> {
    pub fn is_comment(&self) -> bool {
        matches!(self.kind, Kind::LineComment | Kind::BlockComment)
    }

    pub fn is(&self, text: &str) -> bool {
        self.kind == Kind::Punct && self.text == text
    }
}

/// Two-character punctuation, matched before single characters. `::` is
/// one token only between two names (`nn::Linear`); elsewhere it is two
/// slice colons (`x[::2]`).
const PAIRS: [&str; 6] = ["->", "..", "<=", ">=", "==", "!="];

/// Split `text` into tokens.
pub fn lex(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let ws_start = i;
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'\r' | b'\n') {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let newlines_before = bytes[ws_start..i].iter().filter(|b| **b == b'\n').count();
        let space_before = i > ws_start;
        let start = i;
        let rest = &text[i..];
        let kind = if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
            Kind::LineComment
        } else if let Some(body) = rest.strip_prefix("/*") {
            i += body.find("*/").map_or(rest.len(), |e| e + 4);
            Kind::BlockComment
        } else if rest.starts_with('"') {
            i += string_len(rest);
            Kind::Str
        } else if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Kind::Word
        } else if bytes[i].is_ascii_digit() {
            i += number_len(rest);
            Kind::Number
        } else if rest.starts_with("::")
            && tokens
                .last()
                .is_some_and(|t: &Token| t.kind == Kind::Word && !space_before)
            && rest[2..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        {
            i += 2;
            Kind::Punct
        } else if let Some(p) = PAIRS.iter().find(|p| rest.starts_with(**p)) {
            i += p.len();
            Kind::Punct
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            Kind::Punct
        };
        tokens.push(Token {
            kind,
            text: &text[start..i],
            newlines_before,
            space_before,
        });
    }
    tokens
}

/// Length of the string literal at the start of `rest` (which begins with
/// `"`): up to the closing quote, escapes skipped.
fn string_len(rest: &str) -> usize {
    let mut chars = rest.char_indices().skip(1);
    while let Some((k, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => return k + 1,
            '\n' => return k,
            _ => {}
        }
    }
    rest.len()
}

/// Length of the number at the start of `rest`: digits, an optional
/// `.digits` fraction and an optional exponent, as the grammar has them.
fn number_len(rest: &str) -> usize {
    let b = rest.as_bytes();
    let digits = |mut k: usize| {
        while k < b.len() && b[k].is_ascii_digit() {
            k += 1;
        }
        k
    };
    let mut k = digits(0);
    if k + 1 < b.len() && b[k] == b'.' && b[k + 1].is_ascii_digit() {
        k = digits(k + 1);
    }
    if k < b.len() && (b[k] == b'e' || b[k] == b'E') {
        let mut e = k + 1;
        if e < b.len() && (b[e] == b'+' || b[e] == b'-') {
            e += 1;
        }
        if e < b.len() && b[e].is_ascii_digit() {
            k = digits(e);
        }
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(src: &str) -> Vec<&str> {
        lex(src).into_iter().map(|t| t.text).collect()
    }

    #[test]
    fn splits_every_kind_of_token() {
        assert_eq!(
            texts("let x=1.5e-3+y::z; // c\n/* a\n b */\"s\\\"t\"->[..]"),
            [
                "let",
                "x",
                "=",
                "1.5e-3",
                "+",
                "y",
                "::",
                "z",
                ";",
                "// c",
                "/* a\n b */",
                "\"s\\\"t\"",
                "->",
                "[",
                "..",
                "]"
            ]
        );
        let t = lex("a\n\n  b c");
        assert_eq!((t[1].newlines_before, t[1].space_before), (2, true));
        assert_eq!((t[2].newlines_before, t[2].space_before), (0, true));
        assert!(!t[0].space_before);
    }

    #[test]
    fn numbers_stop_where_the_grammar_does() {
        assert_eq!(texts("1..2"), ["1", "..", "2"]);
        assert_eq!(texts("2e"), ["2", "e"]);
        assert_eq!(texts("3E+4"), ["3E+4"]);
        assert_eq!(
            texts("x[a::2, ::b]"),
            ["x", "[", "a", ":", ":", "2", ",", ":", ":", "b", "]"]
        );
        assert_eq!(texts("nn::k:3"), ["nn", "::", "k", ":", "3"]);
    }
}
