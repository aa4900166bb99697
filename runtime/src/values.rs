//! Calls on `f64` values: a convenience for tools and tests that hold every
//! tensor as `f64` (the interpreter's representation).

use crate::{Arg, CallError, CompiledKernel};
use passfold_dsl::ScalarType;

enum Buf {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
}

impl CompiledKernel {
    /// Calls the kernel on values given as `f64` (one buffer per argument in
    /// `Kernel::arguments` order, converted to each tensor's type; an empty
    /// buffer stands for zeros), with the shapes the extents give, and
    /// returns every argument after the call as `f64`. With more than one
    /// thread, a row is split at any size ([`CompiledKernel::call_split`]),
    /// so tests reach the split code on small rows.
    pub fn call_f64(
        &self,
        extents: &[i64],
        args: &[Vec<f64>],
        params: &[f64],
        threads: usize,
    ) -> Result<Vec<Vec<f64>>, CallError> {
        let kernel = self.kernel();
        let mut bufs = Vec::new();
        for (id, values) in kernel.arguments().zip(args) {
            let t = kernel.tensor(id);
            let shape = passfold_dsl::shape_of(t, extents).ok_or_else(|| CallError::TooLarge {
                name: t.name.clone(),
            })?;
            let n: usize = shape.iter().product();
            let filled;
            let values = if values.is_empty() && n > 0 {
                filled = vec![0.0; n];
                &filled
            } else {
                values
            };
            let buf = match t.ty {
                ScalarType::F32 => Buf::F32(values.iter().map(|&v| v as f32).collect()),
                ScalarType::I32 => Buf::I32(values.iter().map(|&v| v as i32).collect()),
                _ => Buf::F64(values.clone()),
            };
            bufs.push((buf, shape));
        }
        let call_args: Vec<Arg<'_>> = bufs
            .iter_mut()
            .map(|(b, shape)| match b {
                Buf::F32(v) => Arg::new(v.as_mut_slice(), shape),
                Buf::F64(v) => Arg::new(v.as_mut_slice(), shape),
                Buf::I32(v) => Arg::new(v.as_mut_slice(), shape),
            })
            .collect();
        self.call_split(call_args, params, threads)?;
        Ok(bufs
            .into_iter()
            .map(|(b, _)| match b {
                Buf::F32(v) => v.into_iter().map(f64::from).collect(),
                Buf::F64(v) => v,
                Buf::I32(v) => v.into_iter().map(f64::from).collect(),
            })
            .collect())
    }
}
