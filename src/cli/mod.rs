//! The `passfold` command-line tool, as a library module so that tests can
//! drive it in-process. `src/main.rs` only calls [`main`].
//!
//! Every subcommand takes a kernel file; `--const k=V` sets compile-time
//! constants and `--f64` compiles the kernel's `f32` as `f64`.

pub mod bench;
pub mod commands;
pub mod exec;
pub mod run;
pub mod selftest;
pub mod tensor;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "passfold",
    version,
    about = "Derive fused reduction kernels from index notation and JIT them"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every subcommand that reads a kernel.
#[derive(Args, Clone)]
pub struct KernelArgs {
    /// The kernel file (`kernels/softmax.pf`).
    pub file: PathBuf,
    /// A compile-time constant, `NAME=VALUE` (repeatable).
    #[arg(long = "const", value_name = "NAME=VALUE")]
    pub consts: Vec<String>,
    /// Compile the kernel's `f32` tensors and parameters as `f64`.
    #[arg(long)]
    pub f64: bool,
    /// Use the unfused plan (one loop nest per statement).
    #[arg(long)]
    pub unfused: bool,
    /// How fused exp-shifted sums keep their range: `auto`, `running-max` or `two-pass`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "running-max", "two-pass"])]
    pub exp_shift: String,
    /// Store values an output sweep shares with an earlier sweep and reload them.
    #[arg(long, conflicts_with = "recompute")]
    pub reload: bool,
    /// Scalar code only: no vector loops (the JIT then computes in the
    /// interpreter's order, bit for bit).
    #[arg(long)]
    pub scalar: bool,
    /// Always recompute shared values in output sweeps.
    #[arg(long)]
    pub recompute: bool,
    /// Store an exp-shifted sum's terms during the running max's sweep and
    /// rescale them per block in the output sweep (one `exp` per element,
    /// the input read once).
    #[arg(long, conflicts_with_all = ["reload", "recompute"])]
    pub block_store: bool,
    /// Toeplitz products (`Σ_j c[j - i]·u_j`) by FFT: `auto` (chosen per
    /// call by the cost model), `never` or `always`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "never", "always"])]
    pub fft: String,
}

#[derive(Subcommand)]
pub enum Command {
    /// Parse and check a kernel; exit 1 with diagnostics on error.
    Check(KernelArgs),
    /// Print the checked index-notation IR.
    Ir(KernelArgs),
    /// Print the plan.
    Plan {
        #[command(flatten)]
        kernel: KernelArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the Cranelift IR of the compiled kernel.
    Clif {
        #[command(flatten)]
        kernel: KernelArgs,
        /// `host`, `x86_64` (baseline flags) or `aarch64`.
        #[arg(long, default_value = "host")]
        target: String,
        /// Print the machine code (Cranelift's register-allocated listing) instead.
        #[arg(long)]
        asm: bool,
    },
    /// Print the kernel as a self-contained Rust module (the ahead-of-time
    /// back end: the plan's loops at LLVM's full vector width, dispatched
    /// by CPU level at run time), ready to vendor into a crate.
    EmitRust {
        #[command(flatten)]
        kernel: KernelArgs,
    },
    /// Run a kernel on `.npy` inputs and write `.npy` outputs.
    Run {
        #[command(flatten)]
        kernel: KernelArgs,
        /// An input tensor, `NAME=PATH.npy` (repeatable).
        #[arg(long = "input", value_name = "NAME=PATH")]
        inputs: Vec<String>,
        /// A scalar parameter, `NAME=VALUE` (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Where to write an output, `NAME=PATH.npy` (repeatable).
        #[arg(long = "output", value_name = "NAME=PATH")]
        outputs: Vec<String>,
        /// Run the reference interpreter (f64) instead of machine code.
        #[arg(long)]
        interpret: bool,
    },
    /// Generate random kernels and check the JIT, the fused and the unfused
    /// plans against the f64 interpreter; print what was tried and found.
    Selftest {
        /// How many kernels (0: no limit; with --seconds 0 too, 1,000).
        #[arg(long, default_value_t = 0)]
        kernels: usize,
        /// How long to run, in seconds (0: no limit).
        #[arg(long, default_value_t = 0.0)]
        seconds: f64,
        /// The first seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Compile a kernel, run it on generated data, print its IR, plan and timings.
    Bench {
        #[command(flatten)]
        kernel: KernelArgs,
        /// An extent, `NAME=N` (repeatable); others get defaults.
        #[arg(long = "size", value_name = "NAME=N")]
        sizes: Vec<String>,
        /// A scalar parameter, `NAME=VALUE` (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Timed repetitions (default: as many as fit in about a second, at most 1000).
        #[arg(long)]
        iters: Option<usize>,
        /// Skip the comparison with the reference interpreter.
        #[arg(long)]
        no_verify: bool,
        /// Threads: rows split over them, or one long row split by the
        /// combine laws when there are fewer rows than threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Bake every extent's size into the code (`compile_specialized`).
        #[arg(long)]
        specialize: bool,
        /// Print one JSON object with the measurements instead of text.
        #[arg(long)]
        json: bool,
        /// Float inputs are uniform in [-RANGE, RANGE) (the default is wide
        /// enough that an unshifted `exp` would overflow).
        #[arg(long, default_value_t = 100.0)]
        range: f64,
    },
}

/// Runs the tool on command-line arguments (the first is the program name).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match execute(cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs one parsed command: `Ok(false)` when the kernel has diagnostics
/// (already printed), `Err` for any other failure.
pub fn execute(command: Command) -> Result<bool> {
    match command {
        Command::Check(k) => commands::check(&k),
        Command::Ir(k) => commands::ir(&k),
        Command::Plan { kernel, json } => commands::plan(&kernel, json),
        Command::Clif {
            kernel,
            target,
            asm,
        } => commands::clif(&kernel, &target, asm),
        Command::EmitRust { kernel } => commands::emit_rust(&kernel),
        Command::Run {
            kernel,
            inputs,
            params,
            outputs,
            interpret,
        } => run::run(&kernel, &inputs, &params, &outputs, interpret),
        Command::Selftest {
            kernels,
            seconds,
            seed,
        } => selftest::selftest(kernels, seconds, seed),
        Command::Bench {
            kernel,
            sizes,
            params,
            iters,
            no_verify,
            threads,
            specialize,
            range,
            json,
        } => bench::bench(
            &kernel,
            &sizes,
            &params,
            iters,
            bench::Options {
                verify: !no_verify,
                threads,
                specialize,
                json,
                range,
            },
        ),
    }
}

/// Parses and runs a command line, returning failures instead of printing
/// them (for tests that drive the tool in-process).
pub fn run_args<I, T>(args: I) -> Result<bool>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args)?;
    execute(cli.command)
}
