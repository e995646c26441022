//! `deqc lsp`: a language server over stdio (`lsp-server`, `lsp-types`).
//!
//! Owns the protocol loop and the open documents. Every open or changed
//! document is checked by the same front end as `deqc check` and its
//! diagnostics published; hover, go to definition, document symbols and
//! completion answer from the last check (`analysis`, `nav`, `complete`).
//! Guarantees: the server never dies on a document: every check and every
//! answer runs under `catch_unwind`, so even a compiler bug costs one
//! answer (an error response, or no diagnostics), not the session; edits
//! with out-of-range positions are clamped.

pub mod analysis;
pub mod complete;
pub mod diagnostics;
pub mod docs;
pub mod nav;
pub mod position;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::rc::Rc;

use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidCloseTextDocument, DidOpenTextDocument, Notification as _,
    PublishDiagnostics,
};
use lsp_types::request::{
    Completion, DocumentSymbolRequest, GotoDefinition, HoverRequest, Request as _,
};
use lsp_types::{
    CompletionOptions, CompletionResponse, DocumentSymbolResponse, GotoDefinitionResponse, Hover,
    HoverContents, HoverProviderCapability, MarkupContent, MarkupKind, OneOf,
    PublishDiagnosticsParams, ServerCapabilities, TextDocumentContentChangeEvent,
    TextDocumentPositionParams, TextDocumentSyncCapability, TextDocumentSyncKind, Uri,
};

use analysis::Analysis;
use position::LineIndex;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Run the server on stdin/stdout until the client says `exit`.
pub fn run() -> ExitCode {
    let (connection, io_threads) = Connection::stdio();
    let served = serve(&connection);
    drop(connection);
    let joined = io_threads.join();
    match (served, joined) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("deqc lsp: {e}");
            ExitCode::from(1)
        }
        (_, Err(e)) => {
            eprintln!("deqc lsp: {e}");
            ExitCode::from(1)
        }
    }
}

/// What the server offers.
pub fn capabilities() -> ServerCapabilities {
    ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Kind(
            TextDocumentSyncKind::INCREMENTAL,
        )),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![":".into(), "(".into(), ",".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The protocol loop on an established connection.
pub fn serve(conn: &Connection) -> Result<(), BoxError> {
    conn.initialize(serde_json::to_value(capabilities())?)?;
    let mut server = Server::default();
    for msg in &conn.receiver {
        match msg {
            Message::Request(req) => {
                if conn.handle_shutdown(&req)? {
                    return Ok(());
                }
                conn.sender.send(Message::Response(server.request(req)))?;
            }
            Message::Notification(n) => {
                for out in server.notification(n) {
                    conn.sender.send(Message::Notification(out))?;
                }
            }
            Message::Response(_) => {}
        }
    }
    Ok(())
}

/// One open document: its text and the last check of it.
struct Document {
    text: String,
    analysis: Option<Rc<Analysis>>,
    /// The last check whose root file parsed (often `analysis` itself):
    /// completion and the outline keep working while a line is half-typed.
    parsed: Option<Rc<Analysis>>,
}

impl Document {
    fn new(text: String) -> Document {
        Document {
            text,
            analysis: None,
            parsed: None,
        }
    }
}

/// A notification's parameters, `None` when they do not parse.
fn params<N: lsp_types::notification::Notification>(value: serde_json::Value) -> Option<N::Params> {
    serde_json::from_value(value).ok()
}

#[derive(Default)]
struct Server {
    docs: HashMap<Uri, Document>,
}

impl Server {
    fn notification(&mut self, n: Notification) -> Vec<Notification> {
        match n.method.as_str() {
            DidOpenTextDocument::METHOD => {
                let Some(p) = params::<DidOpenTextDocument>(n.params) else {
                    return Vec::new();
                };
                let uri = p.text_document.uri;
                self.docs
                    .insert(uri.clone(), Document::new(p.text_document.text));
                self.check(&uri)
            }
            DidChangeTextDocument::METHOD => {
                let Some(p) = params::<DidChangeTextDocument>(n.params) else {
                    return Vec::new();
                };
                let uri = p.text_document.uri;
                let Some(doc) = self.docs.get_mut(&uri) else {
                    return Vec::new();
                };
                for change in p.content_changes {
                    apply_change(&mut doc.text, change);
                }
                self.check(&uri)
            }
            DidCloseTextDocument::METHOD => {
                let Some(p) = params::<DidCloseTextDocument>(n.params) else {
                    return Vec::new();
                };
                self.docs.remove(&p.text_document.uri);
                vec![publish(p.text_document.uri, Vec::new())]
            }
            _ => Vec::new(),
        }
    }

    /// Check a document again and publish its diagnostics.
    fn check(&mut self, uri: &Uri) -> Vec<Notification> {
        let Some(doc) = self.docs.get_mut(uri) else {
            return Vec::new();
        };
        let text = doc.text.clone();
        let checked = catch_unwind(AssertUnwindSafe(|| {
            let compiled = match position::uri_to_path(uri) {
                Some(path) => crate::compile_text_at(&path, &text),
                None => crate::compile_source(uri.as_str(), &text),
            };
            let diags = diagnostics::convert(&compiled, uri);
            (Analysis::new(compiled), diags)
        }));
        match checked {
            Ok((analysis, diags)) => {
                let analysis = Rc::new(analysis);
                if !analysis.root_parse_failed() {
                    doc.parsed = Some(analysis.clone());
                }
                doc.analysis = Some(analysis);
                vec![publish(uri.clone(), diags)]
            }
            Err(_) => {
                doc.analysis = None;
                eprintln!("deqc lsp: internal error while checking {}", uri.as_str());
                Vec::new()
            }
        }
    }

    fn request(&mut self, req: Request) -> Response {
        let id = req.id.clone();
        let answer = catch_unwind(AssertUnwindSafe(|| self.answer(req)));
        match answer {
            Ok(Ok(value)) => Response::new_ok(id, value),
            Ok(Err((code, message))) => Response::new_err(id, code as i32, message),
            Err(_) => Response::new_err(
                id,
                ErrorCode::InternalError as i32,
                "internal error in deqc lsp".into(),
            ),
        }
    }

    fn answer(&mut self, req: Request) -> Result<serde_json::Value, (ErrorCode, String)> {
        let bad = |e: serde_json::Error| (ErrorCode::InvalidParams, e.to_string());
        let value = match req.method.as_str() {
            HoverRequest::METHOD => {
                let p: lsp_types::HoverParams = serde_json::from_value(req.params).map_err(bad)?;
                let hover = self.at(&p.text_document_position_params, |a, offset, _| {
                    let (text, span) = a.hover(offset)?;
                    let index = LineIndex::new(a.root_text());
                    Some(Hover {
                        contents: HoverContents::Markup(MarkupContent {
                            kind: MarkupKind::Markdown,
                            value: text,
                        }),
                        range: Some(index.range(span.start as usize, span.end as usize)),
                    })
                });
                serde_json::to_value(hover)
            }
            GotoDefinition::METHOD => {
                let p: lsp_types::GotoDefinitionParams =
                    serde_json::from_value(req.params).map_err(bad)?;
                let found = self.at(&p.text_document_position_params, |a, offset, uri| {
                    nav::definition(a, offset, uri).map(GotoDefinitionResponse::Scalar)
                });
                serde_json::to_value(found)
            }
            DocumentSymbolRequest::METHOD => {
                let p: lsp_types::DocumentSymbolParams =
                    serde_json::from_value(req.params).map_err(bad)?;
                let symbols = self
                    .docs
                    .get(&p.text_document.uri)
                    .and_then(|d| d.parsed.as_ref())
                    .map(|a| DocumentSymbolResponse::Nested(nav::symbols(a)));
                serde_json::to_value(symbols)
            }
            Completion::METHOD => {
                let p: lsp_types::CompletionParams =
                    serde_json::from_value(req.params).map_err(bad)?;
                let pos = &p.text_document_position;
                let items = self.docs.get(&pos.text_document.uri).map(|doc| {
                    let offset = LineIndex::new(&doc.text).offset(pos.position);
                    let items = complete::complete(doc.parsed.as_deref(), &doc.text, offset);
                    CompletionResponse::Array(items)
                });
                serde_json::to_value(items)
            }
            other => {
                return Err((
                    ErrorCode::MethodNotFound,
                    format!("deqc lsp does not handle `{other}`"),
                ))
            }
        };
        value.map_err(|e| (ErrorCode::InternalError, e.to_string()))
    }

    /// Run `f` on the analysis of the document at a position, with the
    /// position as a byte offset.
    fn at<T>(
        &self,
        pos: &TextDocumentPositionParams,
        f: impl FnOnce(&Analysis, usize, &Uri) -> Option<T>,
    ) -> Option<T> {
        let doc = self.docs.get(&pos.text_document.uri)?;
        let a = doc.analysis.as_deref()?;
        let offset = LineIndex::new(a.root_text()).offset(pos.position);
        f(a, offset, &pos.text_document.uri)
    }
}

fn publish(uri: Uri, diagnostics: Vec<lsp_types::Diagnostic>) -> Notification {
    Notification::new(
        PublishDiagnostics::METHOD.to_string(),
        PublishDiagnosticsParams {
            uri,
            diagnostics,
            version: None,
        },
    )
}

/// Apply one edit (a whole new text, or a range replaced) to `text`.
fn apply_change(text: &mut String, change: TextDocumentContentChangeEvent) {
    match change.range {
        None => *text = change.text,
        Some(range) => {
            let index = LineIndex::new(text);
            let start = index.offset(range.start);
            let end = index.offset(range.end).max(start);
            text.replace_range(start..end, &change.text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsp_types::{Position, Range};

    #[test]
    fn ranged_edits_apply_and_bad_ranges_clamp() {
        let mut text = String::from("let a = 1;\nlet b = 2;\n");
        let edit = |r: Option<Range>, t: &str| TextDocumentContentChangeEvent {
            range: r,
            range_length: None,
            text: t.into(),
        };
        let range = |from: (u32, u32), to: (u32, u32)| {
            Some(Range::new(
                Position::new(from.0, from.1),
                Position::new(to.0, to.1),
            ))
        };
        apply_change(&mut text, edit(range((1, 4), (1, 5)), "bee"));
        assert_eq!(text, "let a = 1;\nlet bee = 2;\n");
        // Reversed and out-of-range positions do not panic.
        apply_change(&mut text, edit(range((9, 0), (0, 0)), "!"));
        assert_eq!(text, "let a = 1;\nlet bee = 2;\n!");
        apply_change(&mut text, edit(None, "new"));
        assert_eq!(text, "new");
    }
}
