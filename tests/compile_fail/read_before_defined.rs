// A malformed kernel is a compile error at the offending token.
passfold::kernel! {
    kernel k(x: f32[b, i]) -> (y: f32[b, i]) {
        m[b] = max[i](y[b, i]);
        y[b, i] = x[b, i] - m[b];
    }
}

fn main() {}
