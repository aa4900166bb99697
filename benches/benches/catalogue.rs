//! Catalogue kernels, passfold's fused and unfused plans against plain Rust.
//!
//! One criterion group per kernel (`softmax`, `logsumexp`, `layer_norm`,
//! `rms_norm`), each at 1 × 4096 and 256 × 4096 `f32` uniform in [-100, 100]
//! (the kernels with `exp` also in [20, 100], `…_no_underflow`), plus
//! `softmax_long_row` (one row of 2^24 values, few samples). Throughput is in
//! elements. Every passfold plan is checked against an `f64` evaluation of
//! the same formulas before it is timed. See `benches/README.md`.

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use passfold_benches::{Inputs, Kind, Problem};
use std::hint::black_box;
use std::time::Duration;

/// The seed of every input.
const SEED: u64 = 0x5EED;

/// The row length of the regular sizes: 16 KiB of `f32`, in L1.
const ROW: usize = 4096;

/// The long row's length: 64 MiB of `f32`.
const LONG: usize = 1 << 24;

fn catalogue(c: &mut Criterion) {
    for kind in Kind::ALL {
        let mut group = c.benchmark_group(kind.name());
        for rows in [1, 256] {
            compare(&mut group, kind, rows, ROW, Inputs::Wide);
        }
        // Without underflowing `exp`s the baseline's `expf` takes no slow
        // branch: the kernels with `exp` are timed on both ranges.
        if matches!(kind, Kind::Softmax | Kind::Logsumexp) {
            for rows in [1, 256] {
                compare(&mut group, kind, rows, ROW, Inputs::NoUnderflow);
            }
        }
        group.finish();
    }
}

fn softmax_long_row(c: &mut Criterion) {
    let mut group = c.benchmark_group("softmax_long_row");
    // One call takes tens of milliseconds: one call per sample.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    compare(&mut group, Kind::Softmax, 1, LONG, Inputs::Wide);
    group.finish();
}

/// Benches passfold's fused plan, its unfused plan and the plain Rust
/// baseline on one input, checking each result against the `f64` reference
/// first (and printing the errors, and how far passfold is from plain Rust).
fn compare(
    group: &mut BenchmarkGroup<'_, WallTime>,
    kind: Kind,
    rows: usize,
    n: usize,
    inputs: Inputs,
) {
    let problem = Problem::new(kind, rows, n, inputs, SEED);
    let size = match inputs {
        Inputs::Wide => format!("{rows}x{n}"),
        Inputs::NoUnderflow => format!("{rows}x{n}_no_underflow"),
    };
    let label = format!("{}/{size}", kind.name());
    let mut reference = problem.output();
    problem.run_reference(&mut reference);
    let mut plain = problem.output();
    problem.run_plain(&mut plain);
    let err = problem.check("plain_rust", &plain, &reference);
    eprintln!("{label}: relative error of plain_rust {err:.1e}");
    let mut y = problem.output();
    group.throughput(Throughput::Elements(problem.elements()));
    for (plan, unfused) in [("passfold_fused", false), ("passfold_unfused", true)] {
        let kernel = kind.compile(unfused);
        problem.run_passfold(&kernel, &mut y);
        let err = problem.check(plan, &y, &reference);
        let apart = problem.error(&y, &plain);
        eprintln!("{label}: relative error of {plan} {err:.1e} ({apart:.1e} from plain_rust)");
        group.bench_function(BenchmarkId::new(plan, &size), |b| {
            b.iter(|| problem.run_passfold(&kernel, black_box(&mut y)))
        });
    }
    group.bench_function(BenchmarkId::new("plain_rust", &size), |b| {
        b.iter(|| black_box(&problem).run_plain(black_box(&mut y)))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(15)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(2500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = catalogue, softmax_long_row
}
criterion_main!(benches);
