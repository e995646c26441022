//! Parser tests: the LANGUAGE.md examples, precedence, literals, errors.

mod examples;

use deqc::source::FileId;
use deqc::syntax::{parse_file, print::print_file};

#[test]
fn scratch() {
    for src in [
        examples::MNIST_MLP,
        examples::MDEQ,
        examples::CHAR_LM,
        examples::MONDEQ,
        &examples::eq_snippet_in_model(),
    ] {
        match parse_file(FileId(0), src) {
            Ok(f) => println!("{}", print_file(&f)),
            Err(e) => panic!("{e:?}"),
        }
    }
}
