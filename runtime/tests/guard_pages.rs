//! Memory safety of generated code: every argument lives at the very end of
//! a readable page followed by an inaccessible guard page (and, in a second
//! pass, right after a guard page), so any read or write past (or before) a
//! buffer faults and fails the test. Every catalogue kernel, fused and
//! unfused, runs at many lengths around the vector width and unroll factor.
//!
//! This test maps memory itself, so it contains the only `unsafe` outside
//! `runtime/src/call.rs`; each block says why it is sound.

mod common;

use passfold_dsl::{LowerOptions, PlanOptions, ScalarType, TensorKind, Toeplitz};
use passfold_runtime::{Arg, compile};

/// A buffer of `len` elements of `T` placed against a guard page.
struct Guarded<T> {
    base: *mut u8,
    map_len: usize,
    data: *mut T,
    len: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    /// The buffer ends where the guard page begins.
    End,
    /// The buffer begins where the guard page ends.
    Start,
}

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

impl<T: Copy> Guarded<T> {
    fn new(values: &[T], side: Side) -> Self {
        let len = values.len();
        let bytes = std::mem::size_of_val(values);
        let page = page();
        let data_pages = bytes.div_ceil(page).max(1);
        let map_len = (data_pages + 1) * page;
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked against MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap failed");
        let base = base as *mut u8;
        let (guard, data) = match side {
            // SAFETY (both arms): offsets stay inside the mapping of `map_len` bytes.
            Side::End => unsafe {
                (
                    base.add(data_pages * page),
                    base.add(data_pages * page - bytes),
                )
            },
            Side::Start => unsafe { (base, base.add(page)) },
        };
        // SAFETY: `guard` is page-aligned and one page lies inside the mapping.
        let rc = unsafe { libc::mprotect(guard as *mut libc::c_void, page, libc::PROT_NONE) };
        assert_eq!(rc, 0, "mprotect failed");
        let data = data as *mut T;
        assert_eq!(data as usize % std::mem::align_of::<T>(), 0);
        // SAFETY: `data` points to `len` writable, aligned elements of the mapping.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), data, len) };
        Guarded {
            base,
            map_len,
            data,
            len,
        }
    }

    fn slice(&mut self) -> &mut [T] {
        // SAFETY: `data` is aligned, non-null and valid for `len` elements
        // for as long as `self` lives; the borrow of `self` is unique.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        // SAFETY: `base`/`map_len` are exactly what mmap returned; no slice of
        // the mapping outlives `self`.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.map_len) };
    }
}

enum Buf {
    F32(Guarded<f32>),
    F64(Guarded<f64>),
    I32(Guarded<i32>),
}

#[test]
fn catalogue_never_touches_memory_outside_its_buffers() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../kernels");
    let mut runs = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "pf") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        for float in [None, Some(ScalarType::F64)] {
            let opts = LowerOptions {
                float,
                ..LowerOptions::default()
            };
            // Fused, unfused, and the FFT form of Toeplitz products where
            // the plan has one (the cost model would not pick it at these
            // lengths).
            for (unfused, toeplitz) in [
                (false, Toeplitz::Auto),
                (true, Toeplitz::Auto),
                (false, Toeplitz::Always),
            ] {
                let plan = common::plan_with(
                    &src,
                    &opts,
                    PlanOptions {
                        unfused,
                        toeplitz,
                        ..PlanOptions::default()
                    },
                );
                if toeplitz == Toeplitz::Always && !plan.program_has_toeplitz() {
                    continue;
                }
                let jit = compile(&plan).unwrap();
                let kernel = jit.kernel().clone();
                let reduced = passfold_dsl::rules::reduced_mask(&kernel);
                let lens: Vec<i64> = (0..=20).chain([31, 32, 33, 47, 48, 49]).collect();
                // Two rows on one thread, and one row on two threads (split
                // by the combine laws where the plan splits).
                for &n in &lens {
                    for (side, (rows, threads)) in [Side::End, Side::Start]
                        .into_iter()
                        .flat_map(|s| [(s, (2i64, 1usize)), (s, (1, 2))])
                    {
                        // Reduced extents take the swept length, others stay small.
                        let extents: Vec<i64> = (0..kernel.extents.len())
                            .map(|e| {
                                if reduced == 0 || reduced & (1 << e) != 0 {
                                    n
                                } else {
                                    rows
                                }
                            })
                            .collect();
                        let mut rng = common::Rng::new(n as u64 + 7);
                        let mut bufs = Vec::new();
                        let mut shapes = Vec::new();
                        for id in kernel.arguments() {
                            let t = kernel.tensor(id);
                            let shape = passfold_dsl::shape_of(t, &extents).unwrap();
                            let count: usize = shape.iter().product();
                            let bound = passfold_dsl::gather_limit(&kernel, id, &extents)
                                .unwrap_or(1)
                                .max(1) as u64;
                            bufs.push(match t.ty {
                                ScalarType::I32 => Buf::I32(Guarded::new(
                                    &(0..count)
                                        .map(|_| rng.below(bound) as i32)
                                        .collect::<Vec<_>>(),
                                    side,
                                )),
                                ScalarType::F64 => Buf::F64(Guarded::new(
                                    &(0..count)
                                        .map(|_| rng.uniform(-3.0, 3.0))
                                        .collect::<Vec<_>>(),
                                    side,
                                )),
                                _ => Buf::F32(Guarded::new(
                                    &(0..count)
                                        .map(|_| rng.uniform(-3.0, 3.0) as f32)
                                        .collect::<Vec<_>>(),
                                    side,
                                )),
                            });
                            let _ = t.kind == TensorKind::Output;
                            shapes.push(shape);
                        }
                        let args: Vec<Arg> = bufs
                            .iter_mut()
                            .zip(&shapes)
                            .map(|(b, shape)| match b {
                                Buf::F32(g) => Arg::new(g.slice(), shape),
                                Buf::F64(g) => Arg::new(g.slice(), shape),
                                Buf::I32(g) => Arg::new(g.slice(), shape),
                            })
                            .collect();
                        let params: Vec<f64> = (0..kernel.params.len())
                            .map(|p| 0.5 + 0.25 * p as f64)
                            .collect();
                        // A gather of an empty dimension is refused before or
                        // during the run; either way nothing may fault.
                        let _ = jit.call_split(args, &params, threads);
                        runs += 1;
                    }
                }
            }
        }
    }
    assert!(runs > 1000, "only {runs} runs");
}
