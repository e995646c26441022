//! Positions and file names as the protocol writes them.
//!
//! Owns the conversion between byte offsets (what spans hold) and LSP
//! positions (line, UTF-16 code unit), and between `file://` URIs and paths.
//! Guarantees: every conversion is total: out-of-range positions clamp to
//! the nearest valid place, and an offset inside a character moves to its
//! start, so no client input can make it panic.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use lsp_types::{Position, Range, Uri};

/// Where each line of a text starts, for offset <-> position conversion.
pub struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    pub fn new(text: &'t str) -> LineIndex<'t> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// The position of byte `offset` (clamped to the text).
    pub fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|s| *s <= offset) - 1;
        let start = self.starts[line];
        let character: usize = self.text[start..offset].chars().map(char::len_utf16).sum();
        Position::new(line as u32, character as u32)
    }

    pub fn range(&self, start: usize, end: usize) -> Range {
        Range::new(self.position(start), self.position(end.max(start)))
    }

    /// The byte offset of `pos`; past the end of a line is the line's end,
    /// past the last line is the end of the text.
    pub fn offset(&self, pos: Position) -> usize {
        let Some(start) = self.starts.get(pos.line as usize).copied() else {
            return self.text.len();
        };
        let line_end = self
            .starts
            .get(pos.line as usize + 1)
            .map_or(self.text.len(), |next| next - 1);
        let mut units = 0usize;
        for (i, c) in self.text[start..line_end].char_indices() {
            if units >= pos.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        line_end
    }
}

/// The path a `file://` URI names (`None` for other schemes).
pub fn uri_to_path(uri: &Uri) -> Option<PathBuf> {
    let rest = uri.as_str().strip_prefix("file://")?;
    // `file://host/path` is not a local file; `file:///path` has an empty host.
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return None;
    }
    Some(PathBuf::from(percent_decode(path)))
}

/// The `file://` URI of an absolute path.
pub fn path_to_uri(path: &Path) -> Option<Uri> {
    let mut text = String::from("file://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            text.push(b as char);
        } else {
            text.push_str(&format!("%{b:02X}"));
        }
    }
    Uri::from_str(&text).ok()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_positions_round_trip_with_utf16_columns() {
        let text = "ab\n€x\n\nlast";
        let idx = LineIndex::new(text);
        for offset in [0, 1, 2, 3, 6, 7, 8, 9, text.len()] {
            assert_eq!(idx.offset(idx.position(offset)), offset, "offset {offset}");
        }
        // `€` is 3 bytes but one UTF-16 unit.
        assert_eq!(idx.position(6), Position::new(1, 1));
        // Inside `€`: moves to its start.
        assert_eq!(idx.position(4), Position::new(1, 0));
        // Clamping.
        assert_eq!(idx.offset(Position::new(0, 99)), 2);
        assert_eq!(idx.offset(Position::new(99, 0)), text.len());
        assert_eq!(idx.position(999), idx.position(text.len()));
    }

    #[test]
    fn file_uris_round_trip() {
        let p = Path::new("/tmp/a b/model€.deq");
        let uri = path_to_uri(p).expect("valid uri");
        assert_eq!(uri_to_path(&uri).as_deref(), Some(p));
        let untitled = Uri::from_str("untitled:Untitled-1").expect("valid uri");
        assert_eq!(uri_to_path(&untitled), None);
    }
}
