//! `weft validate -f PATH...`

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use weft_api::{Decoded, decode_file, decode_str};

pub fn run(paths: &[PathBuf], verbose: bool) -> ExitCode {
    let mut files = Vec::new();
    let mut total = Decoded::default();
    let mut unreadable = 0;
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            if let Err(err) = std::io::stdin().read_to_string(&mut text) {
                eprintln!("weft validate: cannot read stdin: {err}");
                return ExitCode::FAILURE;
            }
            files.push(path.clone());
            total.absorb(decode_str(&text, "<stdin>"));
        } else if path.is_dir() {
            let before = files.len();
            if let Err(err) = collect_files(path, &mut files) {
                println!("{}: cannot list directory: {err}", path.display());
                unreadable += 1;
            }
            for file in &files[before..] {
                total.absorb(decode_file(file));
            }
        } else {
            files.push(path.clone());
            total.absorb(decode_file(path));
        }
    }
    for problem in &total.problems {
        println!("{problem}");
    }
    if verbose {
        for notice in &total.notices {
            eprintln!("{notice}");
        }
    }
    let skipped = match total.notices.len() {
        0 => String::new(),
        n => format!(", {n} skipped (kinds Weft does not use; -v lists them)"),
    };
    if total.problems.is_empty() && unreadable == 0 {
        println!(
            "{} valid resources in {} files{skipped}",
            total.resources.len(),
            files.len()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "{} problems; {} valid resources in {} files{skipped}",
            total.problems.len() + unreadable,
            total.resources.len(),
            files.len()
        );
        ExitCode::FAILURE
    }
}

/// YAML and JSON files under `dir`, sorted, recursively.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut paths = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<Vec<PathBuf>>>()?;
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        {
            out.push(path);
        }
    }
    Ok(())
}
