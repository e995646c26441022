//! Checkpoint round trips, mismatch reports and corrupt files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

use super::*;
use crate::train::optim::adam;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deqc-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn params() -> Vec<(String, Tensor)> {
    let dev = Device::Cpu;
    vec![
        (
            "inject.w".into(),
            Tensor::new(&[[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap(),
        ),
        (
            "inject.b".into(),
            Tensor::new(&[0.5f32, -0.5], &dev).unwrap(),
        ),
    ]
}

fn shapes(ps: &[(String, Tensor)]) -> Vec<(String, Vec<usize>)> {
    ps.iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect()
}

#[test]
fn model_round_trip_in_expected_order() {
    let dir = temp("model");
    let ps = params();
    let mut meta = BTreeMap::new();
    meta.insert("model".to_string(), "Deq".to_string());
    save_model(&dir, &ps, &meta).unwrap();
    let back = load_model(&dir, &shapes(&ps), &Device::Cpu).unwrap();
    assert_eq!(back.len(), 2);
    for ((k, a), (k2, b)) in ps.iter().zip(&back) {
        assert_eq!(k, k2);
        assert_eq!(a.to_vec2::<f32>().ok(), b.to_vec2::<f32>().ok());
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
    let (_, m) = read_tensors(&dir.join(MODEL_FILE), &Device::Cpu).unwrap();
    assert_eq!(m.get("model").map(String::as_str), Some("Deq"));
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [MODEL_FILE]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mismatch_lists_every_difference() {
    let dir = temp("mismatch");
    save_model(&dir, &params(), &BTreeMap::new()).unwrap();
    let expected = vec![
        ("inject.w".to_string(), vec![3, 2]),
        ("readout.w".to_string(), vec![2]),
        ("readout.b".to_string(), vec![1]),
    ];
    let err = load_model(&dir, &expected, &Device::Cpu).unwrap_err();
    let CheckpointError::Mismatch {
        missing,
        unexpected,
        misshaped,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(missing, &["readout.b", "readout.w"]);
    assert_eq!(unexpected, &["inject.b"]);
    assert_eq!(
        misshaped,
        &[("inject.w".to_string(), vec![3, 2], vec![2, 3])]
    );
    let msg = err.to_string();
    for part in [
        "missing: `readout.b`",
        "missing: `readout.w`",
        "unexpected: `inject.b`",
        "`inject.w`: expected shape [3, 2], found [2, 3]",
        "model.safetensors",
    ] {
        assert!(msg.contains(part), "{msg}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupt_and_missing_files_are_errors() {
    let dir = temp("corrupt");
    save_model(&dir, &params(), &BTreeMap::new()).unwrap();
    let path = dir.join(MODEL_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [0, 4, 8, 20, bytes.len() - 3] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = read_tensors(&path, &Device::Cpu).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Corrupt { .. }),
            "cut {cut}: {err}"
        );
    }
    std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
    assert!(read_tensors(&path, &Device::Cpu).is_err());
    let mut garbled = bytes.clone();
    garbled[8] = b'x'; // the header's opening brace
    std::fs::write(&path, &garbled).unwrap();
    assert!(read_tensors(&path, &Device::Cpu).is_err());
    let err = load_model(&dir.join("none"), &[], &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("none"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn train_state_round_trip() {
    let dir = temp("state");
    let mut opt = adam(0.1, (0.9, 0.999), 0.0);
    let mut ps = params();
    let grads: Vec<Tensor> = ps.iter().map(|(_, t)| t.ones_like().unwrap()).collect();
    opt.step(&mut ps, &grads, 0.1).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("config".to_string(), "train Deq {}".to_string());
    let state = TrainState {
        step: 17,
        epoch: 2,
        batch: 5,
        seed: 42,
        optimizer: opt.state(),
        extra,
    };
    save_train_state(&dir, &state).unwrap();
    let expected = opt.state_shapes(&shapes(&ps));
    let back = load_train_state(&dir, Some(&expected), &Device::Cpu).unwrap();
    assert_eq!(
        (back.step, back.epoch, back.batch, back.seed),
        (17, 2, 5, 42)
    );
    assert_eq!(back.optimizer.step, 1);
    assert_eq!(
        back.extra.get("config").map(String::as_str),
        Some("train Deq {}")
    );
    assert_eq!(back.extra.len(), 1);
    let keys: Vec<&str> = back
        .optimizer
        .tensors
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "exp_avg/inject.b",
            "exp_avg/inject.w",
            "exp_avg_sq/inject.b",
            "exp_avg_sq/inject.w"
        ]
    );
    let mut resumed = adam(0.1, (0.9, 0.999), 0.0);
    resumed.load_state(back.optimizer).unwrap();
    assert_eq!(resumed.steps_taken(), 1);
    // A state for other parameters is a mismatch.
    let err = load_train_state(&dir, Some(&expected[..2]), &Device::Cpu).unwrap_err();
    assert!(
        err.to_string()
            .contains("unexpected: `exp_avg_sq/inject.b`"),
        "{err}"
    );
    // Metadata without the counters is corrupt.
    save_tensors(&dir.join(STATE_FILE), &[], &BTreeMap::new()).unwrap();
    let err = load_train_state(&dir, None, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`step`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn vocab_is_saved_beside_the_model() {
    let dir = temp("vocab");
    let tdir = dir.join("text");
    std::fs::create_dir_all(&tdir).unwrap();
    std::fs::write(tdir.join("a.train.txt"), "abba\n").unwrap();
    std::fs::write(tdir.join("a.test.txt"), "ab\n").unwrap();
    let s = crate::train::data::text(&tdir, crate::sema::spec::TextLevel::Char, 2, None).unwrap();
    let v = s.vocab.unwrap();
    save_vocab(&dir, &v).unwrap();
    assert_eq!(load_vocab(&dir).unwrap(), v);
    std::fs::write(dir.join(VOCAB_FILE), "{").unwrap();
    assert!(matches!(
        load_vocab(&dir),
        Err(CheckpointError::Corrupt { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}
