//! The ahead-of-time back end on cross-entropy and attention decode, against
//! the JIT and hand-written Rust (issue 9; `benches/aot.rs` has softmax and
//! logsumexp).
//!
//! - `cross_entropy` (`kernels/cross_entropy.pf`, an `i32` target per row):
//!   a row in L1 (1 × 1024), rows in L2 (64 × 4096), many rows out of cache
//!   (256 × 32,000) and one row out of cache (1 × 16,777,216);
//! - `attention_decode` (`kernels/attention.pf`, one head, one query,
//!   `d = e = 128`): 32 keys (32 KiB of K and V, L1), 1024 keys (1 MiB,
//!   L2) and 65,536 keys (64 MiB, out of cache).
//!
//! Each is run by `aot` (`kernel!` with `#[aot]`, the dispatch picks the
//! CPU's level), `jit` (the same plan through Cranelift), `hand_native`
//! (the same one-pass algorithm written by hand at AVX-512,
//! `passfold_benches::hand`) and `plain_rust` (the loops a user writes, for
//! the default target, `passfold_benches::plain`). Every result is checked
//! against an `f64` evaluation before timing.
//! `cargo bench -p passfold-benches --bench aot_kernels`.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use criterion::{criterion_group, criterion_main};
use passfold::{Arg, CompiledKernel};
use passfold_benches::{hand, plain, rel_error};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::sync::Arc;

passfold::kernel! {
    #[aot]
    kernel cross_entropy(x: f32[b, i], t: i32[b]) -> (y: f32[b]) {
        m[b] = max[i](x[b, i]);
        s[b] = sum[i](exp(x[b, i] - m[b]));
        y[b] = m[b] + log(s[b]) - x[b, t[b]];
    }
}

passfold::kernel! {
    #[aot]
    kernel attention(q: f32[h, i, c], k: f32[h, j, c], v: f32[h, j, e], scale: f32) -> (o: f32[h, i, e]) {
        s[h, i, j] = scale * sum[c](q[h, i, c] * k[h, j, c]);
        m[h, i] = max[j](s[h, i, j]);
        l[h, i] = sum[j](exp(s[h, i, j] - m[h, i]));
        o[h, i, e] = sum[j](exp(s[h, i, j] - m[h, i]) * v[h, j, e]) / l[h, i];
    }
}

/// Head size and value columns of attention decode.
const D: usize = 128;

/// Relative error allowed against the `f64` evaluation.
const TOLERANCE: f64 = 1e-4;

fn jit(name: &str) -> Arc<CompiledKernel> {
    let src = passfold_kernels::get(name)
        .expect("in the catalogue")
        .source;
    passfold::compile(src).expect("compiles")
}

fn check(what: &str, got: &[f32], want: &[f32], row_len: usize) {
    let (err, at) = rel_error(got, want, row_len);
    assert!(
        err < TOLERANCE,
        "{what}: relative error {err:.3e} at {at}: {} vs {}",
        got[at],
        want[at]
    );
}

struct CrossEntropy {
    rows: usize,
    n: usize,
    x: Vec<f32>,
    t: Vec<i32>,
}

impl CrossEntropy {
    fn new(rows: usize, n: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(0x5EED);
        // Wide enough that an unshifted exp would overflow.
        let x = (0..rows * n)
            .map(|_| rng.random_range(-100.0f32..100.0))
            .collect();
        let t = (0..rows).map(|_| rng.random_range(0..n as i32)).collect();
        CrossEntropy { rows, n, x, t }
    }

    fn reference(&self) -> Vec<f32> {
        self.x
            .chunks_exact(self.n)
            .zip(&self.t)
            .map(|(row, &t)| {
                let m = row
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
                let s: f64 = row.iter().map(|&v| (f64::from(v) - m).exp()).sum();
                (m + s.ln() - f64::from(row[t as usize])) as f32
            })
            .collect()
    }

    fn run_jit(&self, kernel: &CompiledKernel, y: &mut [f32]) {
        let (b, n) = (self.rows, self.n);
        kernel
            .bind()
            .arg("x", Arg::new(&self.x[..], &[b, n]))
            .arg("t", Arg::new(&self.t[..], &[b]))
            .arg("y", Arg::new(y, &[b]))
            .run()
            .expect("runs");
    }

    fn run_aot(&self, y: &mut [f32]) {
        cross_entropy::call(self.rows, self.n, &self.x, &self.t, y).expect("runs");
    }

    fn run_plain(&self, y: &mut [f32]) {
        for ((row, &t), y) in self.x.chunks_exact(self.n).zip(&self.t).zip(y) {
            *y = plain::cross_entropy(row, t);
        }
    }
}

fn bench_cross_entropy(group: &mut BenchmarkGroup<'_, WallTime>, rows: usize, n: usize) {
    let p = CrossEntropy::new(rows, n);
    let size = format!("{rows}x{n}");
    let want = p.reference();
    let mut y = vec![0.0f32; rows];
    group.throughput(Throughput::Elements((rows * n) as u64));
    let kernel = jit("cross_entropy");
    p.run_jit(&kernel, &mut y);
    check("cross_entropy/jit", &y, &want, 1);
    group.bench_function(BenchmarkId::new("jit", &size), |b| {
        b.iter(|| p.run_jit(&kernel, black_box(&mut y)))
    });
    p.run_aot(&mut y);
    check("cross_entropy/aot", &y, &want, 1);
    eprintln!("cross_entropy/{size}: aot level {}", cross_entropy::level());
    group.bench_function(BenchmarkId::new("aot", &size), |b| {
        b.iter(|| p.run_aot(black_box(&mut y)))
    });
    if hand::available() {
        hand::cross_entropy(n, &p.x, &p.t, &mut y);
        check("cross_entropy/hand_native", &y, &want, 1);
        group.bench_function(BenchmarkId::new("hand_native", &size), |b| {
            b.iter(|| hand::cross_entropy(n, black_box(&p.x), &p.t, black_box(&mut y)))
        });
    }
    p.run_plain(&mut y);
    group.bench_function(BenchmarkId::new("plain_rust", &size), |b| {
        b.iter(|| p.run_plain(black_box(&mut y)))
    });
}

struct Decode {
    n: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scale: f32,
}

impl Decode {
    fn new(n: usize) -> Self {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut uniform =
            |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        // Scores of a few units: the weights vary over many keys.
        Decode {
            n,
            q: uniform(D),
            k: uniform(n * D),
            v: uniform(n * D),
            scale: 1.0 / (D as f32).sqrt(),
        }
    }

    fn reference(&self) -> Vec<f32> {
        let s: Vec<f64> = self
            .k
            .chunks_exact(D)
            .map(|kj| {
                f64::from(self.scale)
                    * self
                        .q
                        .iter()
                        .zip(kj)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
            })
            .collect();
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let l: f64 = s.iter().map(|&x| (x - m).exp()).sum();
        (0..D)
            .map(|e| {
                let acc: f64 = s
                    .iter()
                    .zip(self.v.chunks_exact(D))
                    .map(|(&x, vj)| (x - m).exp() * f64::from(vj[e]))
                    .sum();
                (acc / l) as f32
            })
            .collect()
    }

    fn run_jit(&self, kernel: &CompiledKernel, o: &mut [f32]) {
        let n = self.n;
        kernel
            .bind()
            .arg("q", Arg::new(&self.q[..], &[1, 1, D]))
            .arg("k", Arg::new(&self.k[..], &[1, n, D]))
            .arg("v", Arg::new(&self.v[..], &[1, n, D]))
            .param("scale", f64::from(self.scale))
            .arg("o", Arg::new(o, &[1, 1, D]))
            .run()
            .expect("runs");
    }

    fn run_aot(&self, o: &mut [f32]) {
        attention::call(1, 1, D, self.n, D, &self.q, &self.k, &self.v, o, self.scale)
            .expect("runs");
    }
}

fn bench_decode(group: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    let p = Decode::new(n);
    let want = p.reference();
    let mut o = vec![0.0f32; D];
    // Bytes of K and V: what one pass over the keys must read.
    group.throughput(Throughput::Bytes((2 * n * D * 4) as u64));
    let kernel = jit("attention");
    p.run_jit(&kernel, &mut o);
    check("attention/jit", &o, &want, D);
    group.bench_function(BenchmarkId::new("jit", n), |b| {
        b.iter(|| p.run_jit(&kernel, black_box(&mut o)))
    });
    p.run_aot(&mut o);
    check("attention/aot", &o, &want, D);
    eprintln!("attention_decode/{n}: aot level {}", attention::level());
    group.bench_function(BenchmarkId::new("aot", n), |b| {
        b.iter(|| p.run_aot(black_box(&mut o)))
    });
    if hand::available() {
        hand::attention_decode(&p.q, &p.k, &p.v, p.scale, &mut o);
        check("attention/hand_native", &o, &want, D);
        group.bench_function(BenchmarkId::new("hand_native", n), |b| {
            b.iter(|| {
                hand::attention_decode(&p.q, black_box(&p.k), &p.v, p.scale, black_box(&mut o))
            })
        });
    }
    plain::attention_decode(&p.q, &p.k, &p.v, p.scale, &mut o);
    // The plain loop sums the keys in one `f32` chain, good to about
    // n·2^-24 relative (1.06e-4 at 65,536 keys), not to `TOLERANCE`.
    let (err, at) = rel_error(&o, &want, D);
    let bound = TOLERANCE.max(n as f64 * f64::from(f32::EPSILON) / 2.0);
    assert!(
        err < bound,
        "attention/plain_rust: relative error {err:.3e} at {at}"
    );
    group.bench_function(BenchmarkId::new("plain_rust", n), |b| {
        b.iter(|| plain::attention_decode(&p.q, black_box(&p.k), &p.v, p.scale, black_box(&mut o)))
    });
}

fn kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("aot_cross_entropy");
    for (rows, n) in [(1, 1024), (64, 4096)] {
        bench_cross_entropy(&mut group, rows, n);
    }
    group.finish();
    let mut group = passfold_benches::config::slow_group(c, "aot_cross_entropy_large");
    for (rows, n) in [(256, 32000), (1, 1 << 24)] {
        bench_cross_entropy(&mut group, rows, n);
    }
    group.finish();
    let mut group = c.benchmark_group("aot_attention_decode");
    for n in [32, 1024] {
        bench_decode(&mut group, n);
    }
    group.finish();
    let mut group = passfold_benches::config::slow_group(c, "aot_attention_decode_large");
    bench_decode(&mut group, 65536);
    group.finish();
}

criterion_group! {
    name = benches;
    config = passfold_benches::config::quick();
    targets = kernels
}
criterion_main!(benches);
