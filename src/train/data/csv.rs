//! The CSV loader: numeric tables with a header row.
//!
//! `path` is either one file (`.csv` or `.csv.gz`: the train split only) or
//! a folder with `train.csv[.gz]` and optionally `valid.csv[.gz]` and
//! `test.csv[.gz]`, all with the same header. The `csv` crate reads the
//! cells: RFC 4180 quoting (`"1,5"` is one cell, `""` an escaped quote),
//! surrounding whitespace trimmed; a leading byte-order mark is ignored and
//! blank lines are skipped.
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
        standardization: None,
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
    // The header is read as a record too, so that every row, the header
    // included, carries its line number for the messages.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut records = reader.records().filter(|r| match r {
        // A line holding only spaces reads as one empty cell: skip it like
        // an empty line.
        Ok(rec) => !(rec.len() == 1 && rec[0].is_empty()),
        Err(_) => true,
    });
    let unreadable = |e: csv::Error| {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        DataError::malformed(
            path,
            "comma-separated cells",
            format!("unreadable CSV at line {line}: {e}"),
        )
    };
    let header_row = records
        .next()
        .ok_or_else(|| {
            DataError::malformed(path, "a header row and at least one data row", "no rows")
        })?
        .map_err(unreadable)?;
    // Header names may carry stray quotes outside csv quoting (`a, "b" ,c`).
    let header: Vec<String> = header_row
        .iter()
        .map(|c| c.trim_matches('"').to_string())
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
    for row in records {
        let row = row.map_err(unreadable)?;
        let line = row.position().map_or(0, |p| p.line() as usize);
        if row.len() != table.header.len() {
            return Err(DataError::RaggedRow {
                path: path.to_path_buf(),
                line,
                expected: table.header.len(),
                found: row.len(),
            });
        }
        for (j, cell) in row.iter().enumerate() {
            let v: f64 = cell.parse().map_err(|_| DataError::NonNumeric {
                path: path.to_path_buf(),
                line,
                column: table.header[j].clone(),
                cell: cell.to_string(),
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
