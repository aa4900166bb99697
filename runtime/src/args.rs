//! Arguments and their validation: everything checked before machine code runs.
//!
//! [`Arg`] is a tensor argument (data and shape). [`prepare`] checks a full
//! set of arguments against the kernel — element types, mutability, ranks,
//! lengths, extents bound from plain dimensions, affine dimensions recomputed
//! from the extents, overflow — allocates the temporaries, and returns a
//! [`Frame`]: the three arrays of the kernel ABI. A frame exists only for
//! arguments whose buffers have exactly the lengths of their layouts
//! (`passfold_dsl::Layout`), which is what makes calling the kernel sound.

use crate::CallError;
use passfold_dsl::{Kernel, ScalarType, TensorKind};
use smallvec::SmallVec;
use std::marker::PhantomData;

/// The tensor pointers of a call (inline up to 8 tensors: no allocation
/// for most kernels; a call costs a few hundred nanoseconds, and each heap
/// allocation and free is a noticeable part of that).
pub(crate) type Ptrs = SmallVec<[*mut u8; 8]>;
/// The extents of a call.
pub(crate) type Extents = SmallVec<[i64; 8]>;
/// The parameters of a call.
pub(crate) type Params = SmallVec<[f64; 4]>;
/// The scratch buffers a frame keeps alive.
type Temps = SmallVec<[Vec<u64>; 2]>;

/// The data of a tensor argument: a slice of one element type, shared
/// (inputs) or mutable (outputs, in-place arguments; inputs accept it too).
#[derive(Debug)]
#[allow(missing_docs)]
pub enum Data<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I32(&'a [i32]),
    F32Mut(&'a mut [f32]),
    F64Mut(&'a mut [f64]),
    I32Mut(&'a mut [i32]),
    /// IEEE half-precision storage for an `f32` input, converted to `f32`
    /// before the kernel runs (computed in `f32`).
    F16(&'a [half::f16]),
    /// bfloat16 storage for an `f32` input, converted to `f32` before the
    /// kernel runs (computed in `f32`).
    BF16(&'a [half::bf16]),
    /// Elements the call owns: an input copied out of a strided view.
    Owned(Owned),
    /// A contiguous copy of a strided output view, written back into the
    /// view when the call ends (also when it fails part way).
    Staged(Owned, WriteBack<'a>),
}

/// An owned buffer of one element type.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Owned {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
}

/// Copies a staged buffer back where it came from.
pub struct WriteBack<'a>(pub Box<dyn FnOnce(&Owned) + 'a>);

impl std::fmt::Debug for WriteBack<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteBack")
    }
}

impl Owned {
    fn ty(&self) -> ScalarType {
        match self {
            Owned::F32(_) => ScalarType::F32,
            Owned::F64(_) => ScalarType::F64,
            Owned::I32(_) => ScalarType::I32,
        }
    }

    fn len(&self) -> usize {
        match self {
            Owned::F32(v) => v.len(),
            Owned::F64(v) => v.len(),
            Owned::I32(v) => v.len(),
        }
    }

    fn base(&mut self) -> *mut u8 {
        match self {
            Owned::F32(v) => v.as_mut_ptr() as *mut u8,
            Owned::F64(v) => v.as_mut_ptr() as *mut u8,
            Owned::I32(v) => v.as_mut_ptr() as *mut u8,
        }
    }
}

macro_rules! data_from {
    ($t:ty, $shared:ident, $mutable:ident) => {
        impl<'a> From<&'a [$t]> for Data<'a> {
            fn from(s: &'a [$t]) -> Self {
                Data::$shared(s)
            }
        }
        impl<'a> From<&'a mut [$t]> for Data<'a> {
            fn from(s: &'a mut [$t]) -> Self {
                Data::$mutable(s)
            }
        }
        impl<'a> From<&'a Vec<$t>> for Data<'a> {
            fn from(s: &'a Vec<$t>) -> Self {
                Data::$shared(s)
            }
        }
        impl<'a> From<&'a mut Vec<$t>> for Data<'a> {
            fn from(s: &'a mut Vec<$t>) -> Self {
                Data::$mutable(s)
            }
        }
    };
}
data_from!(f32, F32, F32Mut);
data_from!(f64, F64, F64Mut);
data_from!(i32, I32, I32Mut);

/// Shared slices only: half-precision storage is for inputs.
macro_rules! half_from {
    ($t:ty, $variant:ident) => {
        impl<'a> From<&'a [$t]> for Data<'a> {
            fn from(s: &'a [$t]) -> Self {
                Data::$variant(s)
            }
        }
        impl<'a> From<&'a Vec<$t>> for Data<'a> {
            fn from(s: &'a Vec<$t>) -> Self {
                Data::$variant(s)
            }
        }
    };
}
half_from!(half::f16, F16);
half_from!(half::bf16, BF16);

impl Data<'_> {
    /// The element type the kernel computes in (`f32` for half-precision
    /// storage).
    pub fn ty(&self) -> ScalarType {
        match self {
            Data::Owned(o) | Data::Staged(o, _) => o.ty(),
            Data::F32(_) | Data::F32Mut(_) | Data::F16(_) | Data::BF16(_) => ScalarType::F32,
            Data::F64(_) | Data::F64Mut(_) => ScalarType::F64,
            Data::I32(_) | Data::I32Mut(_) => ScalarType::I32,
        }
    }

    /// Whether the slice is mutable.
    pub fn is_mut(&self) -> bool {
        matches!(
            self,
            Data::F32Mut(_) | Data::F64Mut(_) | Data::I32Mut(_) | Data::Staged(..)
        )
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(s) => s.len(),
            Data::F64(s) => s.len(),
            Data::I32(s) => s.len(),
            Data::F32Mut(s) => s.len(),
            Data::F64Mut(s) => s.len(),
            Data::I32Mut(s) => s.len(),
            Data::F16(s) => s.len(),
            Data::BF16(s) => s.len(),
            Data::Owned(o) | Data::Staged(o, _) => o.len(),
        }
    }

    /// Whether the data is half-precision storage (converted before the call).
    pub fn is_half(&self) -> bool {
        matches!(self, Data::F16(_) | Data::BF16(_))
    }

    /// Half-precision data widened to `f32`, else `None`.
    fn widened(&self) -> Option<Vec<f32>> {
        match self {
            Data::F16(s) => Some(s.iter().map(|h| h.to_f32()).collect()),
            Data::BF16(s) => Some(s.iter().map(|h| h.to_f32()).collect()),
            _ => None,
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The base address. The kernel writes through it only for mutable data
    /// (validation refuses shared slices for written tensors).
    fn base(&mut self) -> *mut u8 {
        match self {
            Data::F32(s) => s.as_ptr() as *mut u8,
            Data::F64(s) => s.as_ptr() as *mut u8,
            Data::I32(s) => s.as_ptr() as *mut u8,
            Data::F32Mut(s) => s.as_mut_ptr() as *mut u8,
            Data::F64Mut(s) => s.as_mut_ptr() as *mut u8,
            Data::I32Mut(s) => s.as_mut_ptr() as *mut u8,
            // Never handed to the kernel: `prepare` passes a widened copy.
            Data::F16(s) => s.as_ptr() as *mut u8,
            Data::BF16(s) => s.as_ptr() as *mut u8,
            Data::Owned(o) | Data::Staged(o, _) => o.base(),
        }
    }

    /// Whether the data must outlive the call inside its frame (owned
    /// copies and staged views).
    fn owned_by_call(&self) -> bool {
        matches!(self, Data::Owned(_) | Data::Staged(..))
    }
}

/// A tensor argument: its data and its shape (row-major, outermost first).
#[derive(Debug)]
pub struct Arg<'a> {
    /// The elements.
    pub data: Data<'a>,
    /// The length of each dimension.
    pub shape: Vec<usize>,
}

impl<'a> Arg<'a> {
    /// An argument from a slice (or `Vec`) and its shape.
    pub fn new(data: impl Into<Data<'a>>, shape: &[usize]) -> Self {
        Arg {
            data: data.into(),
            shape: shape.to_vec(),
        }
    }
}

/// The arrays of the kernel ABI for one call, borrowing the arguments' buffers.
pub(crate) struct Frame<'a> {
    pub tensors: Ptrs,
    pub extents: Extents,
    pub params: Params,
    /// `rows[0]..rows[1]`: the rows of `Plan::row_extent` this call computes
    /// (clamped by the code to the extent); `rows[2]`: the address of the
    /// barrier counter of a split-row call (0 otherwise), `rows[3]`: its
    /// thread count.
    pub rows: [i64; 4],
    /// Scratch memory of the temporaries, kept alive for the call.
    _temps: Temps,
    /// `f32` copies of half-precision inputs, kept alive for the call.
    _widened: Vec<Vec<f32>>,
    /// Owned and staged arguments, kept alive for the call; staged ones are
    /// written back when the frame drops.
    kept: Vec<Data<'a>>,
    _borrow: PhantomData<&'a mut ()>,
}

/// The extents a call binds (by extent id), after the checks of [`prepare`]
/// on argument count and each argument.
pub(crate) fn extents_of(
    kernel: &Kernel,
    args: &[Arg<'_>],
    explicit: &[Option<i64>],
) -> Result<Extents, CallError> {
    let n_args = kernel.arguments().count();
    if args.len() != n_args {
        return Err(CallError::ArgCount {
            expected: n_args,
            found: args.len(),
        });
    }
    for (arg, t) in args.iter().zip(kernel.arguments()) {
        check_arg(kernel, t.0 as usize, arg)?;
    }
    bind_extents(kernel, args, explicit)
}

/// Validates a call and builds its frame.
///
/// `args` are in `Kernel::arguments` order; `extents` holds explicit
/// bindings (by extent index), which take part in the consistency checks.
pub(crate) fn prepare<'a>(
    kernel: &Kernel,
    args: Vec<Arg<'a>>,
    explicit: &[Option<i64>],
    params: &[f64],
) -> Result<Frame<'a>, CallError> {
    let n_args = kernel.arguments().count();
    if args.len() != n_args {
        return Err(CallError::ArgCount {
            expected: n_args,
            found: args.len(),
        });
    }
    if params.len() != kernel.params.len() {
        return Err(CallError::ParamCount {
            expected: kernel.params.len(),
            found: params.len(),
        });
    }
    for (arg, t) in args.iter().zip(kernel.arguments()) {
        check_arg(kernel, t.0 as usize, arg)?;
    }
    let extents = bind_extents(kernel, &args, explicit)?;
    for (arg, t) in args.iter().zip(kernel.arguments()) {
        let tensor = &kernel.tensors[t.0 as usize];
        let mut elements: i64 = 1;
        for (d, (dim, &given)) in tensor.dims.iter().zip(&arg.shape).enumerate() {
            let len = dim.layout(&extents).map(|(_, n)| n);
            let Some(len) = len.filter(|n| i64::try_from(given).ok() == Some(*n)) else {
                return Err(match len {
                    None => CallError::TooLarge {
                        name: tensor.name.clone(),
                    },
                    Some(len) => CallError::DimMismatch {
                        arg: tensor.name.clone(),
                        dim: d,
                        form: passfold_dsl::lower::affine_text(&tensor.dims[d].0, &kernel.extents),
                        expected: len,
                        found: given,
                    },
                });
            };
            // The bound of `tensor_len`: the element count times 8 bytes
            // fits an `isize`.
            elements = elements
                .checked_mul(len)
                .filter(|n| n.checked_mul(8).is_some_and(|b| b <= isize::MAX as i64))
                .ok_or_else(|| CallError::TooLarge {
                    name: tensor.name.clone(),
                })?;
        }
    }
    let mut tensors: Ptrs = smallvec::smallvec![std::ptr::null_mut(); kernel.tensors.len()];
    let mut widened = Vec::new();
    let mut kept = Vec::new();
    for (mut arg, t) in args.into_iter().zip(kernel.arguments()) {
        let t = t.0 as usize;
        tensors[t] = match arg.data.widened() {
            Some(mut w) => {
                let p = w.as_mut_ptr() as *mut u8;
                widened.push(w);
                p
            }
            None => arg.data.base(),
        };
        if arg.data.owned_by_call() {
            // Moving the `Vec` keeps its heap buffer where `tensors[t]` points.
            kept.push(arg.data);
        }
    }
    let temps = alloc_temps(kernel, &extents, &mut tensors)?;
    Ok(Frame {
        tensors,
        extents,
        params: Params::from_slice(params),
        rows: [0, i64::MAX, 0, 1],
        _temps: temps,
        _widened: widened,
        kept,
        _borrow: PhantomData,
    })
}

impl<'a> Frame<'a> {
    /// A frame for the same call over `rows`, with temporaries of its own
    /// (so parallel parts of one call never share scratch memory).
    pub fn fork(&self, kernel: &Kernel, rows: [i64; 2]) -> Result<Frame<'a>, CallError> {
        // Temporaries of its own: the parent's are not shared.
        let mut tensors = self.tensors.clone();
        for (p, t) in tensors.iter_mut().zip(&kernel.tensors) {
            if t.kind == TensorKind::Temp {
                *p = std::ptr::null_mut();
            }
        }
        let temps = alloc_temps(kernel, &self.extents, &mut tensors)?;
        Ok(Frame {
            tensors,
            extents: self.extents.clone(),
            params: self.params.clone(),
            rows: [rows[0], rows[1], 0, 1],
            _temps: temps,
            _widened: Vec::new(),
            kept: Vec::new(),
            _borrow: PhantomData,
        })
    }
}

impl<'a> Frame<'a> {
    /// The frames of a split-row call (`passfold_dsl::threads`): one per
    /// thread, for `split` (the kernel with the hidden parameters, the slot
    /// extent and the partial-state scratch appended), sharing the
    /// arguments and every temporary; the first frame owns the temporaries.
    pub fn split(
        &self,
        split: &Kernel,
        threads: usize,
        counter: *const std::sync::atomic::AtomicI64,
        private: &[passfold_dsl::TensorId],
    ) -> Result<Vec<Frame<'a>>, CallError> {
        let mut extents = self.extents.clone();
        extents.resize(split.extents.len(), threads as i64);
        let mut tensors = self.tensors.clone();
        tensors.resize(split.tensors.len(), std::ptr::null_mut());
        // The plan's temporaries are this frame's, shared by the threads
        // (each writes its own chunk, their layouts do not depend on the
        // thread count); only the partial-state slots are new.
        let temps = alloc_temps(split, &extents, &mut tensors)?;
        let mut frames = Vec::with_capacity(threads);
        let mut temps = Some(temps);
        for t in 0..threads {
            let mut params = self.params.clone();
            params.extend([t as f64, threads as f64]);
            // Thread 0 keeps the frame's copy of each private state; the
            // others get their own.
            let mut tensors = tensors.clone();
            let mut own = temps.take().unwrap_or_default();
            if t > 0 {
                for &p in private {
                    let p = p.0 as usize;
                    tensors[p] = std::ptr::null_mut();
                }
                own.extend(alloc_temps(split, &extents, &mut tensors)?);
            }
            frames.push(Frame {
                tensors,
                extents: extents.clone(),
                params,
                rows: [0, i64::MAX, counter as i64, threads as i64],
                _temps: own,
                _widened: Vec::new(),
                kept: Vec::new(),
                _borrow: PhantomData,
            });
        }
        Ok(frames)
    }
}

impl Drop for Frame<'_> {
    fn drop(&mut self) {
        for data in self.kept.drain(..) {
            if let Data::Staged(buf, write_back) = data {
                (write_back.0)(&buf);
            }
        }
        for buf in self._temps.drain(..) {
            give_back(buf);
        }
    }
}

/// Scratch buffers kept for later calls on this thread: a fresh buffer of
/// tens of megabytes costs thousands of page faults (more than the kernel
/// that uses it), so buffers are reused. At most [`POOL_BUFFERS`] buffers
/// and [`POOL_BYTES`] bytes per thread are kept.
const POOL_BUFFERS: usize = 8;
const POOL_BYTES: usize = 1 << 30;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u64>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A scratch buffer of `words` words: a pooled one if one is large enough
/// (its contents are whatever an earlier kernel left there, plain numbers
/// every plan writes before it reads), else a new zeroed one.
fn take_buffer(words: usize) -> Option<Vec<u64>> {
    let pooled = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let best = pool
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= words)
            .min_by_key(|(_, b)| b.len())
            .map(|(i, _)| i)?;
        Some(pool.swap_remove(best))
    });
    if let Some(mut buf) = pooled {
        buf.truncate(words);
        return Some(buf);
    }
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words).ok()?;
    buf.resize(words, 0);
    Some(buf)
}

fn give_back(buf: Vec<u64>) {
    if buf.is_empty() {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let bytes: usize = pool.iter().map(|b| b.capacity() * 8).sum();
        if pool.len() < POOL_BUFFERS && bytes + buf.capacity() * 8 <= POOL_BYTES {
            pool.push(buf);
        }
    });
}

/// The element count of `tensor` at `extents` (as [`Layout::compute`]'s
/// `len`, without building the layout); `None` on overflow.
fn tensor_len(tensor: &passfold_dsl::Tensor, extents: &[i64]) -> Option<i64> {
    let mut len: i64 = 1;
    for d in &tensor.dims {
        let (_, n) = d.layout(extents)?;
        len = len.checked_mul(n)?;
    }
    // Sizes must fit the machine: the element count times 8 bytes in an isize.
    len.checked_mul(8).filter(|b| *b <= isize::MAX as i64)?;
    Some(len)
}

/// 64-byte cache lines, in words of the scratch buffers.
const LINE_WORDS: usize = 8;

/// Allocates scratch for every temporary that `tensors` does not point at
/// yet, all in one pooled buffer, and points `tensors` at it. Each
/// temporary starts on a cache line and is followed by at least one line
/// of slack, so threads updating private copies (split rows) never write
/// one line.
fn alloc_temps(
    kernel: &Kernel,
    extents: &[i64],
    tensors: &mut [*mut u8],
) -> Result<Temps, CallError> {
    let mut words = 0usize;
    let mut placed: SmallVec<[(usize, usize); 8]> = SmallVec::new();
    for (t, tensor) in kernel.tensors.iter().enumerate() {
        if tensor.kind != TensorKind::Temp || !tensors[t].is_null() {
            continue;
        }
        let too_large = || CallError::TooLarge {
            name: tensor.name.clone(),
        };
        let len = tensor_len(tensor, extents).ok_or_else(too_large)?;
        let bytes = usize::try_from(len)
            .ok()
            .and_then(|n| n.checked_mul(tensor.ty.size_bytes()))
            .ok_or_else(too_large)?;
        placed.push((t, words));
        words = bytes
            .div_ceil(8 * LINE_WORDS)
            .checked_add(1)
            .and_then(|lines| lines.checked_mul(LINE_WORDS))
            .and_then(|w| w.checked_add(words))
            .ok_or_else(too_large)?;
    }
    let Some(&(t0, _)) = placed.first() else {
        return Ok(Temps::new());
    };
    // One line more, to reach the first line boundary.
    let total = words
        .checked_add(LINE_WORDS)
        .ok_or_else(|| CallError::TooLarge {
            name: kernel.tensors[t0].name.clone(),
        })?;
    let mut buf = take_buffer(total).ok_or_else(|| CallError::Alloc {
        tensor: kernel.tensors[t0].name.clone(),
        bytes: total.saturating_mul(8),
    })?;
    let misalign = (buf.as_ptr() as usize / 8) % LINE_WORDS;
    let first = (LINE_WORDS - misalign) % LINE_WORDS;
    for (t, offset) in placed {
        tensors[t] = buf[first + offset..].as_mut_ptr() as *mut u8;
    }
    Ok(smallvec::smallvec![buf])
}

/// Type, mutability, rank and length of one argument.
fn check_arg(kernel: &Kernel, t: usize, arg: &Arg<'_>) -> Result<(), CallError> {
    let tensor = &kernel.tensors[t];
    let name = || tensor.name.clone();
    if arg.data.is_half() && (tensor.kind != TensorKind::Input || tensor.ty != ScalarType::F32) {
        return Err(CallError::HalfNotInput { arg: name() });
    }
    if arg.data.ty() != tensor.ty {
        return Err(CallError::WrongType {
            arg: name(),
            expected: tensor.ty,
            found: arg.data.ty(),
        });
    }
    if tensor.kind != TensorKind::Input && !arg.data.is_mut() {
        return Err(CallError::NotMutable { arg: name() });
    }

    if arg.shape.len() != tensor.dims.len() {
        return Err(CallError::WrongRank {
            arg: name(),
            expected: tensor.dims.len(),
            found: arg.shape.len(),
        });
    }
    let elements = arg
        .shape
        .iter()
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|n| n.checked_mul(8).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| CallError::TooLarge { name: name() })?;
    if elements != arg.data.len() {
        return Err(CallError::Length {
            arg: name(),
            shape: arg.shape.clone(),
            expected: elements,
            found: arg.data.len(),
        });
    }
    Ok(())
}

/// The extents, from explicit bindings and the plain dimensions of arguments.
fn bind_extents(
    kernel: &Kernel,
    args: &[Arg<'_>],
    explicit: &[Option<i64>],
) -> Result<Extents, CallError> {
    // Each bound value and the tensor that bound it (`None`: an explicit
    // binding); names are cloned only for an error.
    let mut bound: SmallVec<[Option<(i64, Option<usize>)>; 8]> =
        explicit.iter().map(|v| v.map(|v| (v, None))).collect();
    bound.resize(kernel.extents.len(), None);
    for (arg, t) in args.iter().zip(kernel.arguments()) {
        let t = t.0 as usize;
        let tensor = &kernel.tensors[t];
        for (d, (dim, &given)) in tensor.dims.iter().zip(&arg.shape).enumerate() {
            let Some(e) = dim.0.as_var() else { continue };
            let e = e.0 as usize;
            let given = i64::try_from(given).map_err(|_| CallError::TooLarge {
                name: tensor.name.clone(),
            })?;
            match bound[e] {
                None => bound[e] = Some((given, Some(t))),
                Some((value, _)) if value == given => {}
                Some((value, from)) => {
                    return Err(CallError::ExtentConflict {
                        extent: kernel.extents[e].name.clone(),
                        value,
                        from: from.map_or_else(
                            || "extent".to_string(),
                            |f| kernel.tensors[f].name.clone(),
                        ),
                        arg: tensor.name.clone(),
                        dim: d,
                        found: given,
                    });
                }
            }
        }
    }
    bound
        .into_iter()
        .enumerate()
        .map(|(e, b)| {
            b.map(|(v, _)| v).ok_or_else(|| CallError::UnboundExtent {
                extent: kernel.extents[e].name.clone(),
            })
        })
        .collect()
}

/// What a call with explicit extents needs of a kernel, computed once
/// ([`Direct::new`]): the extent of every dimension of every argument and
/// temporary. Only for kernels whose dimensions are all plain extents
/// (`x[b, i]`, not `c[n + m - 1]`), where a tensor's element count is the
/// product of its extents and nothing else needs checking.
#[derive(Debug)]
pub(crate) struct Direct {
    /// Per argument (in `Kernel::arguments` order): its tensor, the extent
    /// of each dimension.
    args: Vec<(usize, SmallVec<[usize; 4]>)>,
    /// Per temporary: its tensor, the extent of each dimension, the size of
    /// an element in bytes.
    temps: Vec<(usize, SmallVec<[usize; 4]>, usize)>,
    /// The number of tensors.
    tensors: usize,
}

/// The arrays of the kernel ABI of a validated call: built only from a
/// [`Frame`] or by [`Direct::run`].
pub(crate) struct Arrays<'f> {
    pub tensors: &'f [*mut u8],
    pub extents: &'f [i64],
    pub params: &'f [f64],
    pub rows: &'f [i64; 4],
}

/// A cache line of scratch memory (temporaries start on one).
#[derive(Clone, Copy)]
#[repr(align(64))]
struct Line(#[allow(dead_code)] [u64; LINE_WORDS]); // written and read by the kernel only

/// Lines of temporaries a direct call keeps on the stack (larger ones come
/// from the pool, as in [`prepare`]); zeroed per call.
const STACK_LINES: usize = 8;

impl Direct {
    /// `None` when some dimension of an argument or temporary is not a
    /// plain extent.
    pub fn new(kernel: &Kernel) -> Option<Direct> {
        let mut args = Vec::new();
        let mut temps = Vec::new();
        for (t, tensor) in kernel.tensors.iter().enumerate() {
            let dims = tensor
                .dims
                .iter()
                .map(|d| d.0.as_var().map(|e| e.0 as usize))
                .collect::<Option<SmallVec<[usize; 4]>>>()?;
            if tensor.kind == TensorKind::Temp {
                temps.push((t, dims, tensor.ty.size_bytes()));
            } else {
                args.push((t, dims));
            }
        }
        Some(Direct {
            args,
            temps,
            tensors: kernel.tensors.len(),
        })
    }

    /// Whether [`Direct::run`] takes `data` (plain slices only: no
    /// half-precision storage, owned copies or staged views).
    pub fn takes(&self, data: &[Data<'_>]) -> bool {
        data.len() == self.args.len() && data.iter().all(|d| !d.is_half() && !d.owned_by_call())
    }

    /// Validates a call with explicit `extents` (by extent) and runs
    /// `code` on it: each argument's type, mutability and length (the
    /// product of its extents), then temporaries (on the stack when small).
    /// `data` must be [`Direct::takes`]; `extents` and `params` have the
    /// kernel's counts (checked by the caller).
    pub fn run(
        &self,
        kernel: &Kernel,
        code: &crate::call::JitCode,
        extents: &[i64],
        data: &mut [Data<'_>],
        params: &[f64],
    ) -> Result<i32, CallError> {
        let mut tensors: Ptrs = smallvec::smallvec![std::ptr::null_mut(); self.tensors];
        for ((t, dims), arg) in self.args.iter().zip(data.iter_mut()) {
            let tensor = &kernel.tensors[*t];
            let name = || tensor.name.clone();
            if arg.ty() != tensor.ty {
                return Err(CallError::WrongType {
                    arg: name(),
                    expected: tensor.ty,
                    found: arg.ty(),
                });
            }
            if tensor.kind != TensorKind::Input && !arg.is_mut() {
                return Err(CallError::NotMutable { arg: name() });
            }
            let expected =
                elements(dims, extents).ok_or_else(|| CallError::TooLarge { name: name() })?;
            if expected != arg.len() {
                return Err(CallError::Length {
                    arg: name(),
                    shape: dims.iter().map(|&e| extents[e] as usize).collect(),
                    expected,
                    found: arg.len(),
                });
            }
            tensors[*t] = arg.base();
        }
        // Each temporary on lines of its own (at least one).
        let mut lines = 0usize;
        let mut placed: SmallVec<[(usize, usize); 8]> = SmallVec::new();
        for (t, dims, size) in &self.temps {
            let too_large = || CallError::TooLarge {
                name: kernel.tensors[*t].name.clone(),
            };
            let bytes = elements(dims, extents)
                .and_then(|n| n.checked_mul(*size))
                .ok_or_else(too_large)?;
            placed.push((*t, lines));
            lines = lines
                .checked_add(bytes.div_ceil(8 * LINE_WORDS).max(1))
                .ok_or_else(too_large)?;
        }
        let mut stack = [Line([0; LINE_WORDS]); STACK_LINES];
        let mut pooled = None;
        if lines <= STACK_LINES {
            for &(t, at) in &placed {
                tensors[t] = stack[at..].as_mut_ptr() as *mut u8;
            }
        } else {
            let too_large = || CallError::TooLarge {
                name: kernel.tensors[placed[0].0].name.clone(),
            };
            let words = lines
                .checked_mul(LINE_WORDS)
                .and_then(|w| w.checked_add(LINE_WORDS))
                .ok_or_else(too_large)?;
            let mut buf = take_buffer(words).ok_or_else(|| CallError::Alloc {
                tensor: kernel.tensors[placed[0].0].name.clone(),
                bytes: words.saturating_mul(8),
            })?;
            let misalign = (buf.as_ptr() as usize / 8) % LINE_WORDS;
            let first = (LINE_WORDS - misalign) % LINE_WORDS;
            for &(t, at) in &placed {
                tensors[t] = buf[first + at * LINE_WORDS..].as_mut_ptr() as *mut u8;
            }
            pooled = Some(buf);
        }
        // Every row, on one thread.
        let status = code.invoke_arrays(&Arrays {
            tensors: &tensors,
            extents,
            params,
            rows: &[0, i64::MAX, 0, 1],
        });
        if let Some(buf) = pooled {
            give_back(buf);
        }
        Ok(status)
    }
}

/// The element count of a tensor with these extents, if its bytes (at 8
/// per element at most) fit an `isize`.
fn elements(dims: &[usize], extents: &[i64]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &e| {
            acc.checked_mul(usize::try_from(extents[e]).ok()?)
        })
        .filter(|n| n.checked_mul(8).is_some_and(|b| b <= isize::MAX as usize))
}
