//! Softmax through `kernel!`: checked and planned when this example
//! compiles, called through a typed function.
//!
//! `cargo run --release --example softmax_macro`

passfold::kernel! {
    kernel softmax(x: f32[b, i]) -> (y: f32[b, i]) {
        m[b] = max[i](x[b, i]);
        s[b] = sum[i](exp(x[b, i] - m[b]));
        y[b, i] = exp(x[b, i] - m[b]) / s[b];
    }
}

fn main() -> Result<(), passfold::Error> {
    let (rows, n) = (4, 1000);
    let x: Vec<f32> = (0..rows * n)
        .map(|k| (k % 97) as f32 * 0.25 - 12.0)
        .collect();
    let mut y = vec![0.0f32; rows * n];
    softmax::call(rows, n, &x, &mut y)?;
    for r in 0..rows {
        let total: f32 = y[r * n..(r + 1) * n].iter().sum();
        println!("row {r}: sum of probabilities {total:.6}");
    }
    println!("{}", softmax::PLAN);
    Ok(())
}
