//! The kernel catalogue of `shared/KERNELS.md`, written in the DSL in the
//! naive form the catalogue shows, one `.pf` file per kernel.
//!
//! The files are the source of truth (the CLI and benchmarks read them by
//! path); this crate embeds them so tests and tools can iterate over all of
//! them without touching the file system.

/// One catalogue kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueKernel {
    /// The kernel's name (and file stem).
    pub name: &'static str,
    /// The file name under `kernels/`.
    pub file: &'static str,
    /// The DSL text.
    pub source: &'static str,
    /// Sweeps over the reduced index per row that the catalogue asks of the
    /// fused plan (`None` for the FFT-based kernel).
    pub target_passes: Option<usize>,
}

macro_rules! catalogue {
    ($($name:literal => $passes:expr),* $(,)?) => {
        /// Every catalogue kernel, in the order of `KERNELS.md`.
        pub const CATALOGUE: &[CatalogueKernel] = &[
            $(CatalogueKernel {
                name: $name,
                file: concat!($name, ".pf"),
                source: include_str!(concat!("../", $name, ".pf")),
                target_passes: $passes,
            }),*
        ];
    };
}

catalogue! {
    "softmax" => Some(2),
    "softmax_t" => Some(2),
    "log_softmax" => Some(2),
    "logsumexp" => Some(1),
    "logsumexp_weighted" => Some(1),
    "cross_entropy" => Some(1),
    "cross_entropy_smoothed" => Some(1),
    "stablemax" => Some(2),
    "log_stablemax" => Some(2),
    "stablemax_cross_entropy" => Some(1),
    "z_loss" => Some(1),
    "layer_norm" => Some(2),
    "rms_norm" => Some(2),
    "topk_gate" => Some(2),
    "attention" => Some(1),
    "attention_bias" => Some(1),
    "kernelized_attention" => Some(1),
    "kernelized_attention_rpe" => None,
    "sinkhorn_step" => Some(1),
    "lion_step" => Some(1),
}

/// Looks a kernel up by name.
pub fn get(name: &str) -> Option<&'static CatalogueKernel> {
    CATALOGUE.iter().find(|k| k.name == name)
}
