#!/usr/bin/env bash
# The long fuzz run (SECURITY.md): the `fuzz_*` property tests of the job parser, the
# attachment unpacker and the redactor, optimised, with many more cases than the bounded run
# that scripts/test.sh (and so CI) makes. Failing inputs are saved in the tests'
# `.proptest-regressions` files: commit them with the fix.
#
# Usage: scripts/fuzz.sh [CASES_PER_PROPERTY] [more arguments for the test runner]
#   PROPTEST_RNG_SEED=<n> scripts/fuzz.sh     explores from another seed
set -euo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES="${1:-100000}"
shift || true
crates=(-p phasebox-jobspec -p phasebox-archive -p phasebox-redact)
echo "fuzzing with $PROPTEST_CASES cases per property"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release "${crates[@]}" -E 'test(/^fuzz_/)' --no-fail-fast "$@"
else
    cargo test --release "${crates[@]}" --no-fail-fast "$@" -- fuzz_
fi
