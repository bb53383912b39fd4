//! Reading source files and printing diagnostics, shared by subcommands.

use rewards_dsl::diag::{self, Diagnostic, Style};
use std::io::IsTerminal;
use std::path::Path;

/// Reads a source file; the error is a one-line message naming the file.
pub fn read(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    String::from_utf8(bytes).map_err(|_| format!("{}: not valid UTF-8", path.display()))
}

/// Colour when stderr is a terminal and `NO_COLOR` is unset.
pub fn style() -> Style {
    if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
        Style::Color
    } else {
        Style::Plain
    }
}

/// Prints diagnostics for one file to stderr.
pub fn report(path: &Path, source: &str, diags: &[Diagnostic]) {
    let name = path.display().to_string();
    let style = style();
    for d in diags {
        eprintln!("{}", diag::render(d, &name, source, style));
    }
}
