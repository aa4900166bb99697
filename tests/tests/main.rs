//! passfold's integration tests: one test binary (matklad, "Delete Cargo
//! Integration Tests"), one module per boundary.

mod adversarial;
mod aot;
mod cli;
mod clif;
mod common;
mod diagnostics;
mod fuzz_corpus;
mod interp;
mod ir_snapshots;
mod macro_errors;
mod macro_kernels;
mod planner;
mod random_kernels;
mod toeplitz;
mod vector;
mod views;
