//! `passfold selftest`: runs the random kernel generator (`passfold::gen`)
//! for a number of kernels or seconds, checks each kernel's fused and
//! unfused plans (JIT and plan interpreter) against the reference
//! interpreter, and reports what it tried and every mismatch, the first one
//! shrunk to a minimal kernel.

use crate::kernelgen::{self, Case, Outcome};
use anyhow::Result;
use std::time::{Duration, Instant};

/// The most mismatches listed (all are counted).
const LISTED: usize = 10;

/// Runs up to `kernels` generated kernels (0: no limit) for at most
/// `seconds` (0: no limit), starting at `seed`. Returns whether every
/// kernel agreed.
pub fn selftest(kernels: usize, seconds: f64, seed: u64) -> Result<bool> {
    let t0 = Instant::now();
    let deadline = (seconds > 0.0).then(|| t0 + Duration::from_secs_f64(seconds));
    let mut total = Outcome::default();
    let mut tried = 0usize;
    let mut mismatches: Vec<(u64, Case, String)> = Vec::new();
    let quiet = QuietPanics::install();
    let mut n = 0u64;
    loop {
        if (kernels > 0 && tried >= kernels) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if kernels == 0 && deadline.is_none() && tried >= 1000 {
            break;
        }
        let case_seed = seed.wrapping_add(n);
        n += 1;
        let case = kernelgen::generate_case(case_seed);
        tried += 1;
        match kernelgen::check_case(&case) {
            Ok(o) => total += o,
            Err(e) => mismatches.push((case_seed, case, e)),
        }
    }
    println!(
        "selftest: {tried} kernels from seed {seed} in {:.1} s: {} inputs run through the JIT, \
         {} output values compared, {} left to the exact check (unstable in f32), \
         {} documented -inf-row limits; {} mismatch(es)",
        t0.elapsed().as_secs_f64(),
        total.jit_runs,
        total.compared,
        total.unstable,
        total.documented,
        mismatches.len()
    );
    for (case_seed, _, e) in mismatches.iter().take(LISTED) {
        let first = e.lines().next().unwrap_or_default();
        println!("  seed {case_seed}: {first}");
    }
    // Shrink the first mismatch of each kind (engine, plan and what differs).
    let mut kinds: Vec<String> = Vec::new();
    for (case_seed, case, e) in &mismatches {
        let kind = kind_of(e);
        if kinds.contains(&kind) || kinds.len() >= LISTED {
            continue;
        }
        kinds.push(kind.clone());
        let mut fails = |c: &Case| kernelgen::check_case(c).is_err_and(|e| kind_of(&e) == kind);
        let minimal = kernelgen::minimize(case, &mut fails, 2000);
        let why = kernelgen::check_case(&minimal).err().unwrap_or_default();
        println!("\nfirst mismatch of kind `{kind}` (seed {case_seed}), shrunk:\n{why}");
    }
    drop(quiet);
    Ok(mismatches.is_empty())
}

/// A mismatch's kind: the engine and plan, and what differs (`NaN
/// expected`, `off by`, a panic), without the numbers.
fn kind_of(e: &str) -> String {
    let first = e.lines().next().unwrap_or_default();
    let engine = first.split('`').next().unwrap_or_default().trim();
    let why = first
        .rsplit('(')
        .next()
        .unwrap_or_default()
        .split([',', ')'])
        .next()
        .unwrap_or_default();
    let why: String = why.chars().filter(|c| !c.is_ascii_digit()).collect();
    format!("{engine} {}", why.trim())
}

/// Silences the panic hook while compiler panics are caught and reported
/// as mismatches; restores the default hook on drop.
struct QuietPanics;

impl QuietPanics {
    fn install() -> Self {
        std::panic::set_hook(Box::new(|_| {}));
        QuietPanics
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let _ = std::panic::take_hook();
    }
}
