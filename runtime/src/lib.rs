//! passfold's runtime: compiled kernels and the safe call API.
//!
//! [`compile`] lowers a [`Plan`] with `passfold_codegen` for the host CPU
//! and compiles it with Cranelift into a [`CompiledKernel`], which owns one
//! JIT module (its code is freed when the kernel is dropped). A call binds
//! each argument tensor ([`Arg`]: a slice and its shape), positionally with
//! [`CompiledKernel::call`] or by name with [`CompiledKernel::bind`], and
//! validates everything before machine code runs: element types,
//! mutability, ranks, lengths, extents (bound from the arguments' plain
//! dimensions, or explicitly), affine dimensions such as `j - i`, sizes.
//! Temporaries are allocated per call. The only run-time failure is a
//! gathered index outside an unpadded tensor, reported as
//! [`CallError::GatherOutOfRange`] with the read's place in the source.
//!
//! All `unsafe` code lives in `call.rs` (calling JIT code) and in
//! `helpers.rs` (the Toeplitz product JIT code calls with its scratch
//! tensors' addresses).
#![warn(missing_docs)]

mod args;
mod cache;
mod call;
mod error;
mod helpers;
mod jit;
mod toeplitz;
mod values;
#[cfg(feature = "ndarray")]
mod views;
#[cfg(feature = "ndarray")]
/// The `ndarray` crate, whose views [`Arg::view`] and [`Arg::view_mut`] accept.
pub use ndarray;
#[cfg(feature = "ndarray")]
pub use views::Element;

pub use args::{Arg, Data, Owned, WriteBack};
pub use cache::{KernelCache, cache, cache_key, specialized_key};
pub use error::{CallError, CompileError};
/// The `half` crate, whose `f16` and `bf16` slices are accepted for `f32` inputs.
pub use half;

use passfold_codegen::{GatherSite, site_for_status};
use passfold_dsl::{Kernel, Plan};

/// Compiles `plan` for the host CPU.
pub fn compile(plan: &Plan) -> Result<CompiledKernel, CompileError> {
    compile_specialized(plan, &[])
}

/// Compiles `plan` with the extents named in `fixed` baked into the code as
/// constants (a fixed head size, a constant row length): loop bounds and
/// strides become immediates. Every call checks that its extents have
/// these lengths ([`CallError::Specialized`] otherwise).
pub fn compile_specialized(
    plan: &Plan,
    fixed: &[(&str, i64)],
) -> Result<CompiledKernel, CompileError> {
    let fixed = resolve_fixed(&plan.kernel, fixed)?;
    let (code, gather_sites) = jit::build_specialized(plan, &fixed)?;
    let variant = match &plan.variant {
        Some(v) => {
            let mut fixed_named = Vec::new();
            for (e, len) in fixed.iter().enumerate() {
                if let Some(len) = *len {
                    fixed_named.push((plan.kernel.extents[e].name.as_str(), len));
                }
            }
            Some(Box::new(compile_specialized(&v.plan, &fixed_named)?))
        }
        None => None,
    };
    Ok(CompiledKernel {
        variant,
        fixed,
        plan: plan.clone(),
        split: std::sync::OnceLock::new(),
        split_store: std::sync::OnceLock::new(),
        row_extent: plan.row_extent(),
        direct: args::Direct::new(&plan.kernel),
        kernel: plan.kernel.clone(),
        code,
        gather_sites,
        source: None,
    })
}

/// The machine's threads, asked once (`available_parallelism` reads cgroup
/// files: tens of microseconds, too slow for every call).
fn machine_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `fixed` by extent, checked against the kernel.
fn resolve_fixed(kernel: &Kernel, fixed: &[(&str, i64)]) -> Result<Vec<Option<i64>>, CompileError> {
    let mut out = vec![None; kernel.extents.len()];
    for &(name, len) in fixed {
        let why = if len < 0 {
            Some("a length is not negative")
        } else {
            None
        };
        let at = kernel.extents.iter().position(|e| e.name == name);
        match (at, why) {
            (Some(e), None) => out[e] = Some(len),
            (_, Some(why)) => {
                return Err(CompileError::Specialization {
                    name: name.to_string(),
                    len,
                    why,
                });
            }
            (None, None) => {
                return Err(CompileError::Specialization {
                    name: name.to_string(),
                    len,
                    why: "the kernel has no such extent",
                });
            }
        }
    }
    Ok(out)
}

/// The least estimated work ([`passfold_dsl::cost::work`], scalar
/// operations) of a call whose row [`CompiledKernel::call_threads`] splits
/// across threads. Measured here with `passfold bench --threads 1|2`: rows
/// of about 0.3 ms on one thread break even, which the model puts at 2.0e7
/// for attention decode (8,192 keys) and 5.8e6 for softmax (262,144
/// elements); shorter rows run slower split, since the threads start per
/// call.
pub const SPLIT_MIN_WORK: f64 = 1.0e7;

/// Split-row code, its kernel and its private tensors, or why there is none.
type SplitCode = Result<(call::JitCode, Kernel, Vec<passfold_dsl::TensorId>), String>;

/// A kernel compiled to machine code, ready to call.
pub struct CompiledKernel {
    /// The extents baked into the code (`compile_specialized`), by extent.
    fixed: Vec<Option<i64>>,
    /// The plan, for the split-row code compiled on first use.
    plan: Plan,
    /// The split-row code (`passfold_dsl::threads`), or why there is none.
    split: std::sync::OnceLock<SplitCode>,
    /// The split-row code of [`Plan::split_form`], for rows larger than the
    /// cache.
    split_store: std::sync::OnceLock<SplitCode>,
    row_extent: Option<passfold_dsl::ExtentId>,
    kernel: Kernel,
    code: call::JitCode,
    gather_sites: Vec<GatherSite>,
    source: Option<String>,
    /// The compiled [`Plan::variant`], run when the plan prefers it at a
    /// call's extents.
    variant: Option<Box<CompiledKernel>>,
    /// The short path of [`CompiledKernel::call_extents`], when every
    /// dimension is a plain extent.
    direct: Option<args::Direct>,
}

impl std::fmt::Debug for CompiledKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledKernel")
            .field("kernel", &self.kernel.name)
            .finish_non_exhaustive()
    }
}

impl CompiledKernel {
    /// Attaches the kernel's source text, so errors give lines and columns.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        let source = source.into();
        self.variant = self
            .variant
            .map(|v| Box::new(v.with_source(source.clone())));
        self.source = Some(source);
        self
    }

    /// Whether a call with these extents (by extent) runs the plan's
    /// variant (the FFT form of Toeplitz products) instead of the main plan.
    pub fn runs_variant(&self, extents: &[i64]) -> bool {
        self.variant.is_some() && self.plan.prefers_variant(extents)
    }

    /// The kernel compiled.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The reads that can fail at run time (see `passfold_codegen::gather_sites`).
    pub fn gather_sites(&self) -> &[GatherSite] {
        &self.gather_sites
    }

    /// Calls the kernel with its argument tensors in `Kernel::arguments`
    /// order (inputs, in-place, outputs) and its parameters in order.
    pub fn call(&self, args: Vec<Arg<'_>>, params: &[f64]) -> Result<(), CallError> {
        self.run(args, &[], params)
    }

    /// Starts a call that binds arguments, parameters and extents by name.
    pub fn bind<'a>(&self) -> Call<'_, 'a> {
        Call {
            kernel: self,
            args: (0..self.kernel.arguments().count()).map(|_| None).collect(),
            params: smallvec::smallvec![None; self.kernel.params.len()],
            extents: smallvec::smallvec![None; self.kernel.extents.len()],
            error: None,
        }
    }

    /// Calls the kernel on up to `threads` threads (at most the machine's).
    ///
    /// With at least as many rows as threads, rows are split over threads of
    /// the rayon pool (see [`Plan::row_extent`]); each row is computed by
    /// one thread exactly as on one thread, so results are identical for
    /// every thread count. With fewer rows (one long row), a plan that
    /// splits ([`CompiledKernel::row_splits`], `passfold_dsl::threads`) runs
    /// each row on all threads: each reduces a chunk to partial states that
    /// merge by the accumulators' combine laws. Those results are the same
    /// on every call with the same thread count, and differ from other
    /// thread counts by the rounding of regrouped sums. A row is split only
    /// when the plan's estimated work at the call's extents
    /// ([`passfold_dsl::cost::work`]) is at least [`SPLIT_MIN_WORK`]:
    /// below that, starting the threads costs more than they save.
    /// Otherwise the call runs on one thread.
    pub fn call_threads(
        &self,
        args: Vec<Arg<'_>>,
        params: &[f64],
        threads: usize,
    ) -> Result<(), CallError> {
        self.run_threads(args, &[], params, threads, false)
    }

    /// [`CompiledKernel::call_threads`], but a row the plan can split is
    /// split at any size (for tests and measurements of the split code).
    pub fn call_split(
        &self,
        args: Vec<Arg<'_>>,
        params: &[f64],
        threads: usize,
    ) -> Result<(), CallError> {
        self.run_threads(args, &[], params, threads, true)
    }

    /// Calls the kernel with every extent given (`extents`, in the kernel's
    /// order of extents), its argument tensors as flat row-major data in
    /// [`Kernel::arguments`] order, and its parameters in order, on up to
    /// `threads` threads ([`CompiledKernel::call_threads`]). This is the
    /// typed `kernel!` item's call.
    ///
    /// Each argument's length must be the product of its dimensions at
    /// these extents; the checks and errors are those of
    /// [`CompiledKernel::call`]. On one thread, with plain slices and a
    /// kernel whose dimensions are all plain extents, the call takes a
    /// short path: the checks are a length product per argument, no shape
    /// is built and small temporaries live on the stack (a few hundred
    /// instructions instead of a few thousand).
    pub fn call_extents(
        &self,
        extents: &[usize],
        data: &mut [Data<'_>],
        params: &[f64],
        threads: usize,
    ) -> Result<(), CallError> {
        if extents.len() != self.kernel.extents.len() {
            return Err(CallError::ExtentCount {
                expected: self.kernel.extents.len(),
                found: extents.len(),
            });
        }
        let mut lens: args::Extents = smallvec::SmallVec::with_capacity(extents.len());
        for (e, &len) in extents.iter().enumerate() {
            lens.push(i64::try_from(len).map_err(|_| CallError::TooLarge {
                name: self.kernel.extents[e].name.clone(),
            })?);
        }
        if let Some(direct) = &self.direct
            && threads <= 1
            && self.variant.is_none()
            && direct.takes(data)
            && params.len() == self.kernel.params.len()
        {
            for (e, fixed) in self.fixed.iter().enumerate() {
                if let Some(len) = *fixed
                    && lens[e] != len
                {
                    return Err(CallError::Specialized {
                        extent: self.kernel.extents[e].name.clone(),
                        compiled: len,
                        found: lens[e],
                    });
                }
            }
            let status = direct.run(&self.kernel, &self.code, &lens, data, params)?;
            return self.status(status);
        }
        let n_args = self.kernel.arguments().count();
        if data.len() != n_args {
            return Err(CallError::ArgCount {
                expected: n_args,
                found: data.len(),
            });
        }
        let mut args = Vec::with_capacity(n_args);
        for (d, t) in data.iter_mut().zip(self.kernel.arguments()) {
            let tensor = self.kernel.tensor(t);
            let shape =
                passfold_dsl::shape_of(tensor, &lens).ok_or_else(|| CallError::TooLarge {
                    name: tensor.name.clone(),
                })?;
            args.push(Arg {
                data: std::mem::replace(d, Data::F32(&[])),
                shape,
            });
        }
        let explicit: smallvec::SmallVec<[Option<i64>; 8]> =
            lens.iter().map(|&l| Some(l)).collect();
        self.run_threads(args, &explicit, params, threads, false)
    }

    /// Whether calls can split rows over threads.
    pub fn row_parallel(&self) -> bool {
        self.row_extent.is_some()
    }

    fn run(
        &self,
        args: Vec<Arg<'_>>,
        extents: &[Option<i64>],
        params: &[f64],
    ) -> Result<(), CallError> {
        self.run_threads(args, extents, params, 1, false)
    }

    fn run_threads(
        &self,
        args: Vec<Arg<'_>>,
        extents: &[Option<i64>],
        params: &[f64],
        threads: usize,
        always_split: bool,
    ) -> Result<(), CallError> {
        if let Some(v) = &self.variant {
            let bound = args::extents_of(&self.kernel, &args, extents)?;
            if self.plan.prefers_variant(&bound) {
                // Computes every row at once: one thread.
                return v.run_threads(args, extents, params, 1, false);
            }
        }
        let mut frame = args::prepare(&self.kernel, args, extents, params)?;
        for (e, fixed) in self.fixed.iter().enumerate() {
            if let Some(len) = *fixed
                && frame.extents[e] != len
            {
                return Err(CallError::Specialized {
                    extent: self.kernel.extents[e].name.clone(),
                    compiled: len,
                    found: frame.extents[e],
                });
            }
        }
        let rows = self.row_extent.map_or(1, |r| frame.extents[r.0 as usize]);
        let threads = if threads > 1 {
            threads.min(machine_threads())
        } else {
            1
        };
        if threads > 1
            && rows < threads as i64
            && (always_split
                || passfold_dsl::cost::work(&self.plan, &frame.extents) >= SPLIT_MIN_WORK)
            && let Ok((code, split, private)) = self.split_code(self.split_form_for(&frame.extents))
        {
            let counter = std::sync::atomic::AtomicI64::new(0);
            let mut frames = frame.split(split, threads, &counter, private)?;
            if let Some(status) = code.invoke_split(&mut frames) {
                return self.status(status);
            }
        }
        let status = match self.row_extent {
            Some(row) if threads > 1 && frame.extents[row.0 as usize] > 1 => {
                let n = frame.extents[row.0 as usize];
                let parts = (threads as i64).min(n);
                let mut frames = Vec::with_capacity(parts as usize);
                for p in 0..parts {
                    frames.push(frame.fork(&self.kernel, [n * p / parts, n * (p + 1) / parts])?);
                }
                self.code.invoke_rows(frames)
            }
            _ => self.code.invoke(&mut frame),
        };
        self.status(status)
    }

    /// Whether a split row with these extents takes [`Plan::split_form`]:
    /// the plan has one, its tensors are the main plan's (so the call's
    /// frame fits both), and the arguments pass
    /// [`passfold_dsl::cost::SPLIT_FORM_MIN_BYTES`].
    pub fn split_form_for(&self, extents: &[i64]) -> bool {
        let Some(form) = &self.plan.split_form else {
            return false;
        };
        if form.kernel.tensors != self.kernel.tensors
            || form.kernel.extents != self.kernel.extents
            || form.kernel.params != self.kernel.params
        {
            return false;
        }
        let bytes: u64 = self
            .kernel
            .arguments()
            .map(|t| {
                let tensor = self.kernel.tensor(t);
                passfold_dsl::shape_of(tensor, extents).map_or(0, |shape| {
                    shape.iter().fold(tensor.ty.size_bytes() as u64, |acc, &n| {
                        acc.saturating_mul(n as u64)
                    })
                })
            })
            .fold(0u64, u64::saturating_add);
        bytes >= passfold_dsl::cost::SPLIT_FORM_MIN_BYTES
    }

    /// The split-row code (of [`Plan::split_form`] when `store_form`),
    /// compiled on first use; `Err` says why the plan does not split.
    fn split_code(
        &self,
        store_form: bool,
    ) -> Result<(&call::JitCode, &Kernel, &[passfold_dsl::TensorId]), String> {
        let (cell, plan) = match (&self.plan.split_form, store_form) {
            (Some(form), true) => (&self.split_store, &**form),
            _ => (&self.split, &self.plan),
        };
        let split = cell.get_or_init(|| {
            let s = passfold_dsl::threads::split_row(plan)?;
            let (code, _) =
                jit::build_specialized(&s.plan, &self.fixed).map_err(|e| e.to_string())?;
            Ok((code, s.plan.kernel, s.private))
        });
        match split {
            Ok((code, kernel, private)) => Ok((code, kernel, private)),
            Err(e) => Err(e.clone()),
        }
    }

    /// Whether a call with fewer rows than threads splits each row across
    /// the threads (`Err`: why not).
    pub fn row_splits(&self) -> Result<(), String> {
        self.split_code(false).map(|_| ())
    }

    fn status(&self, status: i32) -> Result<(), CallError> {
        if status == 0 {
            return Ok(());
        }
        let site =
            site_for_status(&self.gather_sites, status).ok_or(CallError::Internal { status })?;
        Err(CallError::GatherOutOfRange {
            tensor: self.kernel.tensor(site.tensor).name.clone(),
            span: site.span,
            line_col: self.source.as_deref().map(|src| site.span.line_col(src)),
        })
    }
}

/// A call under construction, binding by name ([`CompiledKernel::bind`]).
///
/// Binding errors (unknown or repeated names) are reported by [`Call::run`].
pub struct Call<'k, 'a> {
    kernel: &'k CompiledKernel,
    args: smallvec::SmallVec<[Option<Arg<'a>>; 4]>,
    params: smallvec::SmallVec<[Option<f64>; 4]>,
    extents: smallvec::SmallVec<[Option<i64>; 8]>,
    error: Option<CallError>,
}

impl<'a> Call<'_, 'a> {
    fn fail(&mut self, e: CallError) {
        self.error.get_or_insert(e);
    }

    /// Binds the argument tensor `name`.
    pub fn arg(mut self, name: &str, arg: Arg<'a>) -> Self {
        let k = &self.kernel.kernel;
        match k.arguments().position(|t| k.tensor(t).name == name) {
            None => self.fail(unknown("argument", name)),
            Some(i) if self.args[i].is_some() => self.fail(duplicate("argument", name)),
            Some(i) => self.args[i] = Some(arg),
        }
        self
    }

    /// Binds the scalar parameter `name`.
    pub fn param(mut self, name: &str, value: f64) -> Self {
        match self
            .kernel
            .kernel
            .params
            .iter()
            .position(|p| p.name == name)
        {
            None => self.fail(unknown("parameter", name)),
            Some(i) if self.params[i].is_some() => self.fail(duplicate("parameter", name)),
            Some(i) => self.params[i] = Some(value),
        }
        self
    }

    /// Binds the extent `name` explicitly (needed when no argument has it as
    /// a plain dimension; otherwise checked against the arguments).
    pub fn extent(mut self, name: &str, len: usize) -> Self {
        match (self.kernel.kernel.extent_id(name), i64::try_from(len)) {
            (None, _) => self.fail(unknown("extent", name)),
            (Some(_), Err(_)) => self.fail(CallError::TooLarge {
                name: name.to_string(),
            }),
            (Some(e), Ok(_)) if self.extents[e.0 as usize].is_some() => {
                self.fail(duplicate("extent", name))
            }
            (Some(e), Ok(len)) => self.extents[e.0 as usize] = Some(len),
        }
        self
    }

    /// Validates the bindings and runs the kernel.
    pub fn run(self) -> Result<(), CallError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let k = &self.kernel.kernel;
        let mut args = Vec::with_capacity(self.args.len());
        for (arg, t) in self.args.into_iter().zip(k.arguments()) {
            args.push(arg.ok_or_else(|| CallError::Missing {
                what: "argument",
                name: k.tensor(t).name.clone(),
            })?);
        }
        let mut params: smallvec::SmallVec<[f64; 4]> = smallvec::SmallVec::new();
        for (value, p) in self.params.into_iter().zip(&k.params) {
            params.push(value.ok_or_else(|| CallError::Missing {
                what: "parameter",
                name: p.name.clone(),
            })?);
        }
        self.kernel.run(args, &self.extents, &params)
    }
}

fn unknown(what: &'static str, name: &str) -> CallError {
    CallError::UnknownName {
        what,
        name: name.to_string(),
    }
}

fn duplicate(what: &'static str, name: &str) -> CallError {
    CallError::Duplicate {
        what,
        name: name.to_string(),
    }
}
