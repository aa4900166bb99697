// A malformed kernel is a compile error at the offending token.
passfold::kernel! {
    kernel k(x: f32[i]) -> (y: f32[i]) {
        y[i] = select(x[i], 1.0, 0.0);
    }
}

fn main() {}
