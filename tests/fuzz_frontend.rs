//! The whole front end (parse + check) never panics: on arbitrary text, and
//! on randomly mutated copies of the examples and the stdlib.

use proptest::prelude::*;

mod mutate;

use mutate::{apply, Edit, SEEDS};

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
