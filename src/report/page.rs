//! The report page: the runs' facts, their charts and the model's text, as
//! one HTML document with inline SVG and CSS.
//!
//! Guarantees: every text taken from a run (file names, source, command
//! line) is HTML-escaped; the page has no `<script>` and no external
//! reference; each chart sits in a `<figure data-chart=NAME>` (the browser
//! test finds them by that name), and a chart without data says so in words.

use serde_json::Value;

use super::charts::{
    self, Chart, HLine, MarkShape, Marks, Series, PALETTE, PROTECTED, SKIPPED, TOL,
};
use super::run::{Rec, Run};
use super::ReportError;

/// Escape text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
table.facts { border-collapse: collapse; font-size: 14px; }
table.facts th, table.facts td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
table.facts th { background: #f0f0f0; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; }
figure { margin: 0; background: white; border: 1px solid #ddd; padding: 6px; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { font-size: 13px; color: #555; padding: 4px; }
p.empty { color: #777; font-style: italic; }
pre { background: white; border: 1px solid #ddd; padding: 10px; overflow-x: auto; font-size: 13px; }
.health-bad { color: #b00; font-weight: bold; } .health-ok { color: #070; }
";

fn run_label(runs: &[Run], i: usize, what: &str) -> String {
    if runs.len() > 1 {
        format!("{} {what}", runs[i].name)
    } else {
        what.to_string()
    }
}

fn color(i: usize) -> plotters::style::RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Test series: orange beside a single run's blue; a darker shade of the
/// run's colour when runs are compared.
fn test_color(runs: usize, i: usize) -> plotters::style::RGBColor {
    let c = color(i);
    if runs == 1 {
        plotters::style::RGBColor(230, 110, 0)
    } else {
        plotters::style::RGBColor(c.0 / 2, c.1 / 2, c.2 / 2)
    }
}

fn points(recs: &[Rec], f: impl Fn(&Rec) -> Option<f64>) -> Vec<(f64, f64)> {
    recs.iter()
        .filter_map(|r| f(r).map(|y| (r.step as f64, y)))
        .collect()
}

/// A per-step chart of `f` over every run's train records (and, with
/// `test`, the evaluations as dots).
fn step_chart(
    runs: &[Run],
    title: &str,
    y_desc: &str,
    f: impl Fn(&Rec) -> Option<f64> + Copy,
    test: bool,
) -> Chart {
    let mut chart = Chart {
        title: title.into(),
        x_desc: "step (dotted: end of an epoch)".into(),
        y_desc: y_desc.into(),
        ..Chart::default()
    };
    for (i, run) in runs.iter().enumerate() {
        chart.series.push(Series {
            label: run_label(runs, i, "train"),
            color: color(i),
            points: points(&run.train, f),
            dots: run.train.len() < 30,
        });
        if test {
            chart.series.push(Series {
                label: run_label(runs, i, "test"),
                color: test_color(runs.len(), i),
                points: points(&run.test, f),
                dots: true,
            });
        }
    }
    if let Some(run) = runs.first() {
        chart.vlines = run.test.iter().map(|r| r.step as f64 - 0.5).collect();
    }
    chart
}

/// Mark the steps of every run whose update was skipped or whose solves
/// were protected, at the chart's value of that step.
fn mark_steps(chart: &mut Chart, runs: &[Run], f: impl Fn(&Rec) -> Option<f64> + Copy) {
    let skipped: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| {
            points(
                &r.train
                    .iter()
                    .filter(|r| r.skipped)
                    .cloned()
                    .collect::<Vec<_>>(),
                f,
            )
        })
        .collect();
    let protected: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|r| {
            points(
                &r.train
                    .iter()
                    .filter(|r| r.protected > 0.0)
                    .cloned()
                    .collect::<Vec<_>>(),
                f,
            )
        })
        .collect();
    if !skipped.is_empty() {
        chart.marks.push(Marks {
            label: "update skipped".into(),
            color: SKIPPED,
            shape: MarkShape::Cross,
            points: skipped,
        });
    }
    if !protected.is_empty() {
        chart.marks.push(Marks {
            label: "protection fired".into(),
            color: PROTECTED,
            shape: MarkShape::Triangle,
            points: protected,
        });
    }
}

/// A per-step chart of solver figures, failed steps marked. A residual
/// chart (`residual: Some(backward)`) is log-scaled, with the forward or
/// backward solver's tol drawn; otherwise it counts iterations.
fn solver_chart(
    runs: &[Run],
    title: &str,
    f: impl Fn(&Rec) -> Option<f64> + Copy,
    residual: Option<bool>,
) -> Chart {
    let y_desc = if residual.is_some() {
        "residual (log)"
    } else {
        "iterations"
    };
    let mut chart = step_chart(runs, title, y_desc, f, false);
    if let Some(backward) = residual {
        chart.log_y = true;
        chart.hlines = tol_lines(runs, backward);
    }
    mark_steps(&mut chart, runs, f);
    chart
}

/// The charts of the page, each with its `data-chart` name and caption.
pub fn charts(runs: &[Run]) -> Vec<(&'static str, Chart, &'static str)> {
    let mut out = Vec::new();
    let mut loss = step_chart(runs, "Loss", "loss", |r| r.loss, true);
    mark_steps(&mut loss, runs, |r| r.loss);
    out.push((
        "loss",
        loss,
        "Training loss per step; validation and test loss (dots).",
    ));
    if runs
        .iter()
        .any(|r| r.train.iter().chain(&r.test).any(|x| x.accuracy.is_some()))
    {
        let acc = step_chart(runs, "Accuracy", "accuracy", |r| r.accuracy, true);
        out.push((
            "accuracy",
            acc,
            "Accuracy of each training batch; validation and test accuracy.",
        ));
    }
    if runs.iter().any(|r| {
        r.train
            .iter()
            .chain(&r.test)
            .any(|x| x.perplexity.is_some())
    }) {
        let mut ppl = step_chart(runs, "Perplexity", "perplexity", |r| r.perplexity, true);
        ppl.log_y = true;
        out.push((
            "perplexity",
            ppl,
            "Perplexity (exp of the loss), log scale.",
        ));
    }
    let solver_charts = [
        (
            "fwd_iters",
            solver_chart(runs, "Forward solver iterations", |r| r.fwd_iters, None),
            "Mean forward (fixed-point) iterations per step.",
        ),
        (
            "fwd_residual",
            solver_chart(runs, "Forward residual", |r| r.fwd_residual, Some(false)),
            "Mean final forward residual per step, log scale; dashed: the solver's tol.",
        ),
        (
            "bwd_iters",
            solver_chart(runs, "Adjoint solver iterations", |r| r.bwd_iters, None),
            "Mean backward (adjoint) iterations per step.",
        ),
        (
            "bwd_residual",
            solver_chart(runs, "Adjoint residual", |r| r.bwd_residual, Some(true)),
            "Final adjoint residual per step (worst sample), log scale; dashed: the backward solver's tol.",
        ),
    ];
    out.extend(solver_charts);
    let mut radius = Chart {
        title: "Spectral radius".into(),
        x_desc: "epoch".into(),
        whole_x: true,
        y_desc: "spectral radius".into(),
        ..Chart::default()
    };
    for (i, run) in runs.iter().enumerate() {
        radius.series.push(Series {
            label: run_label(runs, i, "estimate"),
            color: color(i),
            points: run
                .test
                .iter()
                .filter_map(|r| r.spectral_radius.map(|y| (r.epoch as f64 + 1.0, y)))
                .collect(),
            dots: true,
        });
    }
    radius.hlines.push(HLine {
        label: "1 (contraction limit)".into(),
        y: 1.0,
        color: plotters::style::RGBColor(120, 120, 120),
    });
    out.push(("spectral_radius", radius, "Largest spectral radius of the equilibria's Jacobians at the fixed point, on the first validation or test batch of each evaluation."));
    let lr = step_chart(runs, "Learning rate", "learning rate", |r| r.lr, false);
    out.push(("lr", lr, "Learning rate of each step."));
    out
}

/// Dashed lines at the (distinct) tolerances of every run's equilibria.
fn tol_lines(runs: &[Run], backward: bool) -> Vec<HLine> {
    let mut tols: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.tolerances())
        .filter_map(|t| {
            if backward {
                t.backward
            } else {
                Some(t.forward)
            }
        })
        .collect();
    tols.sort_by(f64::total_cmp);
    tols.dedup();
    tols.into_iter()
        .map(|y| HLine {
            label: format!("tol {y:e}"),
            y,
            color: TOL,
        })
        .collect()
}

/// "above tol at N of M steps": how the forward solves did against the
/// first equilibrium's tolerance.
pub fn residual_health(run: &Run) -> Option<(usize, usize, f64)> {
    let tol = run.tolerances().first()?.forward;
    let res: Vec<f64> = run.train.iter().filter_map(|r| r.fwd_residual).collect();
    let above = res.iter().filter(|r| **r > tol).count();
    Some((above, res.len(), tol))
}

fn fact_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(xs) => xs
            .iter()
            .map(|x| match x {
                Value::String(s) if s.contains(' ') => format!("'{s}'"),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h {:02}m {:02}s", s / 3600, s / 60 % 60, s % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{seconds:.1} s")
    }
}

fn facts_table(runs: &[Run]) -> String {
    let mut rows: Vec<(&str, Vec<String>)> = Vec::new();
    let mut row = |name: &'static str, f: &dyn Fn(&Run) -> String| {
        rows.push((name, runs.iter().map(f).collect()));
    };
    let fact = |key: &'static str| {
        move |r: &Run| {
            r.fact(key)
                .map(fact_text)
                .unwrap_or_else(|| "unknown".into())
        }
    };
    row("folder", &|r| r.dir.display().to_string());
    row("model", &fact("model"));
    row("model file", &fact("model_file"));
    row("parameters", &fact("parameters"));
    row("deqc version", &fact("deqc_version"));
    row("command line", &fact("command_line"));
    row("seed", &fact("seed"));
    row("threads", &fact("threads"));
    row("device", &fact("device"));
    row("wall time", &|r| {
        match r.fact("wall_seconds").and_then(Value::as_f64) {
            Some(w) if w > 0.0 => duration(w),
            // Stamped after each epoch: within the first one (or for a run
            // without run.json), the steps' own times are what is known.
            _ => {
                let steps: f64 = r
                    .train
                    .iter()
                    .chain(&r.test)
                    .filter_map(|x| x.seconds)
                    .sum();
                format!("at least {} (steps so far)", duration(steps))
            }
        }
    });
    row("steps", &|r| {
        r.train
            .last()
            .map_or("0".into(), |x| (x.step + 1).to_string())
    });
    row("epochs evaluated", &|r| r.test.len().to_string());
    row("final test", &|r| match r.test.last() {
        None => "none yet".into(),
        Some(t) => {
            let mut s = t.loss.map_or(String::new(), |l| format!("loss {l:.4}"));
            if let Some(a) = t.accuracy {
                s.push_str(&format!(", accuracy {:.2}%", 100.0 * a));
            }
            if let Some(p) = t.perplexity {
                s.push_str(&format!(", perplexity {p:.2}"));
            }
            s
        }
    });
    row("skipped updates", &|r| {
        r.train.iter().filter(|x| x.skipped).count().to_string()
    });
    row("equilibria", &|r| {
        let Some(Value::Array(eqs)) = r.fact("equilibria") else {
            return "unknown".into();
        };
        eqs.iter()
            .map(|e| {
                let get = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                format!(
                    "{}: {}, backward {}",
                    get("place"),
                    get("solver"),
                    get("backward")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    let mut html = String::from("<table class=\"facts\">\n<tr><th></th>");
    for r in runs {
        html.push_str(&format!("<th>{}</th>", escape(&r.name)));
    }
    html.push_str("</tr>\n");
    for (name, cells) in rows {
        html.push_str(&format!("<tr><th>{name}</th>"));
        for c in cells {
            html.push_str(&format!("<td>{}</td>", escape(&c).replace('\n', "<br>")));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("<tr><th>forward residual</th>");
    for r in runs {
        let cell = match residual_health(r) {
            Some((above, n, tol)) if above > 0 => format!(
                "<span class=\"health-bad\" data-above-tol=\"{above}\" data-steps=\"{n}\">above tol {tol:e} at {above} of {n} steps</span>"
            ),
            Some((_, n, tol)) => format!(
                "<span class=\"health-ok\" data-above-tol=\"0\" data-steps=\"{n}\">within tol {tol:e} at all {n} steps</span>"
            ),
            None => "unknown".into(),
        };
        html.push_str(&format!("<td>{cell}</td>"));
    }
    html.push_str("</tr>\n</table>\n");
    html
}

/// The whole page for `runs` (the first is the main one).
pub fn page(runs: &[Run]) -> Result<String, ReportError> {
    let Some(main) = runs.first() else {
        return Ok(String::new());
    };
    let mut html = String::new();
    html.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    html.push_str(&format!(
        "<title>deqc report: {}</title>\n",
        escape(&main.name)
    ));
    html.push_str(&format!("<style>{STYLE}</style>\n</head>\n<body>\n"));
    html.push_str(&format!(
        "<h1>deqc run report: {}</h1>\n",
        escape(&main.name)
    ));
    if runs.len() > 1 {
        let others: Vec<String> = runs[1..].iter().map(|r| escape(&r.name)).collect();
        html.push_str(&format!("<p>Compared with: {}.</p>\n", others.join(", ")));
    }
    for r in runs.iter().filter(|r| r.bad_lines > 0) {
        html.push_str(&format!(
            "<p class=\"empty\">{}: {} unreadable line(s) of metrics.jsonl skipped.</p>\n",
            escape(&r.name),
            r.bad_lines
        ));
    }
    html.push_str("<h2>Run</h2>\n");
    html.push_str(&facts_table(runs));
    html.push_str("<h2>Charts</h2>\n<div class=\"charts\">\n");
    for (name, chart, caption) in charts(runs) {
        html.push_str(&format!("<figure data-chart=\"{name}\">\n"));
        match charts::svg(&chart)? {
            Some(svg) => html.push_str(&svg),
            None => html.push_str(&format!(
                "<p class=\"empty\">{}: no data in {}.</p>",
                escape(&chart.title),
                if runs.len() > 1 {
                    "these runs"
                } else {
                    "this run"
                }
            )),
        }
        html.push_str(&format!(
            "\n<figcaption>{}</figcaption>\n</figure>\n",
            escape(caption)
        ));
    }
    html.push_str("</div>\n");
    if let Some(src) = main.fact("model_source").and_then(Value::as_str) {
        let file = main.fact("model_file").map(fact_text).unwrap_or_default();
        html.push_str(&format!(
            "<h2>Model: {}</h2>\n<pre>{}</pre>\n",
            escape(&file),
            escape(src)
        ));
    }
    if let Some(block) = main.fact("train_block").and_then(Value::as_str) {
        html.push_str(&format!(
            "<h2>Train block (as run, with overrides and defaults)</h2>\n<pre>{}</pre>\n",
            escape(block)
        ));
    }
    html.push_str("</body>\n</html>\n");
    Ok(html)
}
