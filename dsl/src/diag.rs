//! Spans and diagnostics shared by every stage of the front end.
//!
//! Every user-facing error is a [`Diagnostic`] with at least one labelled
//! [`Span`] (byte offsets into the kernel's source text); [`Diagnostics::render`]
//! turns them into codespan-reporting text with the source line and carets.

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Config};
use std::fmt;

/// A byte range `start..end` in the kernel source.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// A span from byte offsets (saturating at `u32::MAX`).
    pub fn new(start: usize, end: usize) -> Self {
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Span {
            start: clamp(start),
            end: clamp(end.max(start)),
        }
    }

    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// 1-based `(line, column)` of the start of the span in `src`, the
    /// column counted in characters.
    pub fn line_col(self, src: &str) -> (usize, usize) {
        let start = (self.start as usize).min(src.len());
        let start = (0..=start)
            .rev()
            .find(|&i| src.is_char_boundary(i))
            .unwrap_or(0);
        let before = &src[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = src[line_start..start].chars().count() + 1;
        (line, col)
    }
}

/// One error, with the places in the source it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The headline, a sentence without a trailing period.
    pub message: String,
    /// Labelled places; the first is the primary one.
    pub labels: Vec<(Span, String)>,
    /// Extra lines of help.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error at `span` with `message` and a label text.
    pub fn new(message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            labels: vec![(span, label.into())],
            notes: Vec::new(),
        }
    }

    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into()));
        self
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    /// The primary span.
    pub fn span(&self) -> Span {
        self.labels.first().map(|l| l.0).unwrap_or_default()
    }
}

/// The errors of one compilation, in source order of discovery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {}", d.message)?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

impl Diagnostics {
    /// Renders every diagnostic with source context, without colour.
    pub fn render(&self, file_name: &str, src: &str) -> String {
        let file = SimpleFile::new(file_name, src);
        let config = Config::default();
        let mut out = String::new();
        for d in &self.0 {
            let labels = d
                .labels
                .iter()
                .enumerate()
                .map(|(i, (span, text))| {
                    let range = clamp_range(*span, src);
                    let label = if i == 0 {
                        Label::primary((), range)
                    } else {
                        Label::secondary((), range)
                    };
                    label.with_message(text.clone())
                })
                .collect();
            let cs = CsDiagnostic::error()
                .with_message(&d.message)
                .with_labels(labels)
                .with_notes(d.notes.clone());
            let mut buf = term::termcolor::NoColor::new(Vec::new());
            if term::emit(&mut buf, &config, &file, &cs).is_err() {
                out.push_str(&format!("error: {}\n", d.message));
                continue;
            }
            out.push_str(&String::from_utf8_lossy(&buf.into_inner()));
        }
        out
    }
}

/// Clamps a span to the source and to character boundaries, so rendering
/// never panics on a span from another text.
fn clamp_range(span: Span, src: &str) -> std::ops::Range<usize> {
    let fix = |v: usize| {
        let v = v.min(src.len());
        (0..=v)
            .rev()
            .find(|&i| src.is_char_boundary(i))
            .unwrap_or(0)
    };
    let start = fix(span.start as usize);
    let end = fix(span.end as usize).max(start);
    start..end
}
