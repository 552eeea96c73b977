"""The CPU-bound benchmark workload: the same rounds as plugins/probe/src/work.rs (xorshift64,
folded into a sum through a rotate and the FNV-1a 64-bit prime); work(1_000_000) is
0x0c8888ac88deb841.

Python integers do not wrap, so every step that can overflow 64 bits is masked back to them.
"""

MASK = (1 << 64) - 1


def work(n: int) -> int:
    state = 0x9E3779B97F4A7C15
    total = 0
    for round_ in range(n):
        state ^= (state << 13) & MASK
        state ^= state >> 7
        state ^= (state << 17) & MASK
        rotated = ((total << 5) | (total >> 59)) & MASK
        total = ((rotated ^ ((state + round_) & MASK)) * 0x0000_0100_0000_01B3) & MASK
    return total
