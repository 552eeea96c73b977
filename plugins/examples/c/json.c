/* A reader of one JSON object's top-level fields; see json.h. It validates only as much as it
 * walks: enough to never read past the end or mistake a nested key for a top-level one. */
#include "json.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *p;
    const char *end;
} cursor;

static void skip_space(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* Appends the UTF-8 encoding of `cp` to `out`. */
static char *put_utf8(char *out, uint32_t cp) {
    if (cp < 0x80) {
        *out++ = (char)cp;
    } else if (cp < 0x800) {
        *out++ = (char)(0xc0 | cp >> 6);
        *out++ = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *out++ = (char)(0xe0 | cp >> 12);
        *out++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *out++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *out++ = (char)(0xf0 | cp >> 18);
        *out++ = (char)(0x80 | (cp >> 12 & 0x3f));
        *out++ = (char)(0x80 | (cp >> 6 & 0x3f));
        *out++ = (char)(0x80 | (cp & 0x3f));
    }
    return out;
}

static bool hex4(cursor *c, uint32_t *out) {
    if (c->end - c->p < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char h = *c->p++;
        v <<= 4;
        if (h >= '0' && h <= '9') v |= (uint32_t)(h - '0');
        else if (h >= 'a' && h <= 'f') v |= (uint32_t)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F') v |= (uint32_t)(h - 'A' + 10);
        else return false;
    }
    *out = v;
    return true;
}

/* Reads a string starting at its opening quote. With `out`, also decodes it into a new
 * NUL-terminated buffer (never longer than the escaped form, which bounds the allocation). */
static bool read_string(cursor *c, char **out) {
    if (c->p >= c->end || *c->p != '"') return false;
    c->p++;
    char *buf = NULL, *w = NULL;
    if (out) {
        buf = malloc((size_t)(c->end - c->p) + 1);
        if (!buf) return false;
        w = buf;
    }
    while (c->p < c->end) {
        char ch = *c->p++;
        if (ch == '"') {
            if (out) {
                *w = '\0';
                *out = buf;
            }
            return true;
        }
        if ((unsigned char)ch < 0x20) break; /* raw control characters are not allowed */
        if (ch != '\\') {
            if (out) *w++ = ch;
            continue;
        }
        if (c->p >= c->end) break;
        char esc = *c->p++;
        uint32_t cp;
        switch (esc) {
            case '"': cp = '"'; break;
            case '\\': cp = '\\'; break;
            case '/': cp = '/'; break;
            case 'b': cp = '\b'; break;
            case 'f': cp = '\f'; break;
            case 'n': cp = '\n'; break;
            case 'r': cp = '\r'; break;
            case 't': cp = '\t'; break;
            case 'u':
                if (!hex4(c, &cp)) goto bad;
                if (cp >= 0xd800 && cp < 0xdc00) {
                    /* A high surrogate must be followed by an escaped low one. */
                    uint32_t low;
                    if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u') goto bad;
                    c->p += 2;
                    if (!hex4(c, &low) || low < 0xdc00 || low >= 0xe000) goto bad;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                } else if (cp >= 0xdc00 && cp < 0xe000) {
                    goto bad;
                }
                break;
            default: goto bad;
        }
        if (out) w = put_utf8(w, cp);
    }
bad:
    free(buf);
    return false;
}

/* Skips one value of any type, nested ones included. */
static bool skip_value(cursor *c) {
    skip_space(c);
    if (c->p >= c->end) return false;
    if (*c->p == '"') return read_string(c, NULL);
    if (*c->p == '{' || *c->p == '[') {
        int depth = 0;
        while (c->p < c->end) {
            char ch = *c->p;
            if (ch == '"') {
                if (!read_string(c, NULL)) return false;
                continue;
            }
            c->p++;
            if (ch == '{' || ch == '[') depth++;
            if (ch == '}' || ch == ']') {
                if (--depth == 0) return true;
            }
        }
        return false;
    }
    /* A number, true, false or null: everything up to the next delimiter. */
    const char *start = c->p;
    while (c->p < c->end && !strchr(",}] \t\r\n", *c->p)) c->p++;
    return c->p > start;
}

/* Positions `c` at the value of the top-level field `key`. */
static json_status find(const char *text, size_t len, const char *key, cursor *c) {
    c->p = text;
    c->end = text + len;
    skip_space(c);
    if (c->p >= c->end || *c->p++ != '{') return JSON_INVALID;
    skip_space(c);
    if (c->p < c->end && *c->p == '}') return JSON_MISSING;
    while (c->p < c->end) {
        char *name = NULL;
        skip_space(c);
        if (!read_string(c, &name)) return JSON_INVALID;
        skip_space(c);
        if (c->p >= c->end || *c->p++ != ':') {
            free(name);
            return JSON_INVALID;
        }
        skip_space(c);
        bool match = strcmp(name, key) == 0;
        free(name);
        if (match) {
            if (c->end - c->p >= 4 && memcmp(c->p, "null", 4) == 0) return JSON_MISSING;
            return JSON_OK;
        }
        if (!skip_value(c)) return JSON_INVALID;
        skip_space(c);
        if (c->p < c->end && *c->p == ',') {
            c->p++;
            continue;
        }
        if (c->p < c->end && *c->p == '}') return JSON_MISSING;
        return JSON_INVALID;
    }
    return JSON_INVALID;
}

json_status json_string(const char *text, size_t len, const char *key, char **out) {
    cursor c;
    json_status s = find(text, len, key, &c);
    if (s != JSON_OK) return s;
    return read_string(&c, out) ? JSON_OK : JSON_INVALID;
}

json_status json_u64(const char *text, size_t len, const char *key, uint64_t *out) {
    cursor c;
    json_status s = find(text, len, key, &c);
    if (s != JSON_OK) return s;
    uint64_t v = 0;
    const char *start = c.p;
    while (c.p < c.end && *c.p >= '0' && *c.p <= '9') {
        uint64_t digit = (uint64_t)(*c.p++ - '0');
        if (v > (UINT64_MAX - digit) / 10) return JSON_INVALID;
        v = v * 10 + digit;
    }
    /* No digits, a fraction, an exponent or a sign: not a non-negative integer. */
    if (c.p == start || (c.p < c.end && !strchr(",} \t\r\n", *c.p))) return JSON_INVALID;
    *out = v;
    return JSON_OK;
}
