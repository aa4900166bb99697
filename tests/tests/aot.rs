//! The ahead-of-time back end (`passfold-aot`) on the whole catalogue: the
//! build script (`tests/build.rs`) emits every catalogue kernel (fused and
//! unfused plans in `f32`, the fused plan in `f64`) into `OUT_DIR`, this
//! module includes and runs them, and `check_engine` compares every
//! output with the f64 interpreter within the tolerance the JIT's vector
//! code meets (`passfold::kernelgen::check`). Inputs: the adversarial
//! patterns of `adversarial.rs` (all `-inf` rows, `+inf`, NaN first /
//! middle / last, denormals, values near ±3.4e38) at lengths around the
//! chunk widths (16 lanes of `f32`, 8 of `f64`), uniform rows of every
//! length up to 48 and a few longer ones, at every instruction level the CPU
//! has (AVX-512, AVX2+FMA, baseline).

use crate::adversarial::{PATTERNS, Pattern, args_for, check, sizes};
use crate::common::params_for;
use passfold::kernelgen::check::{EngineResult, check_engine};
use passfold_dsl::ScalarType;

mod generated {
    /// `call_f64(level, extents, args, params)` of one generated module.
    pub type AotEntry = fn(u8, &[i64], &mut [Vec<f64>], &[f64]) -> Result<(), String>;
    /// `call_f64(3, threads, extents, args, params)`: `call_threads`.
    pub type AotThreads = fn(usize, &[i64], &mut [Vec<f64>], &[f64]) -> Result<(), String>;
    include!(concat!(env!("OUT_DIR"), "/aot_catalogue.rs"));
}

use generated::{AOT_FAILURES, aot_entry, aot_level, aot_threads};

#[test]
fn every_catalogue_kernel_is_emitted() {
    assert!(AOT_FAILURES.is_empty(), "{AOT_FAILURES:#?}");
    for entry in passfold_kernels::CATALOGUE {
        for variant in ["fused_f32", "unfused_f32", "fused_f64"] {
            assert!(
                aot_entry(entry.name, variant).is_some(),
                "{} {variant}",
                entry.name
            );
        }
    }
}

/// The AOT results of one catalogue kernel at `level`.
fn run_aot(
    name: &str,
    level: u8,
    extents: &[i64],
    args: &[Vec<f64>],
    params: &[f64],
    float: Option<ScalarType>,
    unfused: bool,
) -> EngineResult {
    let variant = match (float.is_some(), unfused) {
        (false, false) => "fused_f32",
        (false, true) => "unfused_f32",
        (true, false) => "fused_f64",
        (true, true) => return Ok(None),
    };
    let Some(entry) = aot_entry(name, variant) else {
        return Ok(None);
    };
    let mut got = args.to_vec();
    entry(level, extents, &mut got, params)?;
    Ok(Some(got))
}

/// `(pattern, n)` runs: every pattern around the chunk widths, uniform
/// rows of every length to 48 and some long ones.
fn runs() -> Vec<(Pattern, i64)> {
    let mut out = Vec::new();
    for pattern in PATTERNS {
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 33] {
            out.push((pattern, n));
        }
    }
    for n in (0..=48).chain([65, 100]) {
        out.push((Pattern::Uniform, n));
    }
    out
}

#[test]
fn catalogue_agrees_with_the_interpreter() {
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut runs_done = 0;
    // Every level this CPU can run: 3 AVX-512, 2 AVX2+FMA, 0 baseline
    // (`call_at` lowers a level the CPU lacks to one it has).
    for level in [3u8, 2, 0] {
        for entry in passfold_kernels::CATALOGUE {
            let kernel = check(entry.source);
            let params = params_for(&kernel);
            for (k, (pattern, n)) in runs().into_iter().enumerate() {
                // Every run at the best level; the lower levels on uniform
                // rows around the chunk widths.
                if level != 3 && (pattern != Pattern::Uniform || ![0, 1, 9, 17, 33].contains(&n)) {
                    continue;
                }
                let extents = sizes(&kernel, n);
                let args = args_for(&kernel, &extents, pattern, k as u64);
                let also_f64 = pattern != Pattern::Uniform || n % 8 == 1;
                let mut run = |float, unfused| {
                    run_aot(entry.name, level, &extents, &args, &params, float, unfused)
                };
                match check_engine(
                    entry.source,
                    &kernel,
                    &extents,
                    &args,
                    &params,
                    also_f64,
                    &mut run,
                ) {
                    Ok(o) => {
                        compared += o.compared;
                        runs_done += o.jit_runs;
                    }
                    Err(e) => failures.push(format!(
                        "{} (level {level}, {pattern:?}, n = {n}, extents {extents:?}): {e}",
                        entry.name
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 100_000, "only {compared} values compared");
    eprintln!("aot: {runs_done} calls, {compared} values compared");
}

/// The dispatch picks the widest level the CPU reports: AVX-512 on this
/// project's machines (`/proc/cpuinfo` lists avx512f/vl/bw/dq, avx2, fma).
#[test]
fn dispatch_reports_the_level_it_chose() {
    let level = aot_level("softmax", "fused_f32").expect("softmax is emitted");
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let expected = if cfg!(target_arch = "x86_64")
        && ["avx512f", "avx512vl", "avx512bw", "avx512dq", "avx2", "fma"]
            .iter()
            .all(|f| has(f))
    {
        "avx512"
    } else if cfg!(target_arch = "x86_64") && has("avx2") && has("fma") {
        "avx2+fma"
    } else if cfg!(target_arch = "aarch64") {
        "neon"
    } else {
        "baseline"
    };
    assert_eq!(level, expected, "flags: {flags}");
}

/// `passfold emit-rust` on the catalogue file of `name`.
fn emit_rust(name: &str) -> String {
    let args = passfold::cli::KernelArgs {
        file: format!("{}/../kernels/{name}.pf", env!("CARGO_MANIFEST_DIR")).into(),
        consts: Vec::new(),
        f64: false,
        unfused: false,
        exp_shift: "auto".into(),
        reload: false,
        scalar: false,
        recompute: false,
        block_store: false,
        fft: "auto".into(),
    };
    passfold::cli::commands::emit_rust_text(&args)
        .expect("emits")
        .expect("checks")
}

/// The generated Rust users vendor: softmax (a fused max, an `exp` sum
/// that stores its terms, a division), logsumexp (one value per row) and
/// cross-entropy (a gather with its bounds check and error status).
#[test]
fn emit_rust_snapshots() {
    insta::assert_snapshot!("aot_softmax", emit_rust("softmax"));
    insta::assert_snapshot!("aot_logsumexp", emit_rust("logsumexp"));
    insta::assert_snapshot!("aot_cross_entropy", emit_rust("cross_entropy"));
}

/// The command runs and exits successfully.
#[test]
fn emit_rust_command_runs() {
    let path = format!("{}/../kernels/logsumexp.pf", env!("CARGO_MANIFEST_DIR"));
    assert!(passfold::cli::run_args(["passfold", "emit-rust", &path]).expect("parses"));
}

/// Extents whose element or byte counts overflow, or whose temporaries
/// are too large, are refused before any code runs (no wrap, no abort).
#[test]
fn huge_extents_are_refused() {
    for entry in passfold_kernels::CATALOGUE {
        let kernel = check(entry.source);
        let params = params_for(&kernel);
        for (first, rest) in [
            (1i64 << 32, 1i64 << 32),
            (1 << 31, 1 << 31),
            (i64::MAX, 2),
            (1 << 61, 0),
        ] {
            let extents: Vec<i64> = (0..kernel.extents.len())
                .map(|e| if e == 0 { first } else { rest })
                .collect();
            let too_large = kernel
                .tensors
                .iter()
                .any(|t| passfold_dsl::Layout::compute(t, &extents).is_none());
            if !too_large {
                continue;
            }
            let mut args = vec![Vec::new(); kernel.arguments().count()];
            let entry_fn = aot_entry(entry.name, "fused_f32").expect("emitted");
            let res = entry_fn(3, &extents, &mut args, &params);
            assert!(res.is_err(), "{} {extents:?} was not refused", entry.name);
        }
    }
}

/// The kernels of `tests/regressions/` (random kernels that once exposed a
/// planner or JIT bug: gathers hoisted out of empty loops, reductions that
/// capture an index, infinite shifts) through the AOT back end, on their
/// recorded case and on extra lengths around the chunk widths with special
/// values. Those marked `known-bug` are planner divergences the AOT back end
/// inherits (it runs the same plan), skipped as in `regressions_replay`; so
/// is an extra case where the JIT's own differential check fails too (the
/// plan itself differs from the formula there; logged. `exp_shift_of_inf`
/// at `b = 2, i = 17` with special values was one, until the two-pass
/// finish kept infinite mantissas).
#[test]
fn regressions_agree_with_the_interpreter() {
    use passfold::kernelgen::Fill;
    use passfold::kernelgen::check::random_args;
    let mut failures = Vec::new();
    let mut compared = 0;
    for r in crate::random_kernels::regressions()
        .into_iter()
        .filter(|r| r.known_bug.is_none())
    {
        let name = format!("reg_{}", r.name.trim_end_matches(".pf"));
        let k32 = check(&r.src);
        let params: Vec<f64> = (0..k32.params.len())
            .map(|p| [0.75, -1.5, 2.0][p % 3])
            .collect();
        let mut cases = vec![(r.extents, r.seed, r.fill, r.also_f64)];
        for (n, seed) in [(0, 1), (1, 2), (17, 3), (33, 4)] {
            cases.push(([2, n, 3], seed, Fill::Specials, true));
            cases.push(([3, n, 2], seed, Fill::Uniform(30.0), false));
        }
        for (by_name, seed, fill, also_f64) in cases {
            let extents: Vec<i64> = k32
                .extents
                .iter()
                .map(|e| match e.name.as_str() {
                    "b" => by_name[0],
                    "i" => by_name[1],
                    "j" => by_name[2],
                    _ => 3,
                })
                .collect();
            let args = random_args(&k32, &extents, fill, seed);
            let mut run =
                |float, unfused| run_aot(&name, 3, &extents, &args, &params, float, unfused);
            match check_engine(&r.src, &k32, &extents, &args, &params, also_f64, &mut run) {
                Ok(o) => compared += o.compared,
                Err(e)
                    if passfold::kernelgen::check_kernel_text(
                        &r.src, by_name, seed, fill, also_f64,
                    )
                    .is_err() =>
                {
                    eprintln!(
                        "{}: the plan differs from the formula here (the JIT fails too): {e}",
                        r.name
                    );
                }
                Err(e) => failures.push(format!(
                    "{} (extents {extents:?}, seed {seed}, {fill:?}): {e}",
                    r.name
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 1_000, "only {compared} values compared");
}

/// `call_threads` splits rows into contiguous chunks, each a smaller call
/// on a thread of its own: on every catalogue kernel whose rows split
/// (`ROWS_SPLIT`; at least softmax, logsumexp, layer_norm, cross_entropy
/// and attention), 2 and 3 threads give the same bits as one, at 0 to 7
/// rows (fewer rows than threads, uneven chunks) of several lengths, with
/// special values; kernels whose rows do not split run as `call`.
#[test]
fn call_threads_splits_rows_and_agrees_bit_for_bit() {
    let mut split = Vec::new();
    for entry in passfold_kernels::CATALOGUE {
        let (rows_split, run) =
            aot_threads(entry.name, "fused_f32").expect("every catalogue kernel is emitted");
        if rows_split {
            split.push(entry.name);
        }
        let kernel = check(entry.source);
        let params = params_for(&kernel);
        let row = passfold_dsl::plan(&kernel, Default::default()).row_extent();
        for (k, (pattern, n)) in [
            (Pattern::Uniform, 1),
            (Pattern::Uniform, 17),
            (Pattern::NanMiddle, 33),
            (Pattern::Uniform, 100),
        ]
        .into_iter()
        .enumerate()
        {
            for rows in 0..=7i64 {
                let mut extents = sizes(&kernel, n);
                if let Some(r) = row {
                    extents[r.0 as usize] = rows;
                }
                let args = args_for(&kernel, &extents, pattern, 31 * k as u64 + rows as u64);
                let mut one = args.clone();
                let first = run(1, &extents, &mut one, &params);
                for threads in [2, 3] {
                    let mut got = args.clone();
                    let res = run(threads, &extents, &mut got, &params);
                    assert_eq!(
                        res.is_ok(),
                        first.is_ok(),
                        "{} rows {rows} n {n}: {threads} threads {res:?}, one {first:?}",
                        entry.name
                    );
                    for (a, (g, o)) in got.iter().zip(&one).enumerate() {
                        let same = g.len() == o.len()
                            && g.iter().zip(o).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "{} rows {rows} n {n} {pattern:?}: argument {a} differs on {threads} threads",
                            entry.name
                        );
                    }
                }
            }
        }
    }
    for name in [
        "softmax",
        "logsumexp",
        "layer_norm",
        "cross_entropy",
        "attention",
    ] {
        assert!(
            split.contains(&name),
            "{name} does not split rows: {split:?}"
        );
    }
    eprintln!("aot call_threads splits rows of {split:?}");
}
