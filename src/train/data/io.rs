//! Reading data files: plain or gzipped, found with or without `.gz`.
//!
//! Guarantees: every failure is a [`DataError`] naming the file; a corrupt
//! or truncated gzip stream is an error, not a short read.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// `dir/name` or `dir/name.gz`, whichever exists (the plain file first).
pub fn find_maybe_gz(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::Missing {
        path: plain,
        expected: format!("a file `{name}` or `{name}.gz` in {}", dir.display()),
    })
}

/// The files of `dir` whose names end with `suffix` or `suffix.gz`.
pub fn find_by_suffix(dir: &Path, suffix: &str) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| io_error(dir, source))?;
    let gz = format!("{suffix}.gz");
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| io_error(dir, source))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if (name.ends_with(suffix) || name.ends_with(&gz)) && entry.path().is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// The whole content of `path`, decompressed when the name ends in `.gz`.
pub fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| io_error(path, source))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::malformed(path, "a complete gzip stream", e.to_string()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The content of `path` as UTF-8 text.
pub fn read_text(path: &Path) -> Result<String, DataError> {
    String::from_utf8(read_all(path)?).map_err(|e| {
        DataError::malformed(
            path,
            "UTF-8 text",
            format!("an invalid byte at offset {}", e.utf8_error().valid_up_to()),
        )
    })
}

pub fn io_error(path: &Path, source: std::io::Error) -> DataError {
    if source.kind() == std::io::ErrorKind::NotFound {
        DataError::Missing {
            path: path.to_path_buf(),
            expected: "an existing file or folder".into(),
        }
    } else {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
