//! ndarray views as arguments: contiguous views borrowed, strided views
//! copied (inputs) or staged and written back (outputs), all giving the
//! results of plain slices.

use ndarray::{Array2, ShapeBuilder};
use passfold_runtime::Arg;

const SOFTMAX: &str = "kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
    m[b] = max[i](x[b, i]);
    s[b] = sum[i](exp(x[b, i] - m[b]));
    y[b, i] = exp(x[b, i] - m[b]) / s[b];
}";

fn softmax() -> passfold_runtime::CompiledKernel {
    let kernel = passfold_dsl::check(SOFTMAX, &Default::default()).expect("checks");
    passfold_runtime::compile(&passfold_dsl::plan(&kernel, Default::default())).expect("compiles")
}

#[test]
fn views_of_any_layout_give_the_slice_results() {
    let k = softmax();
    let (b, i) = (3usize, 11usize);
    let x = Array2::from_shape_fn((b, i), |(r, c)| ((r * 7 + c * 3) % 13) as f32 * 0.9 - 5.0);
    let flat: Vec<f32> = x.iter().copied().collect();
    let mut want = vec![0.0f32; b * i];
    k.call(
        vec![Arg::new(&flat, &[b, i]), Arg::new(&mut want, &[b, i])],
        &[],
    )
    .unwrap();

    // Contiguous input and output.
    let mut y = Array2::<f32>::zeros((b, i));
    k.call(vec![Arg::view(x.view()), Arg::view_mut(y.view_mut())], &[])
        .unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), want);

    // A transposed (strided) input: the transpose of an (i, b) array.
    let xt = Array2::from_shape_fn((i, b), |(c, r)| x[[r, c]]);
    let strided = xt.t();
    assert!(!strided.is_standard_layout());
    let mut y = Array2::<f32>::zeros((b, i));
    k.call(vec![Arg::view(strided), Arg::view_mut(y.view_mut())], &[])
        .unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), want);

    // A column-major (strided) output, staged and written back.
    let mut y = Array2::<f32>::zeros((b, i).f());
    assert!(!y.is_standard_layout());
    k.call(vec![Arg::view(x.view()), Arg::view_mut(y.view_mut())], &[])
        .unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), want);

    // A view with a step: every other column of a wider array.
    let wide = Array2::from_shape_fn((b, 2 * i), |(r, c)| x[[r, c / 2]]);
    let stepped = wide.slice(ndarray::s![.., ..;2]);
    let mut y = Array2::<f32>::zeros((b, i));
    k.call(vec![Arg::view(stepped), Arg::view_mut(y.view_mut())], &[])
        .unwrap();
    assert_eq!(y.iter().copied().collect::<Vec<_>>(), want);
}

#[test]
fn view_errors_name_the_argument() {
    let k = softmax();
    let x = Array2::<f32>::zeros((2, 5));
    let mut y = Array2::<f32>::zeros((2, 4));
    let err = k
        .call(vec![Arg::view(x.view()), Arg::view_mut(y.view_mut())], &[])
        .unwrap_err();
    assert!(err.to_string().contains('i'), "{err}");
    let x64 = Array2::<f64>::zeros((2, 5));
    let mut y = Array2::<f32>::zeros((2, 5));
    let err = k
        .call(
            vec![Arg::view(x64.view()), Arg::view_mut(y.view_mut())],
            &[],
        )
        .unwrap_err();
    assert!(err.to_string().contains("`x`"), "{err}");
}
