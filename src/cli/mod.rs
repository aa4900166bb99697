//! The subcommands of the `passfold` tool.

pub mod bench;
pub mod commands;
pub mod exec;
pub mod run;
pub mod tensor;
