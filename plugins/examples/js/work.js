// The CPU-bound benchmark workload: the same rounds as plugins/probe/src/work.rs (xorshift64,
// folded into a sum through a rotate and the FNV-1a 64-bit prime); work(1000000) is
// 0c8888ac88deb841.
//
// JavaScript numbers are doubles, so the 64-bit words are kept as two unsigned 32-bit halves.
// BigInt would read more like the Rust, but every BigInt operation allocates a new value: in
// Node 20 the BigInt version of this loop is 7 times slower than the halves. The halves keep the
// comparison about the engine, not about boxing.

const TWO32 = 2 ** 32;

export function work(n) {
  let stateHi = 0x9e3779b9;
  let stateLo = 0x7f4a7c15;
  let sumHi = 0;
  let sumLo = 0;
  for (let round = 0; round < n; round++) {
    // state ^= state << 13
    let hi = stateHi ^ ((stateHi << 13) | (stateLo >>> 19));
    let lo = stateLo ^ (stateLo << 13);
    // state ^= state >> 7
    lo ^= (lo >>> 7) | (hi << 25);
    hi ^= hi >>> 7;
    // state ^= state << 17
    hi ^= (hi << 17) | (lo >>> 15);
    lo ^= lo << 17;
    stateHi = hi >>> 0;
    stateLo = lo >>> 0;

    // state + round (round < 2^53, so its halves are exact)
    const addLo = stateLo + (round >>> 0);
    const addHi = (stateHi + Math.floor(round / TWO32) + (addLo >= TWO32 ? 1 : 0)) >>> 0;
    // sum.rotate_left(5) ^ (state + round)
    const xorHi = ((sumHi << 5) | (sumLo >>> 27)) ^ addHi;
    const xorLo = ((sumLo << 5) | (sumHi >>> 27)) ^ (addLo >>> 0);
    // * 0x00000100_000001b3, modulo 2^64: the low half times 0x1b3 is below 2^41, exact in a
    // double; its carry and the cross terms land in the high half.
    const lowProduct = (xorLo >>> 0) * 0x1b3;
    sumLo = lowProduct >>> 0;
    sumHi = (Math.imul(xorHi, 0x1b3) + Math.imul(xorLo, 0x100) + Math.floor(lowProduct / TWO32)) >>> 0;
  }
  return sumHi.toString(16).padStart(8, '0') + sumLo.toString(16).padStart(8, '0');
}
