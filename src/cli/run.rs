//! `passfold run`: a kernel on `.npy` files.
//!
//! Everything is read and checked (names, element types, shapes, extents,
//! parameters) before any code runs, and outputs are written only after the
//! kernel succeeded, so a bad invocation writes nothing.

use super::KernelArgs;
use super::commands::{load, pairs};
use super::exec::{Engine, execute};
use super::tensor::HostTensor;
use anyhow::{Context, Result, bail};
use passfold_dsl::{TensorKind, bind_extents, shape_of};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `passfold run`.
pub fn run(
    args: &KernelArgs,
    inputs: &[String],
    params: &[String],
    outputs: &[String],
    interpret: bool,
) -> Result<bool> {
    let Some(loaded) = load(args)? else {
        return Ok(false);
    };
    let kernel = &loaded.kernel;
    let mut inputs: BTreeMap<String, PathBuf> =
        pairs::<PathBuf>(inputs, "--input")?.into_iter().collect();
    let outputs: BTreeMap<String, PathBuf> =
        pairs::<PathBuf>(outputs, "--output")?.into_iter().collect();
    let mut params: BTreeMap<String, f64> = pairs::<f64>(params, "--param")?.into_iter().collect();

    let mut tensors: Vec<Option<HostTensor>> = Vec::new();
    for id in kernel.arguments() {
        let t = kernel.tensor(id);
        if t.kind == TensorKind::Output {
            if inputs.contains_key(&t.name) {
                bail!(
                    "`{}` is an output of `{}`; pass it with --output",
                    t.name,
                    kernel.name
                );
            }
            tensors.push(None);
            continue;
        }
        let path = inputs.remove(&t.name).with_context(|| {
            format!(
                "input `{}` is missing: pass --input {}=PATH.npy",
                t.name, t.name
            )
        })?;
        let host = HostTensor::read_npy(&path).with_context(|| format!("input `{}`", t.name))?;
        if host.ty() != t.ty {
            bail!(
                "input `{}`: {} holds {}, the kernel declares {}",
                t.name,
                path.display(),
                host.ty(),
                t.ty
            );
        }
        tensors.push(Some(host));
    }
    if let Some(name) = inputs.keys().next() {
        bail!("`{}` has no input `{name}`", kernel.name);
    }
    for name in outputs.keys() {
        let ok = kernel.tensor_id(name).is_some_and(|id| {
            matches!(
                kernel.tensor(id).kind,
                TensorKind::Output | TensorKind::InOut
            )
        });
        if !ok {
            bail!(
                "`{}` has no output `{name}` (outputs are written, or `mut` arguments updated)",
                kernel.name
            );
        }
    }
    let mut param_values = Vec::new();
    for p in &kernel.params {
        let v = params.remove(&p.name).with_context(|| {
            format!(
                "parameter `{}` is missing: pass --param {}=VALUE",
                p.name, p.name
            )
        })?;
        param_values.push(v);
    }
    if let Some(name) = params.keys().next() {
        bail!("`{}` has no parameter `{name}`", kernel.name);
    }

    let shapes: Vec<Option<&[usize]>> = tensors
        .iter()
        .map(|t| t.as_ref().map(|t| t.shape.as_slice()))
        .collect();
    let extents =
        bind_extents(kernel, &shapes).context("the inputs' shapes do not fit the kernel")?;
    let mut args_full = Vec::new();
    for (id, t) in kernel.arguments().zip(tensors) {
        let decl = kernel.tensor(id);
        args_full.push(match t {
            Some(t) => t,
            None => {
                let shape = shape_of(decl, &extents).context("output too large")?;
                HostTensor::zeros(decl.ty, shape)?
            }
        });
    }
    let engine = if interpret {
        Engine::Interpret
    } else {
        Engine::Jit
    };
    let results = execute(&loaded, engine, args_full, &param_values)?;
    for (id, t) in kernel.arguments().zip(&results) {
        let decl = kernel.tensor(id);
        if decl.kind == TensorKind::Input {
            continue;
        }
        match outputs.get(&decl.name) {
            Some(path) => t
                .write_npy(path)
                .with_context(|| format!("output `{}`", decl.name))?,
            None => println!("{} {:?}: {}", decl.name, t.shape, preview(t)),
        }
    }
    Ok(true)
}

fn preview(t: &HostTensor) -> String {
    let values = t.to_f64();
    let shown: Vec<String> = values.iter().take(8).map(|v| format!("{v}")).collect();
    let more = if values.len() > 8 { ", ..." } else { "" };
    format!("[{}{more}]", shown.join(", "))
}
