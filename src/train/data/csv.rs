//! The CSV loader: numeric tables with a header row.
//!
//! `path` is either one file (`.csv` or `.csv.gz`: the train split only) or
//! a folder with `train.csv[.gz]` and optionally `valid.csv[.gz]` and
//! `test.csv[.gz]`, all with the same header. Cells are separated by commas
//! (no quoting; header names may be wrapped in double quotes), surrounding
//! whitespace and a leading byte-order mark are ignored, and blank lines
//! are skipped.
//!
//! Guarantees: `x` is f32 `[N, F]`, the columns other than the target in
//! header order; `y` is the target column, i64 `[N]` (class ids) when every
//! target value of every split is an integer, and f32 `[N]` otherwise. A
//! ragged row, a non-numeric cell, a missing target column, a header that
//! differs between splits and a file with no data rows are errors naming the
//! file (and line).

use std::path::{Path, PathBuf};

use super::io::{find_maybe_gz, read_text};
use super::{DataError, Dataset, HostArray, Splits};

/// One parsed file: feature rows and target values.
struct Table {
    path: PathBuf,
    header: Vec<String>,
    n: usize,
    features: Vec<f32>,
    target: Vec<f64>,
}

/// Load the CSV file or folder `path` with target column `target`.
pub fn csv(path: impl AsRef<Path>, target: &str) -> Result<Splits, DataError> {
    let path = path.as_ref();
    let (train, valid, test) = if path.is_dir() {
        let optional = |name: &str| match find_maybe_gz(path, name) {
            Ok(p) => Ok(Some(p)),
            Err(DataError::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        (
            find_maybe_gz(path, "train.csv")?,
            optional("valid.csv")?,
            optional("test.csv")?,
        )
    } else if path.is_file() {
        (path.to_path_buf(), None, None)
    } else {
        return Err(DataError::Missing {
            path: path.to_path_buf(),
            expected: "a CSV file, or a folder with `train.csv[.gz]`".into(),
        });
    };
    let train = parse(&train, target)?;
    let valid = valid.map(|p| parse(&p, target)).transpose()?;
    let test = test.map(|p| parse(&p, target)).transpose()?;
    for t in valid.iter().chain(test.iter()) {
        if t.header != train.header {
            return Err(DataError::malformed(
                &t.path,
                format!("the header of {}: {:?}", train.path.display(), train.header),
                format!("{:?}", t.header),
            ));
        }
    }
    let integral = std::iter::once(&train)
        .chain(valid.iter())
        .chain(test.iter())
        .all(|t| t.target.iter().all(|v| is_integral(*v)));
    Ok(Splits {
        train: to_dataset(train, integral)?,
        valid: valid.map(|t| to_dataset(t, integral)).transpose()?,
        test: test.map(|t| to_dataset(t, integral)).transpose()?,
        vocab: None,
    })
}

fn is_integral(v: f64) -> bool {
    v.is_finite() && v.fract() == 0.0 && v.abs() < 9.0e15
}

fn to_dataset(t: Table, integral: bool) -> Result<Dataset, DataError> {
    let f = t.header.len() - 1;
    let bad = || DataError::malformed(&t.path, "consistent sizes", "a size overflow");
    let x = HostArray::f32(vec![t.n, f], t.features.clone()).ok_or_else(bad)?;
    let y = if integral {
        HostArray::i64(vec![t.n], t.target.iter().map(|&v| v as i64).collect())
    } else {
        HostArray::f32(vec![t.n], t.target.iter().map(|&v| v as f32).collect())
    }
    .ok_or_else(bad)?;
    Dataset::new(vec![("x".into(), x), ("y".into(), y)]).ok_or_else(bad)
}

fn parse(path: &Path, target: &str) -> Result<Table, DataError> {
    let text = read_text(path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header_line) = lines.next().ok_or_else(|| {
        DataError::malformed(path, "a header row and at least one data row", "no rows")
    })?;
    let header: Vec<String> = header_line
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect();
    let t = header
        .iter()
        .position(|c| c == target)
        .ok_or_else(|| DataError::MissingTarget {
            path: path.to_path_buf(),
            target: target.to_string(),
            columns: header.clone(),
        })?;
    let mut table = Table {
        path: path.to_path_buf(),
        header,
        n: 0,
        features: Vec::new(),
        target: Vec::new(),
    };
    for (line, row) in lines {
        let cells: Vec<&str> = row.split(',').collect();
        if cells.len() != table.header.len() {
            return Err(DataError::RaggedRow {
                path: path.to_path_buf(),
                line,
                expected: table.header.len(),
                found: cells.len(),
            });
        }
        for (j, cell) in cells.iter().enumerate() {
            let v: f64 = cell.trim().parse().map_err(|_| DataError::NonNumeric {
                path: path.to_path_buf(),
                line,
                column: table.header[j].clone(),
                cell: cell.trim().to_string(),
            })?;
            if j == t {
                table.target.push(v);
            } else {
                table.features.push(v as f32);
            }
        }
        table.n += 1;
    }
    if table.n == 0 {
        return Err(DataError::malformed(
            path,
            "at least one data row after the header",
            "none",
        ));
    }
    Ok(table)
}
