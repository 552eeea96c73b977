/* Reading the fields of a phase's data: a JSON object whose fields of interest are strings and
 * non-negative integers. Other fields (objects, arrays, booleans, anything) are skipped, so a
 * job may carry data meant for other tools. */
#ifndef VERIFY_JSON_H
#define VERIFY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    JSON_OK,      /* found, and of the asked type */
    JSON_MISSING, /* the object has no such field (or it is null) */
    JSON_INVALID, /* the text is not a JSON object, or the field has another type */
} json_status;

/* Finds the top-level string field `key` of the object `text[0..len)`. On JSON_OK, `*out` is a
 * NUL-terminated copy (escapes decoded) that the caller frees. */
json_status json_string(const char *text, size_t len, const char *key, char **out);

/* Finds the top-level field `key` and reads it as an integer in 0..2^64-1. */
json_status json_u64(const char *text, size_t len, const char *key, uint64_t *out);

#endif
