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
pub fn execute(loaded: &Loaded, engine: Engine, args: Vec<HostTensor>, params: &[f64]) -> Result<Vec<HostTensor>> {
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
pub fn interpret_f64(loaded: &Loaded, args: Vec<HostTensor>, params: &[f64]) -> Result<Vec<HostTensor>> {
    let kernel = &loaded.kernel;
    let extents = extents_of(loaded, &args)?;
    let values: Vec<Vec<f64>> = args.iter().map(HostTensor::to_f64).collect();
    let out = interpret(kernel, &extents, values, params, Precision::F64).map_err(|e| match &e {
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
    _plan: Plan,
}

/// JIT-compiles a plan.
pub fn compile(plan: &Plan) -> Result<Compiled> {
    let _ = TensorKind::Input;
    let _ = plan;
    bail!("the JIT is not wired into the tool yet")
}

/// Calls compiled code on host tensors, writing outputs in place.
pub fn call(compiled: &Compiled, src: &str, args: &mut [HostTensor], params: &[f64]) -> Result<()> {
    let _ = (compiled, src, args, params, Data::I32(Vec::new()));
    bail!("the JIT is not wired into the tool yet")
}

/// The CLIF text of a plan for `target` (`host`, `x86_64`, `aarch64`).
pub fn clif_text(plan: &Plan, target: &str) -> Result<String> {
    let _ = (plan, target);
    bail!("the JIT is not wired into the tool yet")
}
