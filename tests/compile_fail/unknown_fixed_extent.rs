// An extent fixed in `#[extents(..)]` must be one of the kernel's.
passfold::kernel! {
    #[extents(d = 64)]
    kernel k(x: f32[i]) -> (y: f32[i]) {
        y[i] = x[i];
    }
}

fn main() {}
