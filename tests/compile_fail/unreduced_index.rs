// A malformed kernel is a compile error at the offending token.
passfold::kernel! {
    kernel k(x: f32[b, i]) -> (y: f32[b]) {
        y[b] = x[b, i];
    }
}

fn main() {}
