//! The ahead-of-time back end against the JIT and hand-written Rust.
//!
//! Softmax and logsumexp (`kernels/*.pf`) at a row in L1 (1 × 1024), rows
//! in L2 (64 × 4096), one row out of cache (1 × 16,777,216) and many rows
//! (256 × 32,000), each run by:
//! - `aot`: `kernel!` with `#[aot]` (the dispatch picks the CPU's level),
//!   the plan its cost model picks: for softmax the blocked store (terms
//!   stored during the running max's sweep, rescaled per block: two
//!   sweeps, the input read once);
//! - `aot_2_threads` (several rows): the same, `call_threads(2, ...)`: the
//!   rows split over two threads;
//! - `aot_online` (softmax): the AOT back end on the planner's other form,
//!   a running max and `exp` recomputed in the output sweep (two sweeps,
//!   12 bytes per element; `benches/build.rs`);
//! - `jit`: the JIT's plan through Cranelift (`passfold::compile`; for
//!   softmax the reload form: max, terms stored and summed, scaling),
//!   called by name (`bind`);
//! - `jit_typed`: the same plan as a `kernel!` item without `#[aot]`, whose
//!   typed `call` takes the short path (`call_extents`);
//! - `hand_native`: the reload form written by hand (16-lane max, then
//!   `exp(x - m)` stored and summed in 16 lanes, then a division), with
//!   the same polynomial `exp`, compiled for AVX-512 (`#[target_feature]`,
//!   what `-C target-cpu=native` gives on this machine);
//! - `hand_default`: the same hand-written algorithm compiled for the
//!   default target (SSE2, no fma);
//! - `plain_rust`: the naive loop with `f32::exp` for the default target.
//!
//! Every result is checked against an `f64` evaluation before timing.
//! `cargo bench -p passfold-benches --bench aot`.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use criterion::{criterion_group, criterion_main};
use passfold_benches::{Inputs, Kind, Problem, hand, plain};
use std::hint::black_box;

passfold::kernel! {
    #[aot]
    kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
        m[b] = max[i](x[b, i]);
        s[b] = sum[i](exp(x[b, i] - m[b]));
        y[b, i] = exp(x[b, i] - m[b]) / s[b];
    }
}

passfold::kernel! {
    #[aot]
    kernel logsumexp(x: f32[b, i]) -> (y: f32[b]) {
        m[b] = max[i](x[b, i]);
        s[b] = sum[i](exp(x[b, i] - m[b]));
        y[b] = m[b] + log(s[b]);
    }
}

/// The same kernels as JIT items (`kernel!` without `#[aot]`): the typed
/// call's short path (`CompiledKernel::call_extents`).
mod jit_items {
    passfold::kernel! {
        kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
            m[b] = max[i](x[b, i]);
            s[b] = sum[i](exp(x[b, i] - m[b]));
            y[b, i] = exp(x[b, i] - m[b]) / s[b];
        }
    }

    passfold::kernel! {
        kernel logsumexp(x: f32[b, i]) -> (y: f32[b]) {
            m[b] = max[i](x[b, i]);
            s[b] = sum[i](exp(x[b, i] - m[b]));
            y[b] = m[b] + log(s[b]);
        }
    }
}

fn run_jit_typed(problem: &Problem, y: &mut [f32]) {
    let (b, i) = (problem.rows, problem.n);
    let res = match problem.kind {
        Kind::Softmax => jit_items::softmax::call(b, i, &problem.x, y),
        _ => jit_items::logsumexp::call(b, i, &problem.x, y),
    };
    if let Err(e) = res {
        panic!("jit_typed {}: {e}", problem.kind.name());
    }
}

include!(concat!(env!("OUT_DIR"), "/softmax_online.rs"));

fn run_aot(problem: &Problem, y: &mut [f32]) {
    let (b, i) = (problem.rows, problem.n);
    let res = match problem.kind {
        Kind::Softmax => softmax::call(b, i, &problem.x, y),
        _ => logsumexp::call(b, i, &problem.x, y),
    };
    if let Err(e) = res {
        panic!("aot {}: {e}", problem.kind.name());
    }
}

/// `call_threads`: the rows split over `threads` threads.
fn run_aot_threads(problem: &Problem, y: &mut [f32], threads: usize) {
    let (b, i) = (problem.rows, problem.n);
    let res = match problem.kind {
        Kind::Softmax => softmax::call_threads(threads, b, i, &problem.x, y),
        _ => logsumexp::call_threads(threads, b, i, &problem.x, y),
    };
    if let Err(e) = res {
        panic!("aot {} on {threads} threads: {e}", problem.kind.name());
    }
}

fn run_hand(problem: &Problem, y: &mut [f32]) {
    match problem.kind {
        Kind::Softmax => hand::softmax(problem.n, &problem.x, y),
        _ => hand::logsumexp(problem.n, &problem.x, y),
    }
}

fn run_hand_default(problem: &Problem, y: &mut [f32]) {
    match problem.kind {
        Kind::Softmax => hand::softmax_default(problem.n, &problem.x, y),
        _ => hand::logsumexp_default(problem.n, &problem.x, y),
    }
}

fn run_plain(problem: &Problem, y: &mut [f32]) {
    match problem.kind {
        Kind::Softmax => problem
            .x
            .chunks_exact(problem.n)
            .zip(y.chunks_exact_mut(problem.n))
            .for_each(|(x, y)| plain::softmax(x, y)),
        _ => problem
            .x
            .chunks_exact(problem.n)
            .zip(y.iter_mut())
            .for_each(|(x, y)| *y = plain::logsumexp(x)),
    }
}

fn compare(group: &mut BenchmarkGroup<'_, WallTime>, kind: Kind, rows: usize, n: usize) {
    let problem = Problem::new(kind, rows, n, Inputs::Wide, 0x5EED);
    let size = format!("{rows}x{n}");
    let mut reference = problem.output();
    problem.run_reference(&mut reference);
    let mut y = problem.output();
    group.throughput(Throughput::Elements(problem.elements()));
    let jit = kind.compile(false);
    problem.run_passfold(&jit, &mut y);
    problem.check("jit", &y, &reference);
    group.bench_function(BenchmarkId::new("jit", &size), |b| {
        b.iter(|| problem.run_passfold(&jit, black_box(&mut y)))
    });
    run_jit_typed(&problem, &mut y);
    problem.check("jit_typed", &y, &reference);
    group.bench_function(BenchmarkId::new("jit_typed", &size), |b| {
        b.iter(|| run_jit_typed(black_box(&problem), black_box(&mut y)))
    });
    run_aot(&problem, &mut y);
    problem.check("aot", &y, &reference);
    eprintln!("{}/{size}: aot level {}", kind.name(), softmax::level());
    group.bench_function(BenchmarkId::new("aot", &size), |b| {
        b.iter(|| run_aot(black_box(&problem), black_box(&mut y)))
    });
    if problem.rows > 1 {
        run_aot_threads(&problem, &mut y, 2);
        problem.check("aot_2_threads", &y, &reference);
        group.bench_function(BenchmarkId::new("aot_2_threads", &size), |b| {
            b.iter(|| run_aot_threads(black_box(&problem), black_box(&mut y), 2))
        });
    }
    if kind == Kind::Softmax {
        let (b, i) = (problem.rows, problem.n);
        softmax_online::call(b, i, &problem.x, &mut y).expect("runs");
        problem.check("aot_online", &y, &reference);
        group.bench_function(BenchmarkId::new("aot_online", &size), |bench| {
            bench.iter(|| softmax_online::call(b, i, black_box(&problem.x), black_box(&mut y)))
        });
    }
    if hand::available() {
        run_hand(&problem, &mut y);
        problem.check("hand_native", &y, &reference);
        group.bench_function(BenchmarkId::new("hand_native", &size), |b| {
            b.iter(|| run_hand(black_box(&problem), black_box(&mut y)))
        });
    }
    run_hand_default(&problem, &mut y);
    problem.check("hand_default", &y, &reference);
    group.bench_function(BenchmarkId::new("hand_default", &size), |b| {
        b.iter(|| run_hand_default(black_box(&problem), black_box(&mut y)))
    });
    run_plain(&problem, &mut y);
    group.bench_function(BenchmarkId::new("plain_rust", &size), |b| {
        b.iter(|| run_plain(black_box(&problem), black_box(&mut y)))
    });
}

fn aot(c: &mut Criterion) {
    for kind in [Kind::Softmax, Kind::Logsumexp] {
        let mut group = c.benchmark_group(format!("aot_{}", kind.name()));
        for (rows, n) in [(1, 1024), (64, 4096)] {
            compare(&mut group, kind, rows, n);
        }
        group.finish();
        let name = format!("aot_{}_large", kind.name());
        let mut group = passfold_benches::config::slow_group(c, &name);
        for (rows, n) in [(1, 1 << 24), (256, 32000)] {
            compare(&mut group, kind, rows, n);
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = passfold_benches::config::quick();
    targets = aot
}
criterion_main!(benches);
