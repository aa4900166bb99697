//! Cross-entropy over a batch through `kernel!` (one pass over each row of
//! logits: the log-sum-exp's running max is blocked, the label's logit is a
//! gather).
//!
//! `cargo run --release --example cross_entropy_macro`

passfold::kernel! {
    kernel cross_entropy(logits: f32[b, i], label: i32[b]) -> (loss: f32[b]) {
        m[b] = max[i](logits[b, i]);
        lse[b] = m[b] + log(sum[i](exp(logits[b, i] - m[b])));
        loss[b] = lse[b] - logits[b, label[b]];
    }
}

fn main() -> Result<(), passfold::Error> {
    let (batch, vocab) = (8, 32000);
    let logits: Vec<f32> = (0..batch * vocab)
        .map(|k| (((k * 2654435761usize) >> 7) % 1000) as f32 * 0.01 - 5.0)
        .collect();
    let labels: Vec<i32> = (0..batch as i32).map(|r| r * 1000).collect();
    let mut loss = vec![0.0f32; batch];
    cross_entropy::call(batch, vocab, &logits, &labels, &mut loss)?;
    println!("losses: {loss:?}");
    println!("mean: {}", loss.iter().sum::<f32>() / batch as f32);
    Ok(())
}
