//! ndarray views as arguments (feature `ndarray`).
//!
//! A view in standard (row-major, contiguous) layout is passed as the slice
//! it is, without copying. Any other view (transposed, sliced with steps,
//! broadcast) is correct too, through a copy: an input is copied into a
//! contiguous buffer before the call; an output or in-place view is staged
//! in a contiguous buffer (filled with its current elements) and written
//! back into the view when the call ends.

use crate::args::{Arg, Data, Owned, WriteBack};
use ndarray::{ArrayView, ArrayViewMut, Dimension};

/// Element types a kernel argument can have (`f32`, `f64`, `i32`).
pub trait Element: Copy + 'static {
    /// A shared slice as argument data.
    fn shared(s: &[Self]) -> Data<'_>;
    /// A mutable slice as argument data.
    fn mutable(s: &mut [Self]) -> Data<'_>;
    /// An owned buffer.
    fn owned(v: Vec<Self>) -> Owned;
    /// The elements of an owned buffer of this type (`None` for another).
    fn elements(o: &Owned) -> Option<&[Self]>;
}

macro_rules! element {
    ($t:ty, $shared:ident, $mutable:ident, $owned:ident) => {
        impl Element for $t {
            fn shared(s: &[Self]) -> Data<'_> {
                Data::$shared(s)
            }
            fn mutable(s: &mut [Self]) -> Data<'_> {
                Data::$mutable(s)
            }
            fn owned(v: Vec<Self>) -> Owned {
                Owned::$owned(v)
            }
            fn elements(o: &Owned) -> Option<&[Self]> {
                match o {
                    Owned::$owned(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
element!(f32, F32, F32Mut, F32);
element!(f64, F64, F64Mut, F64);
element!(i32, I32, I32Mut, I32);

impl<'a> Arg<'a> {
    /// An input from an ndarray view (shape from the view).
    pub fn view<T: Element, D: Dimension>(v: ArrayView<'a, T, D>) -> Arg<'a> {
        let shape = v.shape().to_vec();
        let data = match v.to_slice() {
            Some(s) => T::shared(s),
            None => Data::Owned(T::owned(v.iter().copied().collect())),
        };
        Arg { data, shape }
    }

    /// An output or in-place argument from a mutable ndarray view.
    pub fn view_mut<T: Element, D: Dimension>(v: ArrayViewMut<'a, T, D>) -> Arg<'a> {
        let shape = v.shape().to_vec();
        let v = v.into_dyn();
        if v.is_standard_layout() {
            // A standard-layout view is one contiguous slice; were ndarray
            // ever to disagree, the empty data makes the call fail with a
            // length error naming the argument.
            let data = match v.into_slice() {
                Some(s) => T::mutable(s),
                None => Data::Owned(T::owned(Vec::new())),
            };
            return Arg { data, shape };
        }
        let buf = T::owned(v.iter().copied().collect());
        let mut view = v;
        let write_back = WriteBack(Box::new(move |o: &Owned| {
            if let Some(elements) = T::elements(o) {
                for (d, s) in view.iter_mut().zip(elements) {
                    *d = *s;
                }
            }
        }));
        Arg {
            data: Data::Staged(buf, write_back),
            shape,
        }
    }
}
