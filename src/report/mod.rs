//! `deqc report`: a self-contained HTML page about one or more training
//! runs, and the run facts (`run.json`) that `deqc run` writes for it.
//!
//! Owns the report: reading run folders ([`run`]), drawing the charts as
//! SVG with `plotters` ([`charts`]) and assembling the page ([`page`]).
//! Guarantees: the page has no scripts and loads nothing (no network, no
//! fonts: the SVG names the generic `sans-serif`), so it opens from a file;
//! residuals are drawn on a log scale with each equilibrium's tolerance;
//! the hooks `deqc run` calls ([`start_run`], [`after_epoch`]) never fail a
//! run: a report that cannot be written is a warning.

pub mod charts;
pub mod page;
pub mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::Device;
use miette::Diagnostic;
use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::sema::hir::Model;
use crate::sema::spec::{Backward, TrainConfig};
use crate::source::SourceMap;

pub use run::Run;

/// What can go wrong while making a report.
#[derive(Debug, Clone, PartialEq, Eq, Error, Diagnostic)]
pub enum ReportError {
    #[error("cannot read {path}: {reason}")]
    #[diagnostic(
        code(deq::report::read),
        help("a run folder holds the `metrics.jsonl` (and `run.json`) that `deqc run --out DIR` writes")
    )]
    Read { path: String, reason: String },

    #[error("cannot write {path}: {reason}")]
    #[diagnostic(code(deq::report::write))]
    Write { path: String, reason: String },

    #[error("cannot draw the chart `{chart}`: {reason}")]
    #[diagnostic(code(deq::report::chart))]
    Chart { chart: String, reason: String },
}

/// The page for `runs` (the first is the main run, the others overlaid).
pub fn render(runs: &[Run]) -> Result<String, ReportError> {
    page::page(runs)
}

/// Read the run folders and write their report to `out`.
pub fn write_report(dirs: &[PathBuf], out: &Path) -> Result<(), ReportError> {
    let runs = dirs
        .iter()
        .map(|d| Run::load(d))
        .collect::<Result<Vec<_>, _>>()?;
    let html = render(&runs)?;
    write_atomically(out, html.as_bytes())
}

/// Write through a temporary file, so a browser reloading the page during
/// a run never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |e: std::io::Error| ReportError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// `deqc report RUN_DIR [--compare RUN_DIR...] [--out FILE]`.
pub fn command(run_dir: &Path, compare: &[PathBuf], out: Option<&Path>) -> ExitCode {
    let mut dirs = vec![run_dir.to_path_buf()];
    dirs.extend(compare.iter().cloned());
    let out = out.map_or_else(|| run_dir.join("report.html"), Path::to_path_buf);
    match write_report(&dirs, &out) {
        Ok(()) => {
            println!("{}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{:?}", miette::Report::new(e));
            ExitCode::from(2)
        }
    }
}

const RUN_FACTS: &str = "run.json";

/// The facts of a run that its metrics do not hold, as `run.json`.
pub fn run_facts(
    model: &Model,
    cfg: &TrainConfig,
    sources: &SourceMap,
    device: &Device,
) -> Map<String, Value> {
    let file = sources.file(model.span.file);
    let equilibria: Vec<Value> = model
        .equilibria()
        .iter()
        .map(|(eq, span)| {
            let (line, _) = sources.line_col(*span);
            let backward_tol = match &eq.backward {
                Backward::Implicit { solver } => Some(solver.tol),
                Backward::Phantom { .. } | Backward::Jfb | Backward::Unrolled => None,
            };
            json!({
                "place": format!("{}:{line}", sources.file(span.file).name),
                "solver": eq.solver.to_string(),
                "backward": eq.backward.to_string(),
                "tol": eq.solver.tol,
                "backward_tol": backward_tol,
            })
        })
        .collect();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let facts = json!({
        "deqc_version": env!("CARGO_PKG_VERSION"),
        "command_line": std::env::args().collect::<Vec<_>>(),
        "model": model.name,
        "model_file": file.name,
        "model_source": file.text.to_string(),
        "train_block": cfg.to_string(),
        "parameters": model.param_count(),
        "seed": cfg.seed,
        "threads": candle_core::utils::get_num_threads(),
        "device": format!("{:?}", device.location()),
        "started_unix": started,
        "equilibria": equilibria,
        "wall_seconds": 0.0,
    });
    match facts {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Called by `deqc run` once its folder exists: write `run.json`. A resumed
/// run keeps the wall time already spent (and counts the resume).
pub fn start_run(
    out: &Path,
    model: &Model,
    cfg: &TrainConfig,
    sources: &SourceMap,
    device: &Device,
    resume: bool,
) {
    let mut facts = run_facts(model, cfg, sources, device);
    if resume {
        if let Some(old) = read_facts(out) {
            let spent = old
                .get("wall_seconds")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let resumes = old.get("resumes").and_then(Value::as_u64).unwrap_or(0);
            facts.insert("wall_seconds_before".into(), json!(spent));
            facts.insert("wall_seconds".into(), json!(spent));
            facts.insert("resumes".into(), json!(resumes + 1));
        }
    }
    if let Err(e) = write_facts(out, &facts) {
        eprintln!("warning: {e}");
    }
}

/// Add one fact to the run's `run.json` (after [`start_run`]), e.g. the
/// data's standardization statistics.
pub fn add_fact(out: &Path, key: &str, value: Value) {
    if let Some(mut facts) = read_facts(out) {
        facts.insert(key.into(), value);
        if let Err(e) = write_facts(out, &facts) {
            eprintln!("warning: {e}");
        }
    }
}

/// Called by `deqc run` after each epoch: stamp the wall time so far into
/// `run.json` and rewrite `report.html`.
pub fn after_epoch(out: &Path, elapsed: std::time::Duration) {
    if let Some(mut facts) = read_facts(out) {
        let before = facts
            .get("wall_seconds_before")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        facts.insert("wall_seconds".into(), json!(before + elapsed.as_secs_f64()));
        if let Err(e) = write_facts(out, &facts) {
            eprintln!("warning: {e}");
        }
    }
    if let Err(e) = write_report(&[out.to_path_buf()], &out.join("report.html")) {
        eprintln!("warning: the run's report was not written: {e}");
    }
}

fn read_facts(out: &Path) -> Option<Map<String, Value>> {
    let text = std::fs::read_to_string(out.join(RUN_FACTS)).ok()?;
    match serde_json::from_str(&text).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn write_facts(out: &Path, facts: &Map<String, Value>) -> Result<(), ReportError> {
    let text = serde_json::to_string_pretty(facts).map_err(|e| ReportError::Write {
        path: out.join(RUN_FACTS).display().to_string(),
        reason: e.to_string(),
    })?;
    write_atomically(&out.join(RUN_FACTS), text.as_bytes())
}
