//! `deqc report`: the page holds every chart and fact the issue lists, is
//! self-contained, draws residuals on a log scale with the tolerance, marks
//! skipped and protected steps, overlays compared runs, is written by
//! `deqc run` after each epoch, and renders in headless Chromium without
//! console errors and with charts that are not blank.

use std::path::{Path, PathBuf};
use std::process::Command;

use deqc::report::charts::{self, Chart, Series};
use deqc::report::{render, Run};
use serde_json::json;

mod common;
use common::cli::deqc;

const CHARTS: [&str; 9] = [
    "loss",
    "accuracy",
    "fwd_iters",
    "fwd_residual",
    "bwd_iters",
    "bwd_residual",
    "spectral_radius",
    "lr",
    "perplexity",
];

fn temp_dir(name: &str) -> PathBuf {
    common::fresh_dir(&format!("report-{name}"))
}

/// A run folder with 40 steps over two epochs: the forward residual stays
/// above tol = 1e-3 (as in the MDEQ example), steps 7 and 23 skipped their
/// update, step 12 had a protected solve.
fn synthetic_run(name: &str, scale: f64) -> PathBuf {
    let dir = temp_dir(name);
    let mut lines = String::new();
    for step in 0..40u64 {
        let epoch = step / 20;
        let t = step as f64;
        let mut rec = json!({
            "epoch": epoch, "step": step, "split": "train",
            "loss": scale * 2.3 * (-t / 15.0).exp() + 0.1,
            "accuracy": 0.1 + 0.8 * (1.0 - (-t / 10.0).exp()),
            "fwd_iters": 12.0, "fwd_residual": 2e-2 * (-t / 40.0).exp() * scale,
            "bwd_iters": 14.0, "bwd_residual": 1e-3 * (-t / 20.0).exp(),
            "seconds": 0.1, "lr": 2e-3 * (1.0 - t / 40.0),
        });
        if step == 7 || step == 23 {
            rec["skipped_update"] = json!(1.0);
        }
        if step == 12 {
            rec["equilibria"] =
                json!({"h,l@16": {"fwd_solves": 1, "fwd_protected": 1, "bwd_protected": 0}});
        }
        lines.push_str(&format!("{rec}\n"));
        if step % 20 == 19 {
            let test = json!({
                "epoch": epoch, "step": step + 1, "split": "test",
                "loss": scale * 0.5 / (epoch as f64 + 1.0), "accuracy": 0.8 + 0.05 * epoch as f64,
                "fwd_iters": 12.0, "fwd_residual": 1e-2, "bwd_iters": 0.0, "bwd_residual": 0.0,
                "seconds": 0.5, "spectral_radius": 0.7 + 0.1 * epoch as f64,
            });
            lines.push_str(&format!("{test}\n"));
        }
    }
    // A last line cut short by a crash is skipped.
    lines.push_str("{\"epoch\": 1, \"st");
    std::fs::write(dir.join("metrics.jsonl"), lines).unwrap();
    let facts = json!({
        "deqc_version": "0.1.0",
        "command_line": ["deqc", "run", "examples/mdeq_mnist.deq", "--max-steps", "40"],
        "model": "Mdeq",
        "model_file": "examples/mdeq_mnist.deq",
        "model_source": "model Mdeq(x: [B, 4]) -> [B, 4] { x } // a <b> & c\n",
        "train_block": "train Mdeq {\n    epochs = 2;\n}",
        "parameters": 26962,
        "seed": 1234,
        "threads": 2,
        "device": "Cpu",
        "wall_seconds": 3725.0,
        "equilibria": [{
            "place": "examples/mdeq_mnist.deq:16",
            "solver": "broyden(memory = 12, tol = 0.001, max_iter = 12, stop = \"rel\")",
            "backward": "implicit(...)",
            "tol": 1e-3,
            "backward_tol": 1e-4,
        }],
    });
    std::fs::write(dir.join("run.json"), facts.to_string()).unwrap();
    dir
}

/// The texts drawn in an SVG (axis labels, legend), trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// The `<figure data-chart=NAME>` element of the page.
fn figure<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("<figure data-chart=\"{name}\">"))
        .unwrap_or_else(|| panic!("no {name} chart"));
    let end = html[start..].find("</figure>").unwrap() + start;
    &html[start..end]
}

#[test]
fn the_page_has_every_chart_and_fact() {
    let dir = synthetic_run("facts", 1.0);
    let run = Run::load(&dir).unwrap();
    assert_eq!((run.train.len(), run.test.len(), run.bad_lines), (40, 2, 1));
    let html = render(&[run]).unwrap();
    for name in CHARTS.iter().filter(|c| **c != "perplexity") {
        assert!(figure(&html, name).contains("<svg"), "{name} has no chart");
    }
    assert!(!html.contains("data-chart=\"perplexity\""));
    for fact in [
        "26962",
        "1234",
        "0.1.0",
        "deqc run examples/mdeq_mnist.deq --max-steps 40",
        "1h 02m 05s",
        "Cpu",
        "<td>2</td>",
        "train Mdeq {",
        "examples/mdeq_mnist.deq:16: broyden(",
        "model Mdeq(x: [B, 4]) -&gt; [B, 4] { x } // a &lt;b&gt; &amp; c",
    ] {
        assert!(html.contains(fact), "missing {fact}");
    }
    // Self-contained: nothing is loaded, nothing runs.
    for banned in ["<script", "<link", "@import", "url(", "src=", "<iframe"] {
        assert!(!html.contains(banned), "{banned}");
    }
    let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_ns.contains("http"), "an external reference");
    // Residuals on a log scale, with the tolerance drawn and the failed
    // steps marked; the health line counts the steps above tol.
    let fwd = figure(&html, "fwd_residual");
    assert!(fwd.contains("tol 1e-3"), "no tol line");
    let labels = svg_texts(fwd);
    assert!(
        labels.iter().any(|l| l == "1e-2") && labels.iter().any(|l| l == "1e-3"),
        "not a log axis: {labels:?}"
    );
    assert!(fwd.contains("update skipped") && fwd.contains("protection fired"));
    assert!(figure(&html, "bwd_residual").contains("tol 1e-4"));
    assert!(figure(&html, "loss").contains("update skipped"));
    assert!(html.contains("above tol 1e-3 at 40 of 40 steps"));
    assert!(html.contains("1 unreadable line"));
    // Before the first epoch ends, run.json has no wall time yet: the
    // steps' own times (40 x 0.1 s + 2 x 0.5 s) are shown as a bound.
    let mut facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    facts["wall_seconds"] = json!(0.0);
    std::fs::write(dir.join("run.json"), facts.to_string()).unwrap();
    let html = render(&[Run::load(&dir).unwrap()]).unwrap();
    assert!(html.contains("at least 5.0 s (steps so far)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compared_runs_are_overlaid() {
    let a = synthetic_run("cmp-a", 1.0);
    let b = synthetic_run("cmp-b", 0.5);
    let runs = vec![Run::load(&a).unwrap(), Run::load(&b).unwrap()];
    let (na, nb) = (runs[0].name.clone(), runs[1].name.clone());
    let html = render(&runs).unwrap();
    let loss = figure(&html, "loss");
    for label in [
        format!("{na} train"),
        format!("{nb} train"),
        format!("{nb} test"),
    ] {
        assert!(loss.contains(&label), "no {label}");
    }
    assert!(html.contains(&format!("Compared with: {nb}")));
    let _ = (std::fs::remove_dir_all(&a), std::fs::remove_dir_all(&b));
}

#[test]
fn a_log_axis_spans_decades_and_drops_what_it_cannot_show() {
    let chart = Chart {
        title: "r".into(),
        log_y: true,
        series: vec![Series {
            label: "s".into(),
            color: charts::PALETTE[0],
            points: vec![(0.0, 1e-1), (1.0, 0.0), (2.0, 1e-5), (3.0, f64::NAN)],
            dots: false,
        }],
        ..Chart::default()
    };
    let svg = charts::svg(&chart).unwrap().unwrap();
    let labels = svg_texts(&svg);
    for tick in ["1e-2", "1e-3", "1e-4"] {
        assert!(
            labels.iter().any(|l| l == tick),
            "no tick {tick}: {labels:?}"
        );
    }
    let empty = Chart {
        log_y: true,
        series: vec![Series {
            points: vec![(0.0, 0.0), (1.0, -1.0)],
            ..chart.series[0].clone()
        }],
        ..chart.clone()
    };
    assert!(charts::svg(&empty).unwrap().is_none());
    assert_eq!(charts::short_number(0.25), "0.25");
    assert_eq!(charts::short_number(1e-4), "1e-4");
    assert_eq!(charts::power_of_ten(1e-3), "1e-3");
    assert_eq!(charts::power_of_ten(2e-3), "");
    assert_eq!(charts::whole_number(2.0), "2");
    assert_eq!(charts::whole_number(1.5), "");
}

#[test]
fn deqc_run_writes_the_facts_and_the_report() {
    let dir = temp_dir("run");
    let out = dir.to_str().unwrap();
    let (code, _, err) = deqc(&[
        "run",
        "examples/mnist_mlp.deq",
        "--max-steps",
        "2",
        "--seed",
        "77",
        "--out",
        out,
    ]);
    assert_eq!(code, 0, "{err}");
    let facts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(facts["seed"], 77);
    assert_eq!(facts["model"], "DeqMlp");
    assert_eq!(facts["deqc_version"], env!("CARGO_PKG_VERSION"));
    assert!(facts["parameters"].as_i64().unwrap() > 0);
    assert!(facts["wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(facts["equilibria"][0]["tol"].as_f64().unwrap() > 0.0);
    assert!(facts["command_line"].to_string().contains("--max-steps"));
    // The example standardizes its pixels (`normalize = true`): the
    // statistics are printed and saved with the run.
    let std = facts["standardization"]["std"].as_f64().unwrap();
    let mean = facts["standardization"]["mean"].as_f64().unwrap();
    assert!(
        (0.25..0.35).contains(&std) && (0.1..0.16).contains(&mean),
        "{facts}"
    );
    assert_eq!(facts["standardization"]["samples"], 8000);
    assert!(err.contains("x standardized with mean 0.1"), "{err}");
    let page = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(figure(&page, "fwd_residual").contains("<svg"));
    let other = dir.join("other.html");
    let (code, stdout, err) = deqc(&[
        "report",
        out,
        "--compare",
        out,
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("other.html"));
    assert!(std::fs::read_to_string(&other)
        .unwrap()
        .contains("Compared with"));
    let (code, _, err) = deqc(&["report", dir.join("nothing").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("metrics.jsonl"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------- browser

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
}

/// Screenshot `page` in headless Chromium: the PNG's pixels (RGB rows) and
/// the console lines it logged.
fn screenshot(browser: &Path, page: &Path, png: &Path) -> (Vec<[u8; 3]>, usize, Vec<String>) {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,2600",
        ])
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<String> = log
        .lines()
        .filter(|l| l.contains("CONSOLE"))
        .map(str::to_string)
        .collect();
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).unwrap_or_else(|e| panic!("no screenshot ({e}): {log}")),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (pixels, info.width as usize, console)
}

#[test]
fn the_page_renders_in_a_browser() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but chromium is not installed (.ci/run installs it)"
        );
        eprintln!("SKIPPED: the browser test needs chromium (apt-get install chromium)");
        return;
    };
    let dir = synthetic_run("browser", 1.0);
    let html = render(&[Run::load(&dir).unwrap()]).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let png = dir.join("report.png");
    let (pixels, width, console) = screenshot(&browser, &page, &png);
    assert!(console.is_empty(), "console: {console:?}");
    let count = |pred: &dyn Fn(&[u8; 3]) -> bool| pixels.iter().filter(|p| pred(p)).count();
    let near =
        |c: [u8; 3]| move |p: &[u8; 3]| (0..3).all(|k| (p[k] as i32 - c[k] as i32).abs() <= 24);
    let blue = charts::PALETTE[0];
    let red = charts::TOL;
    let blue_px = count(&near([blue.0, blue.1, blue.2]));
    let red_px = count(&near([red.0, red.1, red.2]));
    let orange_px = count(&near([230, 110, 0]));
    let not_white = count(&|p| p.iter().any(|c| *c < 200));
    eprintln!(
        "screenshot {}: {width} px wide, {} px; blue {blue_px}, red {red_px}, orange {orange_px}, not white {not_white}",
        png.display(),
        pixels.len()
    );
    // The train lines of eight charts, the tol lines and markers, the test
    // dots: each a few hundred pixels at least.
    assert!(blue_px > 4000, "train lines missing: {blue_px} blue pixels");
    assert!(red_px > 500, "tol lines / skip marks missing: {red_px}");
    assert!(orange_px > 200, "test points missing: {orange_px}");
    assert!(not_white > pixels.len() / 50, "the page is nearly blank");
    // Each chart area (two columns of figures) has drawn lines: look at the
    // rows holding figures and count blue pixels in each column half.
    let rows = pixels.len() / width;
    let (mut left, mut right) = (0, 0);
    for y in 0..rows {
        for x in 0..width {
            if near([blue.0, blue.1, blue.2])(&pixels[y * width + x]) {
                if x < width / 2 {
                    left += 1;
                } else {
                    right += 1;
                }
            }
        }
    }
    assert!(
        left > 1000 && right > 1000,
        "a column of charts is blank: {left} / {right}"
    );
    // The console check can fail: a page that logs an error is caught.
    let bad = dir.join("bad.html");
    std::fs::write(
        &bad,
        "<html><body><script>console.error('x')</script></body></html>",
    )
    .unwrap();
    let (_, _, console) = screenshot(&browser, &bad, &dir.join("bad.png"));
    assert!(!console.is_empty(), "console errors are not seen");
    if std::env::var_os("DEQC_KEEP_SCREENSHOT").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
