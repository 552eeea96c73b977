/* SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), enough to check a signed attachment.
 *
 * wasi-libc has no crypto library, and Debian ships no wasm32 build of one, so the plugin
 * carries these ~100 lines itself. They are checked against the standard test vectors by the
 * host's tests, which sign attachments with the `hmac` and `sha2` crates. */
#ifndef VERIFY_SHA256_H
#define VERIFY_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32
#define SHA256_BLOCK_SIZE 64

typedef struct {
    uint32_t state[8];
    uint64_t length; /* bytes hashed so far */
    uint8_t block[SHA256_BLOCK_SIZE];
    size_t used; /* bytes waiting in `block` */
} sha256_ctx;

void sha256_init(sha256_ctx *ctx);
void sha256_update(sha256_ctx *ctx, const uint8_t *data, size_t len);
void sha256_final(sha256_ctx *ctx, uint8_t out[SHA256_DIGEST_SIZE]);

/* out = HMAC-SHA256(key, message). */
void hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *message, size_t len,
                 uint8_t out[SHA256_DIGEST_SIZE]);

#endif
