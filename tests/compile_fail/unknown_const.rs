// A value in `#[consts(..)]` must be for one of the kernel's `const` parameters.
passfold::kernel! {
    #[consts(k = 4)]
    kernel k(x: f32[i]) -> (y: f32[i]) {
        y[i] = x[i];
    }
}

fn main() {}
