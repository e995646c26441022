//! One epoch's running figures, its progress bar and its closing lines.
//!
//! Owns what the trainer accumulates over an epoch (mean loss, accuracy,
//! samples, solver statistics, skipped updates) and how it is shown: the
//! progress bar's message, the warnings after the epoch, and the epoch's
//! summary line. Guarantees: nothing here touches parameters, files or the
//! metrics log; the figures shown are those of the steps added.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::guard::FAILED_SOLVE_FACTOR;
use super::metrics::{self, Mean};
use super::solve_report::SolveReport;

/// The running figures of the epoch in progress.
pub struct Epoch {
    /// 0-based.
    pub index: usize,
    pub started: Instant,
    pub bar: ProgressBar,
    /// Solver statistics of every step so far.
    pub solves: SolveReport,
    /// Updates the failed-solve guard skipped.
    pub skipped: usize,
    pub loss: Mean,
    /// Mean `-log p(x)` of a log-density output (nats per sample).
    pub nll: Mean,
    pub correct: usize,
    /// Samples whose prediction was judged (classification only).
    pub seen: usize,
    pub samples: usize,
    /// Batches of this epoch done, including those done before a resume.
    pub done: usize,
}

/// A progress bar over `len` batches, `label` before the bar (indicatif
/// template syntax); hidden when `quiet`.
pub fn progress_bar(label: &str, len: usize, quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!("{label} [{{bar:30}}] {{pos}}/{{len}} {{msg}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

impl Epoch {
    /// Start epoch `index` of `epochs` with `done_before` of its
    /// `batches` batches already done (a resume mid-epoch).
    pub fn start(
        index: usize,
        epochs: usize,
        batches: usize,
        done_before: usize,
        quiet: bool,
    ) -> Self {
        let bar = progress_bar("epoch {prefix}", batches, quiet);
        bar.set_prefix(format!("{}/{}", index + 1, epochs));
        bar.set_position(done_before as u64);
        Epoch {
            index,
            started: Instant::now(),
            bar,
            solves: SolveReport::new(),
            skipped: 0,
            loss: Mean::new(),
            nll: Mean::new(),
            correct: 0,
            seen: 0,
            samples: 0,
            done: done_before,
        }
    }

    /// Advance the bar by one step, showing the running figures.
    pub fn show_progress(&self) {
        let rate = self.samples as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        let acc = if self.seen > 0 {
            format!(
                " acc {:.1}%",
                100.0 * self.correct as f64 / self.seen as f64
            )
        } else {
            String::new()
        };
        self.bar.set_message(format!(
            "loss {:.4}{acc} {} {:.0} samples/s",
            self.loss.mean(),
            self.solves.compact(),
            rate
        ));
        self.bar.inc(1);
    }

    /// Clear the bar and print the epoch's solver warnings.
    pub fn finish(&self, quiet: bool) {
        self.bar.finish_and_clear();
        if quiet {
            return;
        }
        for w in self.solves.warnings() {
            eprintln!("warning: {w}");
        }
        if self.skipped > 0 {
            eprintln!(
                "warning: skipped {} updates from failed solves (blow-up, a forward residual over {FAILED_SOLVE_FACTOR} x tol and the usual, or a diverged adjoint); --keep-failed-steps applies them",
                self.skipped
            );
        }
        let protected = self.solves.protected();
        if protected != (0, 0) {
            eprintln!(
                "warning: blow-up protection stopped {} forward and {} adjoint solves this epoch; their samples kept their best iterates",
                protected.0, protected.1
            );
        }
    }

    /// The epoch's summary line: train figures, then `test_line` (the
    /// test figures, or empty), the solver summary and the train time.
    pub fn summary_line(
        &self,
        epochs: usize,
        text: bool,
        test_line: &str,
        test_solves: Option<&SolveReport>,
        train_secs: f64,
    ) -> String {
        let mut acc = if text {
            format!(" perplexity {:.2}", metrics::perplexity(self.loss.mean()))
        } else {
            String::new()
        };
        if self.seen > 0 {
            acc.push_str(&format!(
                " accuracy {:.2}%",
                100.0 * self.correct as f64 / self.seen as f64
            ));
        }
        let eqs = self.solves.epoch_summary(test_solves);
        let eqs = if eqs.is_empty() {
            eqs
        } else {
            format!("; {eqs}")
        };
        format!(
            "epoch {}/{}: train loss {:.4}{acc}{test_line}{eqs}; {:.1} s",
            self.index + 1,
            epochs,
            self.loss.mean(),
            train_secs
        )
    }
}
