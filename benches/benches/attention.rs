//! Kernelized attention with and without relative positions, and the
//! Toeplitz products of `kernelized_attention_rpe` by FFT against the
//! direct `O(n²)` evaluation (issue 7).
//!
//! `c = e = f = 16` (head size, value columns and random features), `n`
//! queries and `n` keys, inputs uniform in ±0.5. Groups:
//! - `kernelized_attention`: the linear-time reordered plan, n = 256 …
//!   65,536;
//! - `kernelized_attention_rpe`: `fft` (the FFT form, `Toeplitz::Always`)
//!   for n = 256 … 65,536, `direct` (`Toeplitz::Never`, the fused direct
//!   plan) up to n = 4096 (it is quadratic: about 5.5 s a call at 16,384
//!   here) and `auto` (what a call picks by the cost model).
//!
//! Run with `cargo bench -p passfold-benches --bench attention`.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use passfold::{Arg, CompiledKernel, LowerOptions, PlanOptions, Toeplitz};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const D: usize = 16;

fn compile(name: &str, toeplitz: Toeplitz) -> Arc<CompiledKernel> {
    let src = passfold_kernels::get(name)
        .expect("in the catalogue")
        .source;
    let opts = PlanOptions {
        toeplitz,
        ..PlanOptions::default()
    };
    passfold::compile_with(src, &LowerOptions::default(), opts).expect("compiles")
}

fn uniform(rng: &mut SmallRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect()
}

struct Inputs {
    n: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    w: Vec<f32>,
    r: Vec<f32>,
}

impl Inputs {
    fn new(n: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(7);
        Inputs {
            n,
            q: uniform(&mut rng, n * D),
            k: uniform(&mut rng, n * D),
            v: uniform(&mut rng, n * D),
            w: uniform(&mut rng, D * D),
            r: uniform(&mut rng, 2 * n - 1),
        }
    }

    fn run(&self, kernel: &CompiledKernel, rpe: bool, o: &mut [f32]) {
        let n = self.n;
        let mut call = kernel
            .bind()
            .arg("q", Arg::new(&self.q[..], &[n, D]))
            .arg("k", Arg::new(&self.k[..], &[n, D]))
            .arg("v", Arg::new(&self.v[..], &[n, D]))
            .arg("w", Arg::new(&self.w[..], &[D, D]));
        if rpe {
            call = call.arg("r", Arg::new(&self.r[..], &[2 * n - 1]));
        }
        call.arg("o", Arg::new(o, &[n, D])).run().expect("runs");
    }
}

fn kernelized(c: &mut Criterion) {
    let plain = compile("kernelized_attention", Toeplitz::Auto);
    let fft = compile("kernelized_attention_rpe", Toeplitz::Always);
    let direct = compile("kernelized_attention_rpe", Toeplitz::Never);
    let auto = compile("kernelized_attention_rpe", Toeplitz::Auto);
    let mut group = c.benchmark_group("kernelized_attention");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for n in [256, 1024, 4096, 16384, 65536] {
        let inputs = Inputs::new(n);
        let mut o = vec![0.0f32; n * D];
        group.bench_function(BenchmarkId::new("linear", n), |b| {
            b.iter(|| inputs.run(&plain, false, black_box(&mut o)))
        });
        group.bench_function(BenchmarkId::new("rpe_fft", n), |b| {
            b.iter(|| inputs.run(&fft, true, black_box(&mut o)))
        });
        group.bench_function(BenchmarkId::new("rpe_auto", n), |b| {
            b.iter(|| inputs.run(&auto, true, black_box(&mut o)))
        });
        if n <= 4096 {
            group.bench_function(BenchmarkId::new("rpe_direct", n), |b| {
                b.iter(|| inputs.run(&direct, true, black_box(&mut o)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, kernelized);
criterion_main!(benches);
