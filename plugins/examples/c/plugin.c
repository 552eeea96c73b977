/* verify-c: a test phase that checks a signed attachment, written in C.
 *
 * The job attaches a file (say a firmware image) and signs it: `signature` in the phase's data
 * is HMAC-SHA256(key, file) in hex, and the key is a secret the phase declares. The phase reads
 * the file from a directory the job granted, checks the signature with the secret, and reports
 * two test cases (suite `verify`: `read-attachment`, `signature`) and one measurement
 * (`attachment.size`, bytes). See README.md for the data fields and the build.
 *
 * The data field `work` instead runs the CPU-bound benchmark workload and nothing else. */
/* clock_gettime is POSIX, not ISO C. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "phase.h"
#include "sha256.h"

/* Secret holding the signing key when the data does not name one. */
#define DEFAULT_KEY_SECRET "SIGNING_KEY"

/* ---- small helpers over the generated bindings ------------------------------------------- */

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Writes a line to the phase's output and the same line to its log. */
static void say(const char *line) {
    printf("%s\n", line);
    /* stdout is not a terminal here, so it is fully buffered; the host shows output live, so
     * push each line out now rather than when the buffer fills. */
    fflush(stdout);
    phase_string_t message;
    phase_string_set(&message, line);
    phasebox_plugin_log_log(PHASEBOX_PLUGIN_LOG_LEVEL_INFO, &message);
}

static void report_case(const char *name, phasebox_plugin_results_status_t status, uint64_t started,
                        const char *message) {
    phasebox_plugin_results_test_case_t c = {0};
    phase_string_set(&c.suite, "verify");
    phase_string_set(&c.name, name);
    c.status = status;
    c.duration_ms = now_ms() - started;
    if (message) {
        c.message.is_some = true;
        phase_string_set(&c.message.val, message);
    }
    phasebox_plugin_results_report_case(&c);
}

static void measure(const char *name, double value, const char *unit) {
    phasebox_plugin_results_measurement_t m = {0};
    phase_string_set(&m.name, name);
    m.value = value;
    phase_string_set(&m.unit, unit);
    phasebox_plugin_results_report_measurement(&m);
}

/* Sets `err` to a failure of kind `tag` with `message` and returns false, for `return fail(...)`.
 * The string is copied with malloc: the generated post-return function frees it. */
static bool fail(phase_failure_t *err, uint8_t tag, const char *message) {
    err->tag = tag;
    phase_string_dup(&err->val.job_error, message); /* all three cases are one string */
    return false;
}

static bool succeed(phase_outcome_t *ret, const char *summary) {
    phase_string_dup(&ret->summary, summary);
    return true;
}

/* The DUT fact `key`, or `fallback`. Returns a NUL-terminated copy in `buf`. */
static const char *fact(const phase_phase_context_t *ctx, const char *key, char *buf, size_t size,
                        const char *fallback) {
    for (size_t i = 0; i < ctx->dut.len; i++) {
        const phasebox_plugin_types_dut_fact_t *f = &ctx->dut.ptr[i];
        if (f->key.len == strlen(key) && memcmp(f->key.ptr, key, f->key.len) == 0) {
            snprintf(buf, size, "%.*s", (int)f->value.len, (const char *)f->value.ptr);
            return buf;
        }
    }
    return fallback;
}

/* Reads a whole file. On failure returns NULL with errno set by the failing call. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 64 * 1024, used = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        used += fread(buf + used, 1, cap - used, f);
        if (used < cap) break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            errno = ENOMEM;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        int saved = errno;
        free(buf);
        buf = NULL;
        errno = saved;
    }
    fclose(f);
    *len = used;
    return buf;
}

/* Compares a hex string with a digest, ignoring case, without stopping at the first difference
 * (so the time taken does not tell how much of a forged signature was right). */
static bool digest_matches(const char *hex, const uint8_t digest[SHA256_DIGEST_SIZE]) {
    if (strlen(hex) != 2 * SHA256_DIGEST_SIZE) return false;
    static const char digits[] = "0123456789abcdef";
    unsigned diff = 0;
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) {
        char hi = hex[2 * i], lo = hex[2 * i + 1];
        if (hi >= 'A' && hi <= 'F') hi = (char)(hi - 'A' + 'a');
        if (lo >= 'A' && lo <= 'F') lo = (char)(lo - 'A' + 'a');
        diff |= (unsigned)(hi ^ digits[digest[i] >> 4]) | (unsigned)(lo ^ digits[digest[i] & 15]);
    }
    return diff == 0;
}

/* ---- the benchmark workload ---------------------------------------------------------------- */

/* The same rounds as plugins/probe/src/work.rs: xorshift64, folded into a sum through a rotate
 * and the FNV-1a 64-bit prime. `work(1000000)` is 0c8888ac88deb841. */
static uint64_t work(uint64_t n) {
    uint64_t state = 0x9e3779b97f4a7c15u, sum = 0;
    for (uint64_t round = 0; round < n; round++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        sum = ((sum << 5) | (sum >> 59)) ^ (state + round);
        sum *= 0x00000100000001b3u;
    }
    return sum;
}

/* ---- the phase ----------------------------------------------------------------------------- */

bool exports_phase_run(phase_phase_context_t *ctx, phase_outcome_t *ret, phase_failure_t *err) {
    const char *data = (const char *)ctx->data.ptr;
    size_t data_len = ctx->data.len;
    char line[512];

    uint64_t rounds;
    switch (json_u64(data, data_len, "work", &rounds)) {
        case JSON_OK:
            snprintf(line, sizeof line, "work(%" PRIu64 ") = %016" PRIx64, rounds, work(rounds));
            return succeed(ret, line);
        case JSON_INVALID:
            return fail(err, PHASEBOX_PLUGIN_TYPES_FAILURE_JOB_ERROR,
                        "verify-c: the data must be a JSON object, and `work` a non-negative integer");
        case JSON_MISSING: break;
    }

    char *path = NULL, *signature = NULL, *key_secret = NULL;
    if (json_string(data, data_len, "attachment", &path) != JSON_OK) {
        return fail(err, PHASEBOX_PLUGIN_TYPES_FAILURE_JOB_ERROR,
                    "verify-c needs `attachment` in its data: the path of a file in a directory the "
                    "job grants, e.g. /attachments/firmware.bin");
    }
    json_status has_signature = json_string(data, data_len, "signature", &signature);
    json_status has_key = json_string(data, data_len, "key_secret", &key_secret);
    if (has_signature == JSON_INVALID || has_key == JSON_INVALID) {
        return fail(err, PHASEBOX_PLUGIN_TYPES_FAILURE_JOB_ERROR,
                    "verify-c: `signature` and `key_secret` must be strings");
    }
    const char *key_name = has_key == JSON_OK ? key_secret : DEFAULT_KEY_SECRET;

    char dut[128];
    snprintf(line, sizeof line, "verify-c: checking %s on %s", path,
             fact(ctx, "name", dut, sizeof dut, "an unnamed device"));
    say(line);

    /* 1. The attachment: anything outside the granted directories does not exist here. */
    uint64_t started = now_ms();
    size_t size = 0;
    uint8_t *contents = read_file(path, &size);
    if (!contents) {
        snprintf(line, sizeof line, "cannot read %s: %s", path, strerror(errno));
        report_case("read-attachment", PHASEBOX_PLUGIN_RESULTS_STATUS_ERROR, started, line);
        return fail(err, PHASEBOX_PLUGIN_TYPES_FAILURE_JOB_ERROR, line);
    }
    snprintf(line, sizeof line, "%zu bytes", size);
    report_case("read-attachment", PHASEBOX_PLUGIN_RESULTS_STATUS_PASS, started, line);
    measure("attachment.size", (double)size, "bytes");

    /* 2. The signature, checked with the secret key. */
    started = now_ms();
    if (has_signature != JSON_OK) {
        report_case("signature", PHASEBOX_PLUGIN_RESULTS_STATUS_SKIP, started, "no `signature` in the job's data");
        snprintf(line, sizeof line, "%s: %zu bytes, not signed", path, size);
        return succeed(ret, line);
    }
    phase_string_t name, key;
    phasebox_plugin_secrets_error_t secret_err;
    phase_string_set(&name, key_name);
    if (!phasebox_plugin_secrets_get(&name, &key, &secret_err)) {
        /* The host gives this one answer whether the secret exists or not. */
        snprintf(line, sizeof line, "secret %s: not granted to this phase", key_name);
        phasebox_plugin_secrets_error_free(&secret_err);
        report_case("signature", PHASEBOX_PLUGIN_RESULTS_STATUS_ERROR, started, line);
        return fail(err, PHASEBOX_PLUGIN_TYPES_FAILURE_JOB_ERROR, line);
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    hmac_sha256(key.ptr, key.len, contents, size, digest);
    /* Never print a secret; the host would redact it from the output anyway. */
    memset(key.ptr, 0, key.len);
    phase_string_free(&key);
    free(contents);

    if (!digest_matches(signature, digest)) {
        snprintf(line, sizeof line, "%s does not match its signature (key %s)", path, key_name);
        report_case("signature", PHASEBOX_PLUGIN_RESULTS_STATUS_FAIL, started, line);
        return fail(err, PHASEBOX_PLUGIN_TYPES_FAILURE_TEST_FAILURE, line);
    }
    snprintf(line, sizeof line, "HMAC-SHA256 with %s", key_name);
    report_case("signature", PHASEBOX_PLUGIN_RESULTS_STATUS_PASS, started, line);
    snprintf(line, sizeof line, "%s: %zu bytes, signature verified", path, size);
    say(line);
    return succeed(ret, line);
}
