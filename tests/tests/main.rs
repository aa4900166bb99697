//! passfold's integration tests: one test binary (matklad, "Delete Cargo
//! Integration Tests"), one module per boundary.

mod cli;
mod clif;
mod common;
mod diagnostics;
mod interp;
mod ir_snapshots;
mod planner;
