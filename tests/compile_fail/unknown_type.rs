// A malformed kernel is a compile error at the offending token.
passfold::kernel! {
    kernel k(x: f16[i]) -> (y: f32[i]) {
        y[i] = x[i];
    }
}

fn main() {}
