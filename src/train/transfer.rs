//! `deqc run --init-from CKPT [--init-map OLD=NEW ...]`: start a run from
//! another run's parameters.
//!
//! Owns matching a checkpoint's tensors to a model's parameters by path,
//! after prefix renames. Guarantees: a parameter the checkpoint has (after
//! renaming) takes its values exactly, converted to the parameter's dtype;
//! every other parameter keeps its seeded initial value; the report lists
//! what was loaded, what was left at initialization and what the checkpoint
//! had that the model does not use; a shape mismatch is an error naming the
//! parameter, both shapes and the checkpoint key; an `--init-map` entry that
//! renames nothing is an error (it is a typo).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::checkpoint;
use super::TrainError;

/// Where initial parameters come from, and how their paths are renamed.
#[derive(Debug, Clone, Default)]
pub struct InitFrom {
    /// A run folder (its `model.safetensors`) or a safetensors file.
    pub path: PathBuf,
    /// `(old, new)`: a checkpoint key `old` or `old.rest` loads into `new`
    /// or `new.rest`. The first matching entry applies.
    pub map: Vec<(String, String)>,
}

/// Parse one `--init-map OLD=NEW`.
pub fn parse_map_entry(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((old, new)) if !old.trim().is_empty() && !new.trim().is_empty() => {
            Ok((old.trim().to_string(), new.trim().to_string()))
        }
        _ => Err(format!(
            "expected OLD=NEW (checkpoint path prefix = model path prefix), found `{s}`"
        )),
    }
}

/// What [`load_into`] did, by parameter path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InitReport {
    /// `(model path, checkpoint key)` of every loaded parameter.
    pub loaded: Vec<(String, String)>,
    /// Parameters left at their seeded initial values.
    pub initialized: Vec<String>,
    /// Checkpoint keys the model has no parameter for.
    pub unused: Vec<String>,
}

impl std::fmt::Display for InitReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loaded: Vec<String> = self
            .loaded
            .iter()
            .map(|(p, k)| {
                if p == k {
                    p.clone()
                } else {
                    format!("{p} (from {k})")
                }
            })
            .collect();
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        writeln!(f, "loaded {}: {}", loaded.len(), list(&loaded))?;
        writeln!(
            f,
            "left at initialization {}: {}",
            self.initialized.len(),
            list(&self.initialized)
        )?;
        write!(
            f,
            "unused in the checkpoint {}: {}",
            self.unused.len(),
            list(&self.unused)
        )
    }
}

/// `key` renamed by the first entry of `map` whose old prefix covers it.
fn rename(key: &str, map: &[(String, String)]) -> (String, Option<usize>) {
    for (i, (old, new)) in map.iter().enumerate() {
        if let Some(rest) = key.strip_prefix(old.as_str()) {
            if rest.is_empty() || rest.starts_with('.') {
                return (format!("{new}{rest}"), Some(i));
            }
        }
    }
    (key.to_string(), None)
}

/// Overwrite `params` with the checkpoint's tensors of the same (renamed)
/// path.
pub fn load_into(
    params: &mut [(String, Tensor)],
    from: &InitFrom,
    device: &Device,
) -> Result<InitReport, TrainError> {
    let file = if from.path.is_dir() {
        from.path.join("model.safetensors")
    } else {
        from.path.clone()
    };
    let (tensors, _) = checkpoint::read_tensors(&file, device)?;
    let mut used_map = vec![false; from.map.len()];
    let mut report = InitReport::default();
    let mut taken = vec![false; params.len()];
    for (key, t) in tensors {
        let (path, entry) = rename(&key, &from.map);
        if let Some(i) = entry {
            used_map[i] = true;
        }
        let Some(at) = params.iter().position(|(p, _)| *p == path) else {
            report.unused.push(key);
            continue;
        };
        let (name, p) = &mut params[at];
        if p.dims() != t.dims() {
            return Err(shape_mismatch(&file, name, p.dims(), &key, t.dims()));
        }
        *p = t.to_dtype(p.dtype())?;
        taken[at] = true;
        report.loaded.push((name.clone(), key));
    }
    if let Some(i) = used_map.iter().position(|u| !u) {
        let (old, new) = &from.map[i];
        return Err(TrainError::InitMapUnmatched {
            old: old.clone(),
            new: new.clone(),
            file: file.to_path_buf(),
        });
    }
    report.initialized = params
        .iter()
        .zip(&taken)
        .filter(|(_, t)| !**t)
        .map(|((p, _), _)| p.clone())
        .collect();
    Ok(report)
}

fn shape_mismatch(
    file: &Path,
    param: &str,
    want: &[usize],
    key: &str,
    found: &[usize],
) -> TrainError {
    let from = if key == param {
        String::new()
    } else {
        format!(" (renamed from `{key}`)")
    };
    TrainError::InitShape {
        file: file.to_path_buf(),
        param: param.to_string(),
        want: want.to_vec(),
        found: found.to_vec(),
        renamed: from,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_whole_path_segments_only() {
        let map = vec![("enc".to_string(), "inject".to_string())];
        assert_eq!(rename("enc.w", &map), ("inject.w".into(), Some(0)));
        assert_eq!(rename("enc", &map), ("inject".into(), Some(0)));
        assert_eq!(rename("encoder.w", &map), ("encoder.w".into(), None));
    }

    #[test]
    fn map_entries_need_both_sides() {
        assert_eq!(parse_map_entry("a=b"), Ok(("a".into(), "b".into())));
        assert!(parse_map_entry("a").is_err());
        assert!(parse_map_entry("=b").is_err());
    }
}
