//! How the tool executes a kernel: the reference interpreter or the JIT.
//!
//! This is the only module of the tool that talks to the runtime, so the
//! subcommands deal in [`HostTensor`]s only.

use super::commands::Loaded;
use super::tensor::{Data, HostTensor};
use anyhow::{Result, anyhow, bail};
use passfold_dsl::{Plan, Precision, TensorKind, interpret};

/// Which engine runs the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The reference interpreter, in `f64`.
    Interpret,
    /// Machine code from the JIT.
    Jit,
}

/// Runs the kernel on `args` (one per argument, outputs zero-filled) and
/// returns the arguments after the run.
pub fn execute(
    loaded: &Loaded,
    engine: Engine,
    args: Vec<HostTensor>,
    params: &[f64],
) -> Result<Vec<HostTensor>> {
    match engine {
        Engine::Interpret => interpret_f64(loaded, args, params),
        Engine::Jit => {
            let compiled = compile(&loaded.plan)?;
            let mut args = args;
            call(&compiled, &loaded.src, &mut args, params)?;
            Ok(args)
        }
    }
}

/// The interpreter in `f64`; results are rounded to each tensor's type.
pub fn interpret_f64(
    loaded: &Loaded,
    args: Vec<HostTensor>,
    params: &[f64],
) -> Result<Vec<HostTensor>> {
    let kernel = &loaded.kernel;
    let extents = extents_of(loaded, &args)?;
    let values: Vec<Vec<f64>> = args.iter().map(HostTensor::to_f64).collect();
    let out =
        interpret(kernel, &extents, values, params, Precision::F64).map_err(|e| match &e {
            passfold_dsl::InterpError::GatherOutOfRange { span, .. } => {
                let (line, col) = span.line_col(&loaded.src);
                anyhow!("{e} (read at line {line}, column {col})")
            }
            _ => anyhow!("{e}"),
        })?;
    Ok(args
        .into_iter()
        .zip(out)
        .map(|(t, v)| HostTensor::from_f64(t.ty(), t.shape, &v))
        .collect())
}

/// The extents bound from the arguments' shapes.
pub fn extents_of(loaded: &Loaded, args: &[HostTensor]) -> Result<Vec<i64>> {
    let shapes: Vec<Option<&[usize]>> = args.iter().map(|t| Some(t.shape.as_slice())).collect();
    Ok(passfold_dsl::bind_extents(&loaded.kernel, &shapes)?)
}

/// A kernel compiled to machine code.
pub struct Compiled {
    kernel: passfold_runtime::CompiledKernel,
}

/// JIT-compiles a plan for the host CPU.
/// [`compile`] with extents baked into the code.
pub fn compile_fixed(plan: &Plan, fixed: &[(&str, i64)]) -> Result<Compiled> {
    let kernel = passfold_runtime::compile_specialized(plan, fixed)
        .map_err(|e| anyhow!("cannot compile `{}`: {e}", plan.kernel.name))?;
    Ok(Compiled { kernel })
}

pub fn compile(plan: &Plan) -> Result<Compiled> {
    let kernel = passfold_runtime::compile(plan)
        .map_err(|e| anyhow!("cannot compile `{}`: {e}", plan.kernel.name))?;
    Ok(Compiled { kernel })
}

/// Calls compiled code on host tensors (in argument order), writing outputs
/// and in-place tensors into them.
pub fn call(compiled: &Compiled, src: &str, args: &mut [HostTensor], params: &[f64]) -> Result<()> {
    call_threads(compiled, src, args, params, 1)
}

/// [`call`] with rows split over `threads` threads.
pub fn call_threads(
    compiled: &Compiled,
    src: &str,
    args: &mut [HostTensor],
    params: &[f64],
    threads: usize,
) -> Result<()> {
    let kernel = compiled.kernel.kernel();
    let mut call_args = Vec::with_capacity(args.len());
    for (id, t) in kernel.arguments().zip(args.iter_mut()) {
        let writes = kernel.tensor(id).kind != TensorKind::Input;
        let shape = t.shape.clone();
        let data: passfold_runtime::Data<'_> = match (&mut t.data, writes) {
            (Data::F32(v), true) => v.as_mut_slice().into(),
            (Data::F64(v), true) => v.as_mut_slice().into(),
            (Data::I32(v), true) => v.as_mut_slice().into(),
            (Data::F32(v), false) => v.as_slice().into(),
            (Data::F64(v), false) => v.as_slice().into(),
            (Data::I32(v), false) => v.as_slice().into(),
        };
        call_args.push(passfold_runtime::Arg::new(data, &shape));
    }
    compiled
        .kernel
        .call_threads(call_args, params, threads)
        .map_err(|e| match &e {
            passfold_runtime::CallError::GatherOutOfRange { span, .. } => {
                let (line, col) = span.line_col(src);
                anyhow!("{e} (read at line {line}, column {col})")
            }
            _ => anyhow!("{e}"),
        })
}

/// The CLIF text of a plan for `target` (`host`, `x86_64`, `aarch64`).
pub fn clif_text(plan: &Plan, target: &str, asm: bool) -> Result<String> {
    let isa = match target {
        "host" => passfold_codegen::host_isa(&Default::default()),
        "x86_64" => passfold_codegen::isa_for("x86_64-unknown-linux-gnu", false),
        "aarch64" => passfold_codegen::isa_for("aarch64-unknown-linux-gnu", false),
        other => bail!("unknown target `{other}`: use host, x86_64 or aarch64"),
    }
    .map_err(|e| anyhow!("{e}"))?;
    if asm {
        return passfold_codegen::asm_text(plan, &*isa).map_err(|e| anyhow!("{e}"));
    }
    passfold_codegen::clif_text(plan, &*isa).map_err(|e| anyhow!("{e}"))
}
