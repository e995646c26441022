//! The diagnostics sink shared by every phase, and their rendering.
//!
//! Owns the list of problems found in one compilation. Each phase reports its
//! own error enum (`syntax::ParseError`, `sema::SemaError`, ...) together with
//! the file its labels point into; rendering attaches that file's text.
//! Compiler bugs go through [`ice!`](crate::ice) and are rendered as internal errors
//! (`deq::internal`), never as the user's mistake.

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, Report};
use thiserror::Error;

use crate::source::{FileId, SourceMap};

/// One reported problem and the file its labels point into.
pub struct Diag {
    pub file: FileId,
    pub error: Box<dyn Diagnostic + Send + Sync + 'static>,
}

impl std::fmt::Debug for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Diag({:?}, {})", self.file, self.error)
    }
}

impl Diag {
    pub fn new(file: FileId, error: impl Diagnostic + Send + Sync + 'static) -> Diag {
        Diag {
            file,
            error: Box::new(error),
        }
    }

    /// Is this an error (as opposed to a warning or advice)?
    pub fn is_error(&self) -> bool {
        matches!(self.error.severity(), None | Some(miette::Severity::Error))
    }

    /// The miette code, e.g. `deq::sema::unknown_name`.
    pub fn code(&self) -> String {
        self.error.code().map(|c| c.to_string()).unwrap_or_default()
    }

    pub fn into_report(self, sources: &SourceMap) -> Report {
        Report::new_boxed(self.error).with_source_code(sources.named_source(self.file))
    }
}

/// Every problem found in one compilation, in the order found.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub items: Vec<Diag>,
}

impl Diagnostics {
    pub fn push(&mut self, file: FileId, error: impl Diagnostic + Send + Sync + 'static) {
        self.items.push(Diag::new(file, error));
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diag::is_error)
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.is_error()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }
}

/// A compiler bug: an invariant that user input cannot break was broken.
#[derive(Debug, Error, Diagnostic)]
#[error("internal compiler error: {message}")]
#[diagnostic(
    code(deq::internal),
    help("this is a bug in deqc, not in your program; please report it with the file that triggers it")
)]
pub struct InternalError {
    pub message: String,
    #[label("while compiling this")]
    pub span: Option<miette::SourceSpan>,
}

/// Report a compiler bug at a place in the source.
#[macro_export]
macro_rules! ice {
    ($span:expr, $($fmt:tt)*) => {
        $crate::diag::InternalError {
            message: format!($($fmt)*),
            span: Some($span.into()),
        }
    };
}

/// Render diagnostics as text. `color = false` and a fixed width give the
/// stable form used by snapshot tests.
pub fn render(diags: Diagnostics, sources: &SourceMap, width: usize, color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(width);
    let mut out = String::new();
    for d in diags.items {
        let report = d.into_report(sources);
        // Rendering into a String cannot fail except on a broken handler.
        let _ = handler.render_report(&mut out, report.as_ref());
    }
    out
}
