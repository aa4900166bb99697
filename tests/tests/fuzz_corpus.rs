//! Replays the parser fuzz corpus (`fuzz/corpus/parse/`: every catalogue
//! kernel, malformed and adversarial text, and every input the fuzzer ever
//! crashed on) through the checker: no panic, every diagnostic's span inside
//! the input, each file under a second. The same contract as the `parse`
//! fuzz target (`fuzz/fuzz_targets/parse.rs`), run on every CI build.

use passfold_dsl::LowerOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The debug-build limit per file; the fuzz target's hang limit is the same.
const LIMIT: Duration = Duration::from_secs(1);

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Checks one input; returns a failure description.
fn check_one(src: &str) -> Option<String> {
    let res = std::panic::catch_unwind(|| passfold_dsl::check(src, &LowerOptions::default()));
    let Ok(res) = res else {
        return Some("the checker panicked".into());
    };
    let Err(diags) = res else { return None };
    if diags.0.is_empty() {
        return Some("an error without a diagnostic".into());
    }
    for d in &diags.0 {
        for (span, _) in &d.labels {
            if span.start > span.end || span.end as usize > src.len() {
                return Some(format!(
                    "span {span:?} outside the input ({} bytes): {}",
                    src.len(),
                    d.message
                ));
            }
        }
    }
    let _ = diags.render("corpus.pf", src);
    None
}

#[test]
fn parse_corpus_replays() {
    let files = corpus();
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).expect("readable");
        // libFuzzer's `&str` targets skip invalid UTF-8; so does the replay.
        let Ok(src) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let t0 = Instant::now();
        let problem = check_one(src);
        let took = t0.elapsed();
        let name = path.file_name().unwrap().to_string_lossy();
        if let Some(p) = problem {
            failures.push(format!("{name}: {p}"));
        } else if took > LIMIT {
            failures.push(format!("{name}: took {took:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn catalogue_kernels_are_in_the_corpus() {
    let names: Vec<String> = corpus()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for entry in passfold_kernels::CATALOGUE {
        let want = format!("cat_{}", entry.file);
        assert!(names.contains(&want), "fuzz/corpus/parse/{want} is missing");
    }
}

/// Inputs that crashed the checker and are not fixed yet go in
/// `fuzz/crashes/parse/` (none at present: the one found, a chain of 5000
/// `+` that overflowed the stack, counts towards `MAX_DEPTH` now and sits
/// in the corpus as `crash-long-chain-long_add_chain_5000.pf`). Each runs
/// on a thread with a 2 MiB stack, a spawned thread's default; move a file
/// into `fuzz/corpus/parse/` once it is fixed.
#[test]
fn known_crashes_are_fixed() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/crashes/parse");
    // Fixed crashes move into the corpus; the folder may be empty or absent.
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("entry").path();
        let src = std::fs::read_to_string(&path).expect("readable");
        // A spawned thread's default stack (and a test thread's): 2 MiB.
        let res = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || check_one(&src))
            .expect("thread")
            .join()
            .expect("no panic");
        assert!(res.is_none(), "{}: {res:?}", path.display());
    }
}
