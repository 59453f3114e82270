//! Helpers shared by the unit tests.

/// A deterministic pseudo-random sequence (xorshift64) from `seed` (not 0): each call gives
/// the next number.
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}
