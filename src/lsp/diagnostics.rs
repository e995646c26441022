//! The front end's diagnostics as LSP diagnostics.
//!
//! Owns the mapping from a miette diagnostic (message, code, severity,
//! labels, help) to the protocol's form. Guarantees: the message and help
//! are the same text `deqc check` prints, the range is the primary label's
//! exact span, and every labelled span comes along as related information;
//! a problem inside an imported file is shown at the `use` that imports it.

use lsp_types::{
    Diagnostic, DiagnosticRelatedInformation, DiagnosticSeverity, Location, NumberOrString, Uri,
};
use miette::LabeledSpan;

use crate::diag::Diag;
use crate::lsp::position::LineIndex;
use crate::source::{FileId, SourceMap};
use crate::syntax::ast;
use crate::Compiled;

/// Every diagnostic of `compiled`, for the document `uri` (its root file).
pub fn convert(compiled: &Compiled, uri: &Uri) -> Vec<Diagnostic> {
    let root_text = &compiled.sources.file(compiled.root).text;
    let index = LineIndex::new(root_text);
    compiled
        .diags
        .items
        .iter()
        .map(|d| one(d, compiled, &index, uri))
        .collect()
}

fn one(d: &Diag, compiled: &Compiled, index: &LineIndex, uri: &Uri) -> Diagnostic {
    let err = &d.error;
    let labels: Vec<LabeledSpan> = err.labels().map(|l| l.collect()).unwrap_or_default();
    let primary = labels
        .iter()
        .find(|l| l.primary())
        .or_else(|| labels.first());
    let mut message = err.to_string();
    if let Some(help) = err.help() {
        message.push_str(&format!("\nhelp: {help}"));
    }
    let severity = match err.severity() {
        None | Some(miette::Severity::Error) => DiagnosticSeverity::ERROR,
        Some(miette::Severity::Warning) => DiagnosticSeverity::WARNING,
        Some(miette::Severity::Advice) => DiagnosticSeverity::HINT,
    };
    let code = err.code().map(|c| NumberOrString::String(c.to_string()));
    let (range, related) = if d.file == compiled.root {
        let range = primary.map_or_else(
            || index.range(0, 0),
            |l| index.range(l.offset(), l.offset() + l.len()),
        );
        let related: Vec<DiagnosticRelatedInformation> = labels
            .iter()
            .filter_map(|l| {
                Some(DiagnosticRelatedInformation {
                    location: Location {
                        uri: uri.clone(),
                        range: index.range(l.offset(), l.offset() + l.len()),
                    },
                    message: l.label()?.to_string(),
                })
            })
            .collect();
        (range, related)
    } else {
        // The problem is in an imported file: say where, at the `use`.
        let (s, e) = use_span_for(compiled, d.file);
        let file = compiled.sources.file(d.file);
        let at = primary.map_or((1, 1), |l| line_col(&compiled.sources, d.file, l.offset()));
        message = format!("in {}:{}:{}: {message}", file.name, at.0, at.1);
        (index.range(s, e), Vec::new())
    };
    Diagnostic {
        range,
        severity: Some(severity),
        code,
        source: Some("deqc".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        ..Default::default()
    }
}

fn line_col(sources: &SourceMap, file: FileId, offset: usize) -> (usize, usize) {
    sources.line_col(crate::source::Span::new(file, offset, offset))
}

/// The span of the root's `use` that brings in `file` (directly or not):
/// the first `use` when no direct import matches.
fn use_span_for(compiled: &Compiled, file: FileId) -> (usize, usize) {
    let Some(root) = compiled.index.modules.list.first() else {
        return (0, 0);
    };
    let uses: Vec<&ast::UseItem> = root
        .ast
        .items
        .iter()
        .filter_map(|i| match i {
            ast::Item::Use(u) => Some(u),
            _ => None,
        })
        .collect();
    let direct = root
        .imports
        .iter()
        .find(|(_, m)| compiled.index.modules.get(**m).file == file)
        .and_then(|(name, _)| {
            uses.iter().find(|u| match &u.target {
                ast::UseTarget::Module(m) => &m.name == name,
                ast::UseTarget::File { path, .. } => std::path::Path::new(path)
                    .file_stem()
                    .is_some_and(|s| s.to_string_lossy() == name.as_str()),
            })
        });
    match direct.or(uses.first()) {
        Some(u) => (u.span.start as usize, u.span.end as usize),
        None => (0, 0),
    }
}
