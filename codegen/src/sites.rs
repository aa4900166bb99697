//! Gather sites: the reads whose failure is a run-time error.
//!
//! A gather site is a `Load` node on a tensor without `pad` with at least
//! one `Index::Gather` subscript, or an affine subscript other than its
//! dimension's (a later element a plan reads ahead, `passfold_dsl::jam`,
//! which the plan keeps in range; checked all the same). Sites are numbered in increasing
//! node order; the generated function returns `site + 1` when the gathered
//! index of site `site` falls outside its dimension.

use passfold_dsl::{Handle, Index, Kernel, Node, Span, TensorId};

/// A read that can fail at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatherSite {
    /// The `Load` node.
    pub node: Handle<Node>,
    /// The tensor read.
    pub tensor: TensorId,
    /// The read's place in the source.
    pub span: Span,
}

/// The gather sites of `kernel`, in status-code order (code = position + 1).
pub fn gather_sites(kernel: &Kernel) -> Vec<GatherSite> {
    kernel
        .nodes
        .iter()
        .filter_map(|(h, node)| match node {
            Node::Load { tensor, index }
                if kernel.tensor(*tensor).pad.is_none()
                    && index.iter().enumerate().any(|(d, i)| match i {
                        Index::Gather(_) => true,
                        Index::Affine(a) => *a != kernel.tensor(*tensor).dims[d].0,
                    }) =>
            {
                Some(GatherSite {
                    node: h,
                    tensor: *tensor,
                    span: kernel.span(h),
                })
            }
            _ => None,
        })
        .collect()
}

/// The gather site a nonzero status code names, if any.
pub fn site_for_status(sites: &[GatherSite], status: i32) -> Option<&GatherSite> {
    usize::try_from(status)
        .ok()?
        .checked_sub(1)
        .and_then(|i| sites.get(i))
}
