//! Loader tests on tiny generated files (every malformed case), on the
//! bundled data, and batching/shuffling tests.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use flate2::write::GzEncoder;

use super::*;
use crate::sema::spec::TextLevel;

/// A fresh, empty folder under the system temp folder.
fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deqc-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: u32, rows: u32, cols: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [2051, n, rows, cols] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..(n * rows * cols) as usize).map(fill));
    b
}

fn labels(ls: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&2049u32.to_be_bytes());
    b.extend_from_slice(&(ls.len() as u32).to_be_bytes());
    b.extend_from_slice(ls);
    b
}

/// A tiny MNIST folder: 3 train and 2 test images of 2x2, gzipped or not.
fn tiny_mnist(name: &str, gzipped: bool) -> PathBuf {
    let dir = temp(name);
    let write = |file: &str, bytes: Vec<u8>| {
        let (file, bytes) = if gzipped {
            (format!("{file}.gz"), gz(&bytes))
        } else {
            (file.to_string(), bytes)
        };
        std::fs::write(dir.join(file), bytes).unwrap();
    };
    write(
        "train-images-idx3-ubyte",
        images(3, 2, 2, |i| (i * 17) as u8),
    );
    write("train-labels-idx1-ubyte", labels(&[0, 9, 4]));
    write("t10k-images-idx3-ubyte", images(2, 2, 2, |_| 255));
    write("t10k-labels-idx1-ubyte", labels(&[1, 2]));
    dir
}

#[test]
fn mnist_plain_and_gzipped() {
    for gzipped in [false, true] {
        let dir = tiny_mnist(&format!("mnist-{gzipped}"), gzipped);
        let s = mnist(&dir, false).unwrap();
        let x = s.train.field("x").unwrap();
        assert_eq!(x.shape, [3, 1, 2, 2]);
        let HostData::F32(xv) = &x.data else { panic!() };
        assert_eq!(xv[1], 17.0 / 255.0);
        let y = s.train.field("y").unwrap();
        assert_eq!(y.data, HostData::I64(vec![0, 9, 4]));
        let test = s.test.unwrap();
        assert_eq!(test.len(), 2);
        let HostData::F32(tv) = &test.field("x").unwrap().data else {
            panic!()
        };
        assert!(tv.iter().all(|&v| v == 1.0));
        let flat = mnist(&dir, true).unwrap();
        assert_eq!(flat.train.field("x").unwrap().shape, [3, 4]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

fn mnist_err(name: &str, file: &str, bytes: Vec<u8>) -> String {
    let dir = tiny_mnist(name, false);
    std::fs::write(dir.join(file), bytes).unwrap();
    let err = mnist(&dir, false).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    err
}

#[test]
fn mnist_malformed_files_are_clear_errors() {
    let imgs = "train-images-idx3-ubyte";
    let lbls = "train-labels-idx1-ubyte";
    // Wrong magic number.
    let err = mnist_err("magic", imgs, labels(&[1, 2, 3]));
    assert!(
        err.contains(imgs) && err.contains("magic number 2051"),
        "{err}"
    );
    // Truncated header and truncated body.
    let err = mnist_err("short-header", imgs, vec![0, 0, 8, 3, 0]);
    assert!(err.contains(imgs) && err.contains("truncated"), "{err}");
    let mut body = images(3, 2, 2, |_| 0);
    body.truncate(body.len() - 1);
    let err = mnist_err("short-body", imgs, body);
    assert!(
        err.contains("truncated: expected 28 bytes, found 27"),
        "{err}"
    );
    // A header whose sizes overflow.
    let mut huge = Vec::new();
    for v in [2051u32, u32::MAX, u32::MAX, u32::MAX] {
        huge.extend_from_slice(&v.to_be_bytes());
    }
    let err = mnist_err("huge", imgs, huge);
    assert!(err.contains(imgs) && err.contains("fit in memory"), "{err}");
    // Trailing bytes.
    let mut long = labels(&[1, 2, 3]);
    long.push(0);
    let err = mnist_err("long", lbls, long);
    assert!(err.contains(lbls) && err.contains("1 trailing"), "{err}");
    // Counts that disagree.
    let err = mnist_err("count", lbls, labels(&[1, 2]));
    assert!(
        err.contains("3 images") && err.contains("2 labels"),
        "{err}"
    );
    // Label out of range.
    let err = mnist_err("label", lbls, labels(&[1, 10, 3]));
    assert!(
        err.contains("label 10 of sample 1") && err.contains("0..=9"),
        "{err}"
    );
    // Corrupt gzip.
    let dir = tiny_mnist("badgz", true);
    let path = dir.join(format!("{lbls}.gz"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = mnist(&dir, false).unwrap_err().to_string();
    assert!(err.contains(lbls) && err.contains("gzip"), "{err}");
    // Missing file and missing folder.
    std::fs::remove_file(&path).unwrap();
    let err = mnist(&dir, false).unwrap_err().to_string();
    assert!(err.contains(lbls) && err.contains("not found"), "{err}");
    let err = mnist(dir.join("nope"), false).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("folder"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

#[test]
fn bundled_mnist_10k() {
    let s = mnist(data_dir().join("mnist-10k"), false).unwrap();
    let test = s.test.unwrap();
    assert_eq!((s.train.len(), test.len()), (8000, 2000));
    assert_eq!(s.train.field("x").unwrap().shape, [8000, 1, 28, 28]);
    for d in [&s.train, &test] {
        let HostData::I64(y) = &d.field("y").unwrap().data else {
            panic!()
        };
        let mut seen = [false; 10];
        y.iter().for_each(|&l| seen[l as usize] = true);
        assert!(seen.iter().all(|&s| s), "every digit appears");
        let HostData::F32(x) = &d.field("x").unwrap().data else {
            panic!()
        };
        let (lo, hi) = x
            .iter()
            .fold((1f32, 0f32), |(l, h), &v| (l.min(v), h.max(v)));
        assert_eq!((lo, hi), (0.0, 1.0));
    }
}

/// A text folder with the given split contents (`name.split.txt`).
/// The error of loading `dir` as character-level text.
fn char_text_err(dir: impl AsRef<Path>) -> String {
    text(dir.as_ref(), TextLevel::Char, 2, None)
        .unwrap_err()
        .to_string()
}

fn text_dir(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = temp(name);
    for (file, content) in files {
        if let Some(plain) = file.strip_suffix(".gz") {
            let _ = plain;
            std::fs::write(dir.join(file), gz(content.as_bytes())).unwrap();
        } else {
            std::fs::write(dir.join(file), content).unwrap();
        }
    }
    dir
}

fn ids(d: &Dataset, field: &str) -> Vec<i64> {
    let HostData::I64(v) = &d.field(field).unwrap().data else {
        panic!()
    };
    v.clone()
}

#[test]
fn text_char_level() {
    let dir = text_dir(
        "char",
        &[("t.train.txt.gz", "abca\nbb\r\n"), ("t.test.txt", "az\n")],
    );
    let s = text(&dir, TextLevel::Char, 2, None).unwrap();
    let v = s.vocab.unwrap();
    // counts: b 3, a 2, \n 2, c 1; ties (a, \n) by bytes: "\n" < "a".
    assert_eq!(v.tokens(), ["b", "\n", "a", "c", UNK_TOKEN]);
    assert_eq!(v.unk_id(), 4);
    // stream a b c a \n b b \n = 2 0 3 2 1 0 0 1: (8 - 1) / 2 = 3 windows.
    assert_eq!(s.train.field("x").unwrap().shape, [3, 2]);
    assert_eq!(ids(&s.train, "x"), [2, 0, 3, 2, 1, 0]);
    assert_eq!(ids(&s.train, "y"), [0, 3, 2, 1, 0, 0]);
    // test: a z \n, z unseen -> unk.
    let test = s.test.unwrap();
    assert_eq!(ids(&test, "x"), [2, 4]);
    assert_eq!(ids(&test, "y"), [4, 1]);
    assert!(s.valid.is_none());
    // vocab = 3: the two most frequent, then unk = 2.
    let s = text(&dir, TextLevel::Char, 2, Some(3)).unwrap();
    let v = s.vocab.unwrap();
    assert_eq!(v.tokens(), ["b", "\n", UNK_TOKEN]);
    assert_eq!(ids(&s.train, "x"), [2, 0, 2, 2, 1, 0]);
    // JSON round trip.
    assert_eq!(Vocab::from_json(&v.to_json()).unwrap(), v);
    assert!(Vocab::from_json("{\"level\": \"char\", \"tokens\": [\"a\"]}").is_err());
    assert!(Vocab::from_json("nonsense").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn text_word_level() {
    let dir = text_dir(
        "word",
        &[
            ("w.train.txt", "the cat <unk> the\nthe dog\n"),
            ("w.valid.txt", "the bird\n"),
            ("w.test.txt", "dog the cat\n"),
        ],
    );
    let s = text(&dir, TextLevel::Word, 1, None).unwrap();
    let v = s.vocab.unwrap();
    // the 3, <eos> 2, cat 1, dog 1; the literal <unk> is the unknown id.
    assert_eq!(v.tokens(), ["the", EOS_TOKEN, "cat", "dog", UNK_TOKEN]);
    assert_eq!(ids(&s.train, "x"), [0, 2, 4, 0, 1, 0, 3]);
    assert_eq!(ids(&s.valid.unwrap(), "x"), [0, 4]);
    let s = text(&dir, TextLevel::Word, 2, Some(100)).unwrap();
    assert_eq!(s.vocab.unwrap().unk_id(), 4, "fewer tokens than vocab - 1");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn text_malformed_folders_are_clear_errors() {
    let dir = text_dir("notest", &[("a.train.txt", "hello\n")]);
    let err = char_text_err(&dir);
    assert!(err.contains("*.test.txt"), "{err}");
    let dir = text_dir(
        "two",
        &[
            ("a.train.txt", "hello\n"),
            ("b.train.txt.gz", "hello\n"),
            ("a.test.txt", "hello\n"),
        ],
    );
    let err = char_text_err(&dir);
    assert!(err.contains("exactly one"), "{err}");
    let dir = text_dir("short", &[("a.train.txt", "hello\n"), ("a.test.txt", "h")]);
    let err = char_text_err(&dir);
    assert!(
        err.contains("a.test.txt") && err.contains("at least 3 tokens"),
        "{err}"
    );
    let dir = temp("utf8");
    std::fs::write(dir.join("a.train.txt"), b"ab\xffcd\n").unwrap();
    std::fs::write(dir.join("a.test.txt"), "abcd\n").unwrap();
    let err = char_text_err(&dir);
    assert!(
        err.contains("a.train.txt") && err.contains("UTF-8"),
        "{err}"
    );
    let err = char_text_err(dir.join("none"));
    assert!(err.contains("not found"), "{err}");
    for name in ["notest", "two", "short", "utf8"] {
        let _ = std::fs::remove_dir_all(temp(name));
    }
}

#[test]
fn bundled_kjv_characters() {
    let s = text(data_dir().join("kjv"), TextLevel::Char, 128, None).unwrap();
    let v = s.vocab.unwrap();
    // 62 distinct characters, the newline token and the unknown id.
    assert_eq!(v.len(), 64);
    assert_eq!(
        v.tokens()
            .iter()
            .filter(|t| *t != "\n" && *t != UNK_TOKEN)
            .count(),
        62
    );
    let test = s.test.unwrap();
    assert!(
        ids(&test, "x").iter().all(|&i| i < v.unk_id()),
        "test chars all known"
    );
    assert!(s.valid.is_some());
    assert!(s.train.len() > 29_000, "{}", s.train.len());
}

fn csv_err(name: &str, content: &str, target: &str) -> String {
    let dir = temp(name);
    let p = dir.join("d.csv");
    std::fs::write(&p, content).unwrap();
    let err = csv(&p, target).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(err.contains("d.csv"), "{err}");
    err
}

#[test]
fn csv_files_and_folders() {
    let dir = temp("csv");
    let p = dir.join("d.csv");
    std::fs::write(&p, "\u{feff}a, \"label\" ,b\n1.5,2,3\n\n-1,0,4e1\n").unwrap();
    let s = csv(&p, "label").unwrap();
    assert_eq!(s.train.field("x").unwrap().shape, [2, 2]);
    assert_eq!(
        s.train.field("x").unwrap().data,
        HostData::F32(vec![1.5, 3.0, -1.0, 40.0])
    );
    assert_eq!(s.train.field("y").unwrap().data, HostData::I64(vec![2, 0]));
    assert!(s.test.is_none());
    // A fractional target anywhere makes every split's target f32.
    std::fs::write(dir.join("train.csv"), "x,y\n1,2\n3,4\n").unwrap();
    std::fs::write(dir.join("test.csv.gz"), gz(b"x,y\n5,0.5\n")).unwrap();
    let s = csv(&dir, "y").unwrap();
    assert_eq!(
        s.train.field("y").unwrap().data,
        HostData::F32(vec![2.0, 4.0])
    );
    assert_eq!(s.test.unwrap().field("y").unwrap().shape, [1]);
    // A header that differs between splits.
    std::fs::write(dir.join("test.csv.gz"), gz(b"y,x\n5,0.5\n")).unwrap();
    let err = csv(&dir, "y").unwrap_err().to_string();
    assert!(
        err.contains("test.csv.gz") && err.contains("header"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_quoted_cells_are_read() {
    let dir = temp("csvquoted");
    let p = dir.join("d.csv");
    // Quoted cells, a quoted header name holding a comma, CRLF line ends.
    std::fs::write(&p, "\"a\",\"lab,el\"\r\n\"1.5\",2\r\n3,\"4\"\r\n").unwrap();
    let s = csv(&p, "lab,el").unwrap();
    assert_eq!(
        s.train.field("x").unwrap().data,
        HostData::F32(vec![1.5, 3.0])
    );
    assert_eq!(s.train.field("y").unwrap().data, HostData::I64(vec![2, 4]));
    // A quoted cell that is not a number still names its line and column.
    std::fs::write(&p, "a,b\n1,2\n\"x,y\",3\n").unwrap();
    let err = csv(&p, "b").unwrap_err().to_string();
    assert!(
        err.contains(":3:") && err.contains("`a`") && err.contains("`x,y`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn csv_malformed_files_are_clear_errors() {
    let err = csv_err("ragged", "a,b\n1,2\n3\n", "b");
    assert!(
        err.contains(":3:") && err.contains("expected 2 cells") && err.contains("found 1"),
        "{err}"
    );
    let err = csv_err("nonnum", "a,b\n1,2\n3,x\n", "b");
    assert!(
        err.contains(":3:") && err.contains("`b`") && err.contains("`x`"),
        "{err}"
    );
    let err = csv_err("target", "a,b\n1,2\n", "label");
    assert!(
        err.contains("`label`") && err.contains("[\"a\", \"b\"]"),
        "{err}"
    );
    let err = csv_err("empty", "", "a");
    assert!(err.contains("header"), "{err}");
    let err = csv_err("norows", "a,b\n", "a");
    assert!(err.contains("data row"), "{err}");
    let err = csv(temp("csvmissing").join("no.csv"), "a")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no.csv") && err.contains("not found"), "{err}");
}

fn toy(n: usize) -> Dataset {
    let x = HostArray::f32(vec![n, 2], (0..2 * n).map(|i| i as f32).collect()).unwrap();
    let y = HostArray::i64(vec![n], (0..n as i64).collect()).unwrap();
    Dataset::new(vec![("x".into(), x), ("y".into(), y)]).unwrap()
}

#[test]
fn batches_keep_the_last_partial_batch() {
    let d = toy(10);
    assert_eq!(d.num_batches(4), 3);
    let sizes: Vec<usize> = d
        .batches(4, &Device::Cpu)
        .map(|b| b.unwrap().len())
        .collect();
    assert_eq!(sizes, [4, 4, 2]);
    let last = d.batches(4, &Device::Cpu).last().unwrap().unwrap();
    assert_eq!(last.get("y").unwrap().to_vec1::<i64>().unwrap(), [8, 9]);
    assert_eq!(
        last.get("x").unwrap().to_vec2::<f32>().unwrap(),
        [[16.0, 17.0], [18.0, 19.0]]
    );
    assert_eq!(d.batches(4, &Device::Cpu).len(), 3);
    assert!(Dataset::new(vec![
        ("x".into(), HostArray::i64(vec![2], vec![0, 1]).unwrap()),
        ("y".into(), HostArray::i64(vec![3], vec![0, 1, 2]).unwrap()),
    ])
    .is_none());
    assert!(HostArray::f32(vec![2, 2], vec![0.0; 3]).is_none());
}

#[test]
fn shuffling_is_a_pure_function_of_seed_and_epoch() {
    let a = epoch_order(100, 7, 3);
    assert_eq!(a, epoch_order(100, 7, 3));
    assert_ne!(a, epoch_order(100, 7, 4));
    assert_ne!(a, epoch_order(100, 8, 3));
    assert_ne!(a, (0..100).collect::<Vec<_>>());
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert!(epoch_order(0, 1, 1).is_empty());
    // Pinned values (from an independent Python SplitMix64): the order must
    // never change, so that old checkpoints resume on the same batches.
    assert_eq!(epoch_order(5, 0, 0), [0, 4, 3, 1, 2]);
    assert_eq!(epoch_order(8, 1, 2), [2, 0, 5, 7, 4, 3, 1, 6]);

    let d = toy(10);
    let ys: Vec<i64> = d
        .shuffled_batches(3, 7, 3, &Device::Cpu)
        .flat_map(|b| b.unwrap().get("y").unwrap().to_vec1::<i64>().unwrap())
        .collect();
    let want: Vec<i64> = epoch_order(10, 7, 3).iter().map(|&i| i as i64).collect();
    assert_eq!(ys, want);
    // Resuming mid-epoch: skipping batches gives the same remaining batches.
    let rest: Vec<i64> = d
        .shuffled_batches(3, 7, 3, &Device::Cpu)
        .skip(2)
        .flat_map(|b| b.unwrap().get("y").unwrap().to_vec1::<i64>().unwrap())
        .collect();
    assert_eq!(rest, want[6..]);
    assert!(d.shuffled_batches(3, 7, 3, &Device::Cpu).nth(4).is_none());
}

#[test]
fn load_dispatches_on_the_spec() {
    let dir = tiny_mnist("spec", true);
    let s = load(&crate::sema::spec::DataSpec::Mnist {
        path: dir.display().to_string(),
        flatten: true,
        normalize: false,
        dequantize: false,
        subset: Default::default(),
    })
    .unwrap();
    assert_eq!(s.train.field("x").unwrap().shape, [3, 4]);
    assert_eq!(s.standardization, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn x_of(d: &Dataset) -> Vec<f32> {
    match &d.field("x").unwrap().data {
        HostData::F32(v) => v.clone(),
        HostData::I64(_) => panic!("x is float"),
    }
}

/// `normalize = true`: the statistics are the training split's (after the
/// class subset), in closed form for pixels 17·i/255, and the test split is
/// standardized with them, never with its own.
#[test]
fn normalize_standardizes_with_training_statistics() {
    use crate::sema::spec::{DataSpec, Subset};
    let dir = tiny_mnist("normalize", false);
    let spec = |classes: Vec<i64>| DataSpec::Mnist {
        path: dir.display().to_string(),
        flatten: true,
        normalize: true,
        dequantize: false,
        subset: Subset {
            classes,
            per_class: None,
        },
    };
    let unit = 17.0 / 255.0;
    // Train pixels are 17·i/255 for i = 0..12: mean 5.5 units, variance
    // (12² − 1)/12 units².
    let all = load(&spec(vec![])).unwrap();
    let st = all.standardization.unwrap();
    assert!((st.mean - 5.5 * unit).abs() < 1e-7, "{st}");
    assert!(
        (st.std - unit * (143.0f64 / 12.0).sqrt()).abs() < 1e-7,
        "{st}"
    );
    assert_eq!(st.samples, 3);
    let x = x_of(&all.train);
    for (i, v) in x.iter().enumerate() {
        let want = (i as f64 * unit - st.mean) / st.std;
        assert!(
            (f64::from(*v) - want).abs() < 1e-6,
            "pixel {i}: {v} vs {want}"
        );
    }
    let mean: f64 = x.iter().map(|v| f64::from(*v)).sum::<f64>() / x.len() as f64;
    assert!(mean.abs() < 1e-6);
    // Test pixels are all 1.0: standardized with the train statistics.
    let t = x_of(all.test.as_ref().unwrap());
    let want = (1.0 - st.mean) / st.std;
    assert!(t.iter().all(|v| (f64::from(*v) - want).abs() < 1e-6));
    // With classes 9 and 4 the training split is images 1 and 2 (i = 4..12):
    // the statistics change with it.
    let sub = load_seeded(&spec(vec![9, 4]), 0).unwrap();
    let st = sub.standardization.unwrap();
    assert!((st.mean - 7.5 * unit).abs() < 1e-7, "{st}");
    assert!(
        (st.std - unit * (63.0f64 / 12.0).sqrt()).abs() < 1e-7,
        "{st}"
    );
    assert_eq!(st.samples, 2);
    // Raw loading is untouched.
    let raw = mnist(&dir, true).unwrap();
    assert_eq!(x_of(&raw.train)[1], 17.0 / 255.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn normalize_rejects_a_constant_training_split() {
    let dir = tiny_mnist("normalize-constant", false);
    std::fs::write(dir.join("train-images-idx3-ubyte"), images(3, 2, 2, |_| 7)).unwrap();
    let err = load(&crate::sema::spec::DataSpec::Mnist {
        path: dir.display().to_string(),
        flatten: false,
        normalize: true,
        dequantize: false,
        subset: Default::default(),
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("standard deviation 0"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
