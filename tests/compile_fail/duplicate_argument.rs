// A malformed kernel is a compile error at the offending token.
passfold::kernel! {
    kernel k(x: f32[i], x: f32[i]) -> (y: f32[i]) {
        y[i] = x[i];
    }
}

fn main() {}
