//! The `work` attack's CPU-bound workload, kept free of anything WASI- or phasebox-specific so
//! that the same file compiles natively to compare the sandbox's speed with the machine's: the
//! host's language tests and benchmark include it with `#[path]`, call [`work`] with the same
//! `n`, and compare both the time taken and the checksum (which must be equal).

/// Runs `n` rounds of a deterministic integer workload and returns a checksum of them.
///
/// Each round advances a xorshift64 generator and folds its output into a running sum through a
/// rotate and an odd multiply. Every round depends on the one before, so the compiler can neither
/// vectorise the loop nor reduce it to a closed form, and the checksum changes if any round is
/// skipped or computed differently. It touches no memory beyond a few registers, which makes it a
/// measure of code generation rather than of the allocator or the memory system.
pub fn work(n: u64) -> u64 {
    // Any non-zero seed works for xorshift; this one is the 64-bit golden ratio.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut sum: u64 = 0;
    for round in 0..n {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // The FNV-1a 64-bit prime: an odd multiplier, so no information is lost.
        sum = (sum.rotate_left(5) ^ state.wrapping_add(round)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::work;

    #[test]
    fn zero_rounds_is_zero() {
        assert_eq!(work(0), 0);
    }

    /// Pins the checksum, so that a port of this file (or a miscompilation) that computes
    /// something else is caught; the wasm build must print the same value.
    #[test]
    fn checksum_is_pinned() {
        assert_eq!(work(1_000_000), PINNED_1M);
    }

    /// `work(1_000_000)`; the `work` attack reports it as `allowed: 0c8888ac88deb841`.
    const PINNED_1M: u64 = 0x0c88_88ac_88de_b841;
}
