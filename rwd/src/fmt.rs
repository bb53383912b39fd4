//! `rwd fmt [--check] FILE...`: rewrite files in canonical layout, or with
//! `--check` list those that would change and exit 1.

use crate::files;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rwd fmt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not write; list the files that are not formatted and exit 1 if any.
    #[arg(long)]
    check: bool,
    /// The `.rwd` files to format.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Formats every file; files with syntax errors are reported and left alone.
pub fn run(args: Args) -> ExitCode {
    let mut failed = false;
    let mut changed = Vec::new();
    for path in &args.files {
        let source = match files::read(path) {
            Ok(s) => s,
            Err(message) => {
                eprintln!("error: {message}");
                failed = true;
                continue;
            }
        };
        let formatted = match rewards_dsl::fmt(&source) {
            Ok(f) => f,
            Err(diags) => {
                files::report(path, &source, &diags);
                failed = true;
                continue;
            }
        };
        if formatted == source {
            continue;
        }
        changed.push(path.display().to_string());
        if !args.check {
            if let Err(e) = std::fs::write(path, formatted) {
                eprintln!("error: {}: cannot write: {e}", path.display());
                failed = true;
            }
        }
    }
    if args.check {
        for file in &changed {
            println!("would reformat {file}");
        }
        if !changed.is_empty() {
            failed = true;
        }
    } else {
        for file in &changed {
            println!("formatted {file}");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
