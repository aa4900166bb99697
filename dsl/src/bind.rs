//! Binding extents from argument shapes.
//!
//! Every extent must be the length of some dimension of an argument that is
//! declared as that plain extent (`x: f32[b, i]` binds `b` and `i`); affine
//! dimensions (`r: f32[j - i]`) are then checked against the bound values.
//! The same rules serve the interpreter, the CLI and the runtime.

use crate::interp::Layout;
use crate::ir::*;

/// Why argument shapes do not fit a kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// Wrong number of argument tensors.
    #[error("the kernel takes {expected} tensor arguments, found {found}")]
    Arity {
        /// Expected count.
        expected: usize,
        /// Given count.
        found: usize,
    },
    /// An argument has the wrong number of dimensions.
    #[error("`{tensor}` has {expected} dimension(s), the argument has {found}")]
    Rank {
        /// The argument.
        tensor: String,
        /// Declared rank.
        expected: usize,
        /// Given rank.
        found: usize,
    },
    /// Two arguments disagree on an extent.
    #[error(
        "extent `{extent}` is {value} in dimension {dim} of `{tensor}` but {previous} in `{previous_tensor}`"
    )]
    Conflict {
        /// The extent.
        extent: String,
        /// The argument where the conflict shows.
        tensor: String,
        /// Its dimension.
        dim: usize,
        /// Its length there.
        value: usize,
        /// The argument that bound it first.
        previous_tensor: String,
        /// The value bound first.
        previous: i64,
    },
    /// No argument determines an extent.
    #[error(
        "extent `{extent}` is not the plain dimension of any argument, so no shape determines it"
    )]
    Unbound {
        /// The extent.
        extent: String,
    },
    /// An affine dimension has the wrong length.
    #[error("dimension {dim} of `{tensor}` (`{form}`) must have length {expected}, found {found}")]
    Affine {
        /// The argument.
        tensor: String,
        /// The dimension.
        dim: usize,
        /// The dimension's declared form.
        form: String,
        /// Its length at the bound extents.
        expected: i64,
        /// The given length.
        found: usize,
    },
    /// A size does not fit in memory addresses.
    #[error("`{tensor}` would have more elements than memory can address")]
    TooLarge {
        /// The tensor.
        tensor: String,
    },
}

/// Binds every extent of `kernel` from the shapes of its argument tensors
/// (one shape per [`Kernel::arguments`] entry, in that order; `None` for an
/// output whose shape should follow from the others) and checks every given
/// shape against the result. Returns the extent values in [`Kernel::extents`] order.
pub fn bind_extents(kernel: &Kernel, shapes: &[Option<&[usize]>]) -> Result<Vec<i64>, BindError> {
    let args: Vec<TensorId> = kernel.arguments().collect();
    if args.len() != shapes.len() {
        return Err(BindError::Arity {
            expected: args.len(),
            found: shapes.len(),
        });
    }
    let mut values: Vec<Option<(i64, TensorId)>> = vec![None; kernel.extents.len()];
    for (&id, shape) in args.iter().zip(shapes) {
        let Some(shape) = shape else { continue };
        let t = kernel.tensor(id);
        if t.dims.len() != shape.len() {
            return Err(BindError::Rank {
                tensor: t.name.clone(),
                expected: t.dims.len(),
                found: shape.len(),
            });
        }
        for (d, (dim, &len)) in t.dims.iter().zip(shape.iter()).enumerate() {
            let Some(e) = dim.0.as_var() else { continue };
            let value = i64::try_from(len).map_err(|_| BindError::TooLarge {
                tensor: t.name.clone(),
            })?;
            match values[e.0 as usize] {
                None => values[e.0 as usize] = Some((value, id)),
                Some((prev, prev_id)) if prev != value => {
                    return Err(BindError::Conflict {
                        extent: kernel.extent(e).name.clone(),
                        tensor: t.name.clone(),
                        dim: d,
                        value: len,
                        previous_tensor: kernel.tensor(prev_id).name.clone(),
                        previous: prev,
                    });
                }
                Some(_) => {}
            }
        }
    }
    let mut extents = Vec::with_capacity(values.len());
    for (e, v) in kernel.extents.iter().zip(&values) {
        match v {
            Some((v, _)) => extents.push(*v),
            None => {
                return Err(BindError::Unbound {
                    extent: e.name.clone(),
                });
            }
        }
    }
    for (&id, shape) in args.iter().zip(shapes) {
        let Some(shape) = shape else { continue };
        let t = kernel.tensor(id);
        for (d, (dim, &len)) in t.dims.iter().zip(shape.iter()).enumerate() {
            let (_, expected) = dim.layout(&extents).ok_or_else(|| BindError::TooLarge {
                tensor: t.name.clone(),
            })?;
            if expected != len as i64 {
                return Err(BindError::Affine {
                    tensor: t.name.clone(),
                    dim: d,
                    form: crate::lower::affine_text(&dim.0, &kernel.extents),
                    expected,
                    found: len,
                });
            }
        }
    }
    for t in &kernel.tensors {
        if Layout::compute(t, &extents).is_none() {
            return Err(BindError::TooLarge {
                tensor: t.name.clone(),
            });
        }
    }
    Ok(extents)
}

/// The shape of `tensor` at bound extents (dimension lengths), `None` on overflow.
pub fn shape_of(tensor: &Tensor, extents: &[i64]) -> Option<Vec<usize>> {
    tensor
        .dims
        .iter()
        .map(|d| d.layout(extents).and_then(|(_, n)| usize::try_from(n).ok()))
        .collect()
}

/// The length of the smallest dimension that a load of `tensor` subscripts
/// (as a gather), if any: the exclusive bound its `i32` values must respect.
pub fn gather_limit(kernel: &Kernel, tensor: TensorId, extents: &[i64]) -> Option<i64> {
    let mut limit: Option<i64> = None;
    for (_, node) in kernel.nodes.iter() {
        let Node::Load {
            tensor: outer,
            index,
        } = node
        else {
            continue;
        };
        for (d, idx) in index.iter().enumerate() {
            let Index::Gather(g) = idx else { continue };
            if matches!(&kernel.nodes[*g], Node::Load { tensor: t, .. } if *t == tensor)
                && let Some((_, len)) = kernel.tensor(*outer).dims[d].layout(extents)
            {
                limit = Some(limit.map_or(len, |l| l.min(len)));
            }
        }
    }
    limit
}
