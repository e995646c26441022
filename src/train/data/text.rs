//! The text loader (language modelling) and its vocabulary.
//!
//! A folder holds `*.train.txt`, `*.test.txt` and optionally `*.valid.txt`,
//! each plain or gzipped. Tokens:
//! - `char` level: every Unicode scalar value of a line, and after each line
//!   the newline character `"\n"` as a token;
//! - `word` level: the whitespace-separated words of a line, and after each
//!   line the token [`EOS_TOKEN`] (`<eos>`).
//!
//! (`\r\n` line ends count as `\n`.) The vocabulary is built from the train
//! split only: tokens ordered by frequency, most frequent first, ties broken
//! by the token's UTF-8 bytes in ascending order. The unknown id is always
//! the LAST id of the vocabulary, spelled [`UNK_TOKEN`] (`<unk>`):
//! - `vocab = None`: every distinct train token gets an id `0..d`, and the
//!   unknown id is `d` (it catches valid/test tokens never seen in train);
//! - `vocab = Some(n)`: the `min(n - 1, d)` most frequent train tokens get
//!   ids, all rarer ones map to the unknown id `min(n - 1, d)`; so every id
//!   is `< n`, and the unknown id is `n - 1` whenever the train split has at
//!   least `n - 1` distinct tokens.
//!
//! A literal `<unk>` word in the text (as in WikiText) is the unknown token.
//!
//! Samples: the split's token stream is cut into non-overlapping windows:
//! sample `i` has `x = ids[i*T .. i*T+T]` and `y = ids[i*T+1 .. i*T+T+1]`
//! (`T = seq_len`), so there are `(len - 1) / T` samples and the tokens past
//! the last full window are dropped. Both fields are i64 `[N, T]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::io::{find_by_suffix, read_text};
use super::{DataError, Dataset, HostArray, Splits};
use crate::sema::spec::TextLevel;

/// The token that ends a line at word level.
pub const EOS_TOKEN: &str = "<eos>";
/// The spelling of the unknown id.
pub const UNK_TOKEN: &str = "<unk>";
const NEWLINE: &str = "\n";

/// A vocabulary: token ids `0..len()`, the last one unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    level: TextLevel,
    /// `tokens[id]`; the last entry is [`UNK_TOKEN`].
    tokens: Vec<String>,
    index: HashMap<String, i64>,
}

impl Vocab {
    /// Build from token counts (see the module documentation for the order).
    fn from_counts(level: TextLevel, counts: HashMap<&str, u64>, max: Option<usize>) -> Vocab {
        let mut sorted: Vec<(&str, u64)> = counts.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        let keep = match max {
            Some(n) => sorted.len().min(n.saturating_sub(1)),
            None => sorted.len(),
        };
        let tokens = sorted[..keep]
            .iter()
            .map(|(t, _)| t.to_string())
            .chain(std::iter::once(UNK_TOKEN.to_string()))
            .collect();
        Vocab::from_tokens(level, tokens)
    }

    fn from_tokens(level: TextLevel, tokens: Vec<String>) -> Vocab {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as i64))
            .collect();
        Vocab {
            level,
            tokens,
            index,
        }
    }

    pub fn level(&self) -> TextLevel {
        self.level
    }

    /// Number of ids, the unknown id included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true: the unknown id is always there.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The unknown id: always `len() - 1`.
    pub fn unk_id(&self) -> i64 {
        self.tokens.len() as i64 - 1
    }

    /// The id of `token`, or the unknown id.
    pub fn id(&self, token: &str) -> i64 {
        self.index.get(token).copied().unwrap_or(self.unk_id())
    }

    pub fn token(&self, id: i64) -> Option<&str> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.tokens.get(i))
            .map(String::as_str)
    }

    /// All tokens, by id (the last is [`UNK_TOKEN`]).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// `{"level": "char"|"word", "unk": id, "tokens": [...]}`.
    pub fn to_json(&self) -> String {
        let level = match self.level {
            TextLevel::Char => "char",
            TextLevel::Word => "word",
        };
        json!({"level": level, "unk": self.unk_id(), "tokens": self.tokens}).to_string()
    }

    /// Read back [`Vocab::to_json`]; an error says what is wrong.
    pub fn from_json(text: &str) -> Result<Vocab, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        let level = match v.get("level").and_then(Value::as_str) {
            Some("char") => TextLevel::Char,
            Some("word") => TextLevel::Word,
            _ => return Err("expected \"level\": \"char\" or \"word\"".into()),
        };
        let tokens = v
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or("expected \"tokens\": an array of strings")?
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or("expected \"tokens\": an array of strings")?;
        if tokens.last().map(String::as_str) != Some(UNK_TOKEN) {
            return Err(format!("expected the last token to be {UNK_TOKEN:?}"));
        }
        let vocab = Vocab::from_tokens(level, tokens);
        if vocab.index.len() != vocab.tokens.len() {
            return Err("expected distinct tokens".into());
        }
        Ok(vocab)
    }

    /// The ids of a text's token stream.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut ids = Vec::new();
        for_each_token(text, self.level, |t| ids.push(self.id(t)));
        ids
    }
}

/// Call `f` on every token of `text` in order.
fn for_each_token<'a>(text: &'a str, level: TextLevel, mut f: impl FnMut(&'a str)) {
    for line in text.lines() {
        match level {
            TextLevel::Char => {
                for (i, c) in line.char_indices() {
                    f(&line[i..i + c.len_utf8()]);
                }
                f(NEWLINE);
            }
            TextLevel::Word => {
                line.split_whitespace().for_each(&mut f);
                f(EOS_TOKEN);
            }
        }
    }
}

/// The one file of `dir` named `*.{split}.txt[.gz]`.
fn split_file(dir: &Path, split: &str, required: bool) -> Result<Option<PathBuf>, DataError> {
    let suffix = format!(".{split}.txt");
    let mut found = find_by_suffix(dir, &suffix)?;
    match found.len() {
        0 if required => Err(DataError::Missing {
            path: dir.join(format!("*{suffix}")),
            expected: format!("a file `*{suffix}` or `*{suffix}.gz` in {}", dir.display()),
        }),
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(DataError::malformed(
            dir,
            format!("exactly one `*{suffix}[.gz]` file"),
            format!("{found:?}"),
        )),
    }
}

/// Cut an id stream into `[N, seq_len]` inputs and targets shifted by one.
fn windows(path: &Path, ids: &[i64], seq_len: usize) -> Result<Dataset, DataError> {
    let n = ids.len().saturating_sub(1) / seq_len;
    if n == 0 {
        return Err(DataError::malformed(
            path,
            format!("at least {} tokens (seq_len + 1)", seq_len + 1),
            format!("{} tokens", ids.len()),
        ));
    }
    let mut x = Vec::with_capacity(n * seq_len);
    let mut y = Vec::with_capacity(n * seq_len);
    for i in 0..n {
        x.extend_from_slice(&ids[i * seq_len..(i + 1) * seq_len]);
        y.extend_from_slice(&ids[i * seq_len + 1..(i + 1) * seq_len + 1]);
    }
    let bad = || DataError::malformed(path, "consistent sizes", "a size overflow");
    let x = HostArray::i64(vec![n, seq_len], x).ok_or_else(bad)?;
    let y = HostArray::i64(vec![n, seq_len], y).ok_or_else(bad)?;
    Dataset::new(vec![("x".into(), x), ("y".into(), y)]).ok_or_else(bad)
}

/// Load the text folder `path` (see the module documentation).
pub fn text(
    path: impl AsRef<Path>,
    level: TextLevel,
    seq_len: usize,
    vocab: Option<usize>,
) -> Result<Splits, DataError> {
    let dir = path.as_ref();
    if !dir.is_dir() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
            expected: "a folder with `*.train.txt[.gz]` and `*.test.txt[.gz]`".into(),
        });
    }
    if seq_len == 0 {
        return Err(DataError::malformed(dir, "seq_len >= 1", "seq_len = 0"));
    }
    if vocab == Some(0) {
        return Err(DataError::malformed(dir, "vocab >= 1", "vocab = 0"));
    }
    let train_path = split_file(dir, "train", true)?.ok_or_else(|| DataError::Missing {
        path: dir.to_path_buf(),
        expected: "a train file".into(),
    })?;
    let test_path = split_file(dir, "test", true)?.ok_or_else(|| DataError::Missing {
        path: dir.to_path_buf(),
        expected: "a test file".into(),
    })?;
    let valid_path = split_file(dir, "valid", false)?;

    let train_text = read_text(&train_path)?;
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for_each_token(&train_text, level, |t| {
        if t != UNK_TOKEN {
            *counts.entry(t).or_insert(0) += 1;
        }
    });
    let vocab = Vocab::from_counts(level, counts, vocab);

    let train = windows(&train_path, &vocab.encode(&train_text), seq_len)?;
    drop(train_text);
    let load = |p: &Path| -> Result<Dataset, DataError> {
        windows(p, &vocab.encode(&read_text(p)?), seq_len)
    };
    let test = load(&test_path)?;
    let valid = valid_path.as_deref().map(load).transpose()?;
    Ok(Splits {
        train,
        valid,
        test: Some(test),
        vocab: Some(vocab),
        standardization: None,
    })
}
