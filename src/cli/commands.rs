//! `check`, `ir`, `plan`, `clif` and `emit-rust`: the inspection subcommands.

use super::KernelArgs;
use anyhow::{Context, Result, bail};
use passfold_dsl::fuse::{ExpShift, Reload};
use passfold_dsl::{Kernel, LowerOptions, Plan, PlanOptions, ScalarType, Toeplitz};

/// A kernel file read and checked, or its diagnostics printed.
pub struct Loaded {
    /// The source text.
    pub src: String,
    /// The checked kernel.
    pub kernel: Kernel,
    /// Its plan.
    pub plan: Plan,
}

/// Parses `NAME=VALUE` pairs.
pub fn pairs<T: std::str::FromStr>(items: &[String], what: &str) -> Result<Vec<(String, T)>> {
    items
        .iter()
        .map(|item| {
            let (name, value) = item
                .split_once('=')
                .with_context(|| format!("{what} `{item}` is not NAME=VALUE"))?;
            let value = value
                .trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{what} `{item}`: cannot read `{value}`"))?;
            Ok((name.trim().to_string(), value))
        })
        .collect()
}

/// Reads and checks the kernel; `Ok(None)` after printing diagnostics.
pub fn load(args: &KernelArgs) -> Result<Option<Loaded>> {
    let src = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let opts = LowerOptions {
        consts: pairs(&args.consts, "--const")?,
        float: args.f64.then_some(ScalarType::F64),
    };
    match passfold_dsl::check(&src, &opts) {
        Ok(kernel) => {
            let plan = passfold_dsl::plan(&kernel, plan_options(args, args.unfused));
            dump(&kernel, &plan);
            Ok(Some(Loaded { src, kernel, plan }))
        }
        Err(diags) => {
            eprint!("{}", diags.render(&args.file.display().to_string(), &src));
            Ok(None)
        }
    }
}

/// The planner options the flags ask for (`unfused` given separately so the
/// bench can build both plans).
pub fn plan_options(args: &KernelArgs, unfused: bool) -> PlanOptions {
    let exp_shift = match args.exp_shift.as_str() {
        "running-max" => ExpShift::RunningMax,
        "two-pass" => ExpShift::TwoPass,
        _ => ExpShift::Auto,
    };
    let reload = if args.reload {
        Reload::Reload
    } else if args.block_store {
        Reload::BlockStore
    } else if args.recompute {
        Reload::Recompute
    } else {
        Reload::Auto
    };
    let toeplitz = match args.fft.as_str() {
        "never" => Toeplitz::Never,
        "always" => Toeplitz::Always,
        _ => Toeplitz::Auto,
    };
    PlanOptions {
        unfused,
        exp_shift,
        reload,
        scalar: args.scalar,
        toeplitz,
        wide: false,
    }
}

/// `DSL_DUMP=kernel,plan` prints those stages to stderr (the debugger).
fn dump(kernel: &Kernel, plan: &Plan) {
    let Ok(what) = std::env::var("DSL_DUMP") else {
        return;
    };
    for stage in what.split(',') {
        match stage.trim() {
            "kernel" => eprintln!("{kernel}"),
            "plan" => eprintln!("{plan}"),
            _ => {}
        }
    }
}

/// `passfold check`.
pub fn check(args: &KernelArgs) -> Result<bool> {
    Ok(match load(args)? {
        Some(l) => {
            println!("{}: ok", l.kernel.name);
            true
        }
        None => false,
    })
}

/// `passfold ir`.
pub fn ir(args: &KernelArgs) -> Result<bool> {
    Ok(match load(args)? {
        Some(l) => {
            print!("{}", l.kernel);
            true
        }
        None => false,
    })
}

/// `passfold plan`.
pub fn plan(args: &KernelArgs, json: bool) -> Result<bool> {
    let Some(l) = load(args)? else {
        return Ok(false);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&l.plan.to_json())?);
    } else {
        print!("{}", l.plan);
    }
    Ok(true)
}

/// `passfold clif`.
pub fn clif(args: &KernelArgs, target: &str, asm: bool) -> Result<bool> {
    let Some(l) = load(args)? else {
        return Ok(false);
    };
    let text = super::exec::clif_text(&l.plan, target, asm)?;
    if text.is_empty() {
        bail!("no code generated");
    }
    print!("{text}");
    Ok(true)
}

/// `passfold emit-rust`: the ahead-of-time Rust module of the plan.
pub fn emit_rust(args: &KernelArgs) -> Result<bool> {
    Ok(match emit_rust_text(args)? {
        Some(text) => {
            print!("{text}");
            true
        }
        None => false,
    })
}

/// What `passfold emit-rust` prints; `Ok(None)` after printing diagnostics.
pub fn emit_rust_text(args: &KernelArgs) -> Result<Option<String>> {
    let Some(l) = load(args)? else {
        return Ok(None);
    };
    let opts = passfold_aot::Options {
        source: Some(l.src.clone()),
        test_entry: false,
    };
    // The AOT code has full-width vectors: the cost model weighs them.
    let plan = passfold_dsl::plan(
        &l.kernel,
        PlanOptions {
            wide: true,
            ..plan_options(args, args.unfused)
        },
    );
    let text = passfold_aot::emit_pretty(&plan, &opts)?;
    let name = args
        .file
        .file_name()
        .map_or(String::new(), |f| f.to_string_lossy().into_owned());
    Ok(Some(format!(
        "// Generated by `passfold emit-rust {name}`: the plan below as safe Rust\n// (std only). Do not edit; regenerate instead.\n\n{text}"
    )))
}
