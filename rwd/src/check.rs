//! `rwd check FILE...`: parse and type-check; exit 1 if any file has errors.

use crate::files;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `rwd check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The `.rwd` files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Checks every file and prints all diagnostics, then a summary.
pub fn run(args: Args) -> ExitCode {
    let mut errors = 0usize;
    let mut warnings = 0usize;
    let mut failed_files = 0usize;
    for path in &args.files {
        let source = match files::read(path) {
            Ok(s) => s,
            Err(message) => {
                eprintln!("error: {message}");
                failed_files += 1;
                continue;
            }
        };
        let diags = match rewards_dsl::check_source(&source) {
            Ok(checked) => checked.warnings,
            Err(diags) => diags,
        };
        files::report(path, &source, &diags);
        let e = diags.iter().filter(|d| d.is_error()).count();
        errors += e;
        warnings += diags.len() - e;
        if e > 0 {
            failed_files += 1;
        }
    }
    let n = args.files.len();
    let plural = |k: usize, w: &str| format!("{k} {w}{}", if k == 1 { "" } else { "s" });
    if failed_files > 0 {
        eprintln!(
            "failed: {} in {} of {}",
            plural(errors, "error"),
            failed_files,
            plural(n, "file")
        );
        ExitCode::FAILURE
    } else {
        println!(
            "ok: {} checked, {}",
            plural(n, "file"),
            plural(warnings, "warning")
        );
        ExitCode::SUCCESS
    }
}
