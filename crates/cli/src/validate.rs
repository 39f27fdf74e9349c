//! `weft validate -f PATH...`, and the file reading `apply` and `delete`
//! share with it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use weft_api::{Decoded, config_files, decode_file, decode_str};

/// What `-f PATH...` named: the files read, what they decode to, and the
/// directories that could not be listed.
pub(crate) struct Inputs {
    pub files: Vec<PathBuf>,
    pub decoded: Decoded,
    pub unreadable: Vec<String>,
}

pub fn run(paths: &[PathBuf], verbose: bool) -> ExitCode {
    let inputs = match decode_paths(paths) {
        Ok(inputs) => inputs,
        Err(err) => {
            eprintln!("weft validate: {err}");
            return ExitCode::FAILURE;
        }
    };
    let Inputs {
        files,
        decoded: total,
        unreadable,
    } = inputs;
    let mut unreadable = unreadable;
    // A directory's MeshConfig (DIR/meshconfig.yaml), checked as weftd
    // checks it: its errors are problems, its warnings warnings.
    for message in crate::meshconfig::offline_messages(paths) {
        let line = format!("{}: MeshConfig {}", message.origin, message.text);
        if message.level == weft_api::analyze::Level::Error {
            unreadable.push(line);
        } else {
            eprintln!("Warning: {line}");
        }
    }
    for line in &unreadable {
        println!("{line}");
    }
    for problem in &total.problems {
        println!("{problem}");
    }
    // Fields accepted but not honoured: said as kubectl says warnings.
    for warning in &total.warnings {
        eprintln!("Warning: {warning}");
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
    if total.problems.is_empty() && unreadable.is_empty() {
        println!(
            "{} valid resources in {} files{skipped}",
            total.resources.len(),
            files.len()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "{} problems; {} valid resources in {} files{skipped}",
            total.problems.len() + unreadable.len(),
            total.resources.len(),
            files.len()
        );
        ExitCode::FAILURE
    }
}

/// Decodes every file named (directories recursively, `-` for stdin).
/// Fails only when stdin cannot be read; unreadable files are problems.
pub(crate) fn decode_paths(paths: &[PathBuf]) -> Result<Inputs, String> {
    let mut inputs = Inputs {
        files: Vec::new(),
        decoded: Decoded::default(),
        unreadable: Vec::new(),
    };
    for path in paths {
        if path.as_os_str() == "-" {
            inputs.files.push(path.clone());
            inputs.decoded.absorb(decode_str(&read_stdin()?, "<stdin>"));
        } else if path.is_dir() {
            match config_files(path) {
                Ok(files) => {
                    for file in files {
                        inputs.decoded.absorb(decode_file(&file));
                        inputs.files.push(file);
                    }
                }
                Err(err) => inputs
                    .unreadable
                    .push(format!("{}: cannot list directory: {err}", path.display())),
            }
        } else {
            inputs.files.push(path.clone());
            inputs.decoded.absorb(decode_file(path));
        }
    }
    Ok(inputs)
}

/// The text of every file named, with the name to show for it.
pub(crate) fn read_texts(paths: &[PathBuf]) -> Result<Vec<(String, String)>, String> {
    let mut files = Vec::new();
    let mut texts = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            texts.push(("<stdin>".to_string(), read_stdin()?));
        } else if path.is_dir() {
            files = config_files(path)
                .map_err(|err| format!("{}: cannot list directory: {err}", path.display()))?;
        } else {
            files.push(path.clone());
        }
        for file in files.drain(..) {
            let text = std::fs::read_to_string(&file)
                .map_err(|err| format!("{}: cannot read: {err}", file.display()))?;
            texts.push((file.display().to_string(), text));
        }
    }
    Ok(texts)
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|err| format!("cannot read stdin: {err}"))?;
    Ok(text)
}
