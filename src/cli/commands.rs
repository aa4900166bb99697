//! `check`, `ir`, `plan` and `clif`: the inspection subcommands.

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
