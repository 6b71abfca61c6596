/* The Clove kernel's NOOP path with its hot loop compiled: a measurement prototype for
 * bench/compiled_core.py, not a kernel.
 *
 *   noop_core serve ENDPOINT JOURNAL   receive, decode, authorize, journal-record, reply
 *   noop_core echo ENDPOINT            a bare ROUTER echo in C (the compiled floor)
 *   noop_core cost JOURNAL N           the same work for N requests without ZeroMQ: ns each
 *
 * `serve` speaks the wire protocol of clove/wire.py on one ROUTER (an operator control socket):
 * [routing, "CLOVE1", "REQ", msgpack {id, call, body}] in, [routing, "CLOVE1", "REP", msgpack
 * {id, ok, result | error}] out, byte for byte what the Python kernel replies to noop and echo.
 * Each request is authorized by a lookup of (identity, call) in a table and journaled as the
 * record clove/kernel/dispatch.py builds: canonical JSON (sorted keys, orjson's formatting),
 * chained by SHA-256 over the record with `id` and `prev_hash`, batched and handed to a writer
 * thread within 2 ms (or at 256 lines), written at once, fdatasync'd at most once a second:
 * the Python kernel's policy for a read-only call, whose reply does not wait for its record.
 * clove.kernel.audit.verify.verify_journal accepts the file.
 *
 * Left out (the NOOP path does not touch them): agents and their sockets, fair share, rate
 * limits, recording and replay, denial aggregation, URL redaction, rotation and retention.
 *
 * Prints "ready" once bound; SIGTERM stops it after the journal is written and synced, and it
 * prints one JSON line of counters.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <zmq.h>

/* The Python kernel's figures (clove/kernel/dispatch.py, kernel.py, the audit package). */
#define BATCH 32                          /* messages per socket per loop turn */
#define HAND_OFF_NS 2000000ULL            /* records reach the writer within 2 ms */
#define MAX_BATCH_LINES 256               /* ... or once this many are batched */
#define FSYNC_INTERVAL_NS 1000000000ULL   /* fdatasync at most once a second */
#define RING_SIZE 10000                   /* recent records kept for audit.query */
#define MAX_MESSAGE_BYTES (1u << 20)
#define MAX_DEPTH 100                     /* body nesting limit (wire.MAX_DEPTH) */
#define MAX_CALL_CHARS 64
#define MAX_ID_CHARS 128
#define MAX_FRAMES 8
/* summarize_args(max_str=200, max_items=20, max_depth=4) for `args`; redact() to depth 3. */
#define SUM_MAX_STR 200
#define SUM_MAX_ITEMS 20
#define SUM_MAX_DEPTH 4
#define REDACT_MAX_DEPTH 3

static volatile sig_atomic_t stopping;

static uint64_t now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "noop_core: %s: %s\n", what, zmq_strerror(errno));
    exit(1);
}

/* ---- growable byte buffer ------------------------------------------------------------------ */

typedef struct {
    char *d;
    size_t n, cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (b->n + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 512;
    while (cap < b->n + extra) cap *= 2;
    b->d = realloc(b->d, cap);
    if (!b->d) abort();
    b->cap = cap;
}

static void buf_put(buf_t *b, const void *s, size_t n) {
    buf_reserve(b, n);
    memcpy(b->d + b->n, s, n);
    b->n += n;
}

static void buf_puts(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

/* A string literal that may hold NUL or msgpack bytes. */
#define PUT_LIT(b, lit) buf_put((b), (lit), sizeof(lit) - 1)

static void buf_byte(buf_t *b, uint8_t c) {
    buf_reserve(b, 1);
    b->d[b->n++] = (char)c;
}

static void buf_printf(buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(b->d + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

/* ---- msgpack reading: just what the envelope and a journal summary need -------------------- */

typedef struct {
    const uint8_t *p, *end;
} mp_t;

typedef enum { T_NIL, T_BOOL, T_INT, T_UINT, T_FLOAT, T_STR, T_BIN, T_EXT, T_ARRAY, T_MAP } kind_t;

typedef struct {
    kind_t kind;
    int64_t i;  /* T_INT, T_BOOL */
    uint64_t u; /* T_UINT */
    double f;   /* T_FLOAT */
    const uint8_t *data; /* T_STR, T_BIN, T_EXT payload */
    uint32_t len;        /* bytes of T_STR/T_BIN/T_EXT, items of T_ARRAY, pairs of T_MAP */
} mp_val_t;

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = (v << 8) | p[i];
    return v;
}

/* Read one value's header; strings, bins and exts are consumed whole, arrays and maps leave
 * their items to read. 0, or -1 for malformed or truncated input. */
static int mp_read(mp_t *r, mp_val_t *v) {
    if (r->p >= r->end) return -1;
    uint8_t t = *r->p++;
    size_t left = (size_t)(r->end - r->p);
    int lenbytes = 0;
    if (t <= 0x7f) { v->kind = T_UINT; v->u = t; return 0; }
    if (t >= 0xe0) { v->kind = T_INT; v->i = (int8_t)t; return 0; }
    if (t >= 0x80 && t <= 0x8f) { v->kind = T_MAP; v->len = t & 0x0f; return 0; }
    if (t >= 0x90 && t <= 0x9f) { v->kind = T_ARRAY; v->len = t & 0x0f; return 0; }
    if (t >= 0xa0 && t <= 0xbf) { v->kind = T_STR; v->len = t & 0x1f; goto payload; }
    switch (t) {
    case 0xc0: v->kind = T_NIL; return 0;
    case 0xc2: case 0xc3: v->kind = T_BOOL; v->i = t == 0xc3; return 0;
    case 0xc4: case 0xc5: case 0xc6:
        v->kind = T_BIN; lenbytes = 1 << (t - 0xc4); goto sized;
    case 0xd9: case 0xda: case 0xdb:
        v->kind = T_STR; lenbytes = 1 << (t - 0xd9); goto sized;
    case 0xc7: case 0xc8: case 0xc9:
        v->kind = T_EXT; lenbytes = 1 << (t - 0xc7);
        if (left < (size_t)lenbytes + 1) return -1;
        v->len = (uint32_t)be(r->p, lenbytes);
        r->p += lenbytes + 1; /* and the ext type */
        goto payload;
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        if (left < 1) return -1;
        v->kind = T_EXT; v->len = 1u << (t - 0xd4); r->p += 1; goto payload;
    case 0xca: {
        if (left < 4) return -1;
        uint32_t bits = (uint32_t)be(r->p, 4);
        float f;
        memcpy(&f, &bits, 4);
        v->kind = T_FLOAT; v->f = f; r->p += 4; return 0;
    }
    case 0xcb: {
        if (left < 8) return -1;
        uint64_t bits = be(r->p, 8);
        memcpy(&v->f, &bits, 8);
        v->kind = T_FLOAT; r->p += 8; return 0;
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
        int n = 1 << (t - 0xcc);
        if (left < (size_t)n) return -1;
        v->kind = T_UINT; v->u = be(r->p, n); r->p += n; return 0;
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int n = 1 << (t - 0xd0);
        if (left < (size_t)n) return -1;
        uint64_t raw = be(r->p, n);
        v->kind = T_INT;
        v->i = n == 1 ? (int8_t)raw : n == 2 ? (int16_t)raw : n == 4 ? (int32_t)raw : (int64_t)raw;
        r->p += n;
        return 0;
    }
    case 0xdc: case 0xdd:
        lenbytes = t == 0xdc ? 2 : 4;
        if (left < (size_t)lenbytes) return -1;
        v->kind = T_ARRAY; v->len = (uint32_t)be(r->p, lenbytes); r->p += lenbytes; return 0;
    case 0xde: case 0xdf:
        lenbytes = t == 0xde ? 2 : 4;
        if (left < (size_t)lenbytes) return -1;
        v->kind = T_MAP; v->len = (uint32_t)be(r->p, lenbytes); r->p += lenbytes; return 0;
    default:
        return -1; /* 0xc1 */
    }
sized:
    if (left < (size_t)lenbytes) return -1;
    v->len = (uint32_t)be(r->p, lenbytes);
    r->p += lenbytes;
payload:
    if ((size_t)(r->end - r->p) < v->len) return -1;
    v->data = r->p;
    r->p += v->len;
    return 0;
}

/* Code points in UTF-8 `s`, or -1 if it is not valid UTF-8 (msgpack's str decode is strict). */
static long utf8_chars(const uint8_t *s, size_t n) {
    long chars = 0;
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; chars++; continue; }
        int extra = (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (extra < 0 || i + (size_t)extra >= n) return -1;
        uint32_t cp = c & (0x3f >> extra);
        for (int k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return -1;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return -1;
        i += (size_t)extra + 1;
        chars++;
    }
    return chars;
}

/* Skip one value, checking what msgpack.unpackb(strict_map_key=True) checks and the body's
 * nesting (`level`: the containers around it, wire.too_deep's count). 0, -1 malformed, -2 deep. */
static int mp_skip(mp_t *r, int level) {
    mp_val_t v;
    if (mp_read(r, &v) < 0) return -1;
    if (v.kind == T_STR) return utf8_chars(v.data, v.len) < 0 ? -1 : 0;
    if (v.kind != T_ARRAY && v.kind != T_MAP) return 0;
    if (level > MAX_DEPTH) return -2;
    if (v.len > (size_t)(r->end - r->p)) return -1; /* every item takes a byte at least */
    for (uint32_t i = 0; i < v.len; i++) {
        if (v.kind == T_MAP) {
            mp_val_t key;
            if (mp_read(r, &key) < 0 || (key.kind != T_STR && key.kind != T_BIN)) return -1;
            if (key.kind == T_STR && utf8_chars(key.data, key.len) < 0) return -1;
        }
        int rc = mp_skip(r, level + 1);
        if (rc) return rc;
    }
    return 0;
}

static int str_is(const mp_val_t *v, const char *s) {
    size_t n = strlen(s);
    return v->kind == T_STR && v->len == n && memcmp(v->data, s, n) == 0;
}

/* ---- JSON as orjson writes it (clove.kernel.audit.format.canonical_bytes) ------------------ */

/* A JSON string of UTF-8 `s` (already validated), clipped like audit.summarize.clip_text. */
static void put_json_str(buf_t *b, const uint8_t *s, size_t n, long max_chars) {
    static const char hex[] = "0123456789abcdef";
    long total = max_chars > 0 ? utf8_chars(s, n) : 0;
    size_t cut = n;
    if (max_chars > 0 && total > max_chars) { /* the byte offset of code point max_chars */
        long seen = 0;
        for (cut = 0; cut < n; cut++)
            if ((s[cut] & 0xc0) != 0x80 && seen++ == max_chars) break;
    }
    buf_reserve(b, cut + 2);
    b->d[b->n++] = '"';
    for (size_t i = 0; i < cut; i++) {
        uint8_t c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { buf_byte(b, c); continue; }
        switch (c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\b': buf_puts(b, "\\b"); break;
        case '\t': buf_puts(b, "\\t"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\f': buf_puts(b, "\\f"); break;
        case '\r': buf_puts(b, "\\r"); break;
        default: {
            char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
            buf_puts(b, esc);
        }
        }
    }
    if (cut < n) buf_printf(b, "\xe2\x80\xa6(+%ld chars)", total - max_chars); /* "…(+N chars)" */
    buf_byte(b, '"');
}

static void put_json_cstr(buf_t *b, const char *s) { put_json_str(b, (const uint8_t *)s, strlen(s), 0); }

/* A finite double as orjson writes it: the shortest digits that read back to the same value,
 * in fixed notation for 1e-5 <= |v| < 1e16 (with ".0" when integral), else d.ddde±X. */
static void put_float(buf_t *b, double v) {
    if (v == 0) { buf_puts(b, signbit(v) ? "-0.0" : "0.0"); return; }
    char e[40];
    /* The correctly rounded 15, 16 or 17 digits: the first that reads back is the shortest
     * (fewer digits show up as trailing zeros of the 15). Subnormals carry fewer digits. */
    for (int prec = fabs(v) < DBL_MIN ? 0 : 14; prec <= 16; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, v);
        if (strtod(e, NULL) == v) break;
    }
    char digits[24];
    int nd = 0, exp10;
    const char *p = e;
    if (*p == '-') { buf_byte(b, '-'); p++; }
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    if (exp10 >= -5 && exp10 < 16) {
        if (exp10 < 0) {
            buf_puts(b, "0.");
            for (int i = 0; i < -exp10 - 1; i++) buf_byte(b, '0');
            buf_put(b, digits, (size_t)nd);
        } else {
            for (int i = 0; i <= exp10; i++) buf_byte(b, i < nd ? (uint8_t)digits[i] : '0');
            buf_byte(b, '.');
            if (nd > exp10 + 1) buf_put(b, digits + exp10 + 1, (size_t)(nd - exp10 - 1));
            else buf_byte(b, '0');
        }
    } else {
        buf_byte(b, (uint8_t)digits[0]);
        if (nd > 1) { buf_byte(b, '.'); buf_put(b, digits + 1, (size_t)nd - 1); }
        buf_printf(b, "e%c%d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
}

/* ---- the journal's summary of a request body: redact(), then summarize_args() --------------- */

static int contains_ci(const uint8_t *s, size_t n, const char *word) {
    size_t w = strlen(word);
    for (size_t i = 0; i + w <= n; i++)
        if (strncasecmp((const char *)s + i, word, w) == 0) return 1;
    return 0;
}

/* redact.py's _SECRET_NAME, an unanchored case-insensitive search. */
static int secret_name(const uint8_t *s, size_t n) {
    static const char *words[] = {"pass", "secret", "token", "apikey", "api_key", "api-key", "credential",
                                  "auth", "cookie", "sessionid", "session_id", "session-id"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (contains_ci(s, n, words[i])) return 1;
    return 0;
}

typedef struct {
    const uint8_t *key;
    uint32_t key_len;
    int key_is_bin;
    const uint8_t *value; /* NULL: the "…" entry */
    int redacted;
} entry_t;

static int entry_cmp(const void *a, const void *b) {
    const entry_t *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static void put_summary(buf_t *b, mp_t *r, int depth, int redact_depth);

static void put_summary_at(buf_t *b, const uint8_t *at, const uint8_t *end, int depth, int redact_depth) {
    mp_t r = {at, end};
    put_summary(b, &r, depth, redact_depth);
}

/* One value of an already validated body as summarize_args(redact(value)) renders it;
 * `redact_depth`: this value's depth for redact() (-1: out of its reach). */
static void put_summary(buf_t *b, mp_t *r, int depth, int redact_depth) {
    mp_val_t v;
    mp_read(r, &v);
    switch (v.kind) {
    case T_NIL: buf_puts(b, "null"); return;
    case T_BOOL: buf_puts(b, v.i ? "true" : "false"); return;
    case T_UINT:
        if (v.u > INT64_MAX) buf_puts(b, "\"<int of 64 bits>\"");
        else buf_printf(b, "%" PRIu64, v.u);
        return;
    case T_INT:
        if (v.i == INT64_MIN) buf_puts(b, "\"<int of 64 bits>\"");
        else buf_printf(b, "%" PRId64, v.i);
        return;
    case T_FLOAT:
        if (isfinite(v.f)) put_float(b, v.f);
        else buf_puts(b, isnan(v.f) ? "\"nan\"" : v.f > 0 ? "\"inf\"" : "\"-inf\"");
        return;
    case T_STR: put_json_str(b, v.data, v.len, SUM_MAX_STR); return;
    case T_BIN: buf_printf(b, "\"<%u bytes>\"", v.len); return;
    case T_EXT: buf_puts(b, "\"<ext>\""); return; /* the Python kernel writes the ExtType's repr */
    case T_ARRAY:
    case T_MAP: break;
    }
    const char *what = v.kind == T_MAP ? "dict" : "list";
    if (depth >= SUM_MAX_DEPTH) {
        for (uint32_t i = 0; i < v.len * (v.kind == T_MAP ? 2u : 1u); i++) mp_skip(r, 0);
        buf_printf(b, "\"<%s of %u item%s>\"", what, v.len, v.len == 1 ? "" : "s");
        return;
    }
    uint32_t shown = v.len < SUM_MAX_ITEMS ? v.len : SUM_MAX_ITEMS;
    if (v.kind == T_ARRAY) {
        buf_byte(b, '[');
        for (uint32_t i = 0; i < v.len; i++) {
            if (i < shown) {
                if (i) buf_byte(b, ',');
                put_summary(b, r, depth + 1, -1);
            } else {
                mp_skip(r, 0);
            }
        }
        if (v.len > shown) buf_printf(b, ",\"\xe2\x80\xa6(+%u items)\"", v.len - shown);
        buf_byte(b, ']');
        return;
    }
    entry_t entries[SUM_MAX_ITEMS + 1];
    int n = 0;
    for (uint32_t i = 0; i < v.len; i++) {
        mp_val_t key;
        mp_read(r, &key);
        if (i < shown) {
            entry_t *e = &entries[n++];
            e->key = key.data, e->key_len = key.len, e->key_is_bin = key.kind == T_BIN, e->value = r->p;
            e->redacted = redact_depth >= 0 && key.kind == T_STR && secret_name(key.data, key.len);
        }
        mp_skip(r, 0);
    }
    if (v.len > shown) entries[n++] = (entry_t){(const uint8_t *)"\xe2\x80\xa6", 3, 0, NULL, 0};
    qsort(entries, (size_t)n, sizeof *entries, entry_cmp); /* orjson's OPT_SORT_KEYS */
    buf_byte(b, '{');
    for (int i = 0; i < n; i++) {
        entry_t *e = &entries[i];
        if (i) buf_byte(b, ',');
        if (e->key_is_bin) buf_printf(b, "\"<%u bytes>\"", e->key_len); /* Python: the bytes' repr */
        else put_json_str(b, e->key, e->key_len, SUM_MAX_STR);
        buf_byte(b, ':');
        if (!e->value) buf_printf(b, "\"+%u more items\"", v.len - shown);
        else if (e->redacted) buf_puts(b, "\"<redacted>\"");
        else {
            int child = redact_depth >= 0 && redact_depth < REDACT_MAX_DEPTH ? redact_depth + 1 : -1;
            put_summary_at(b, e->value, r->end, depth + 1, child);
        }
    }
    buf_byte(b, '}');
}

/* ---- the journal: records built and chained on the loop, written by a writer thread --------- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    buf_t queue; /* lines handed off and not yet written */
    int stop;
    int fd;
    pthread_t thread;
    /* counters, read at exit */
    uint64_t writes, syncs, bytes;
} writer_t;

typedef struct {
    uint64_t last_id;
    char last_hash[65];
    buf_t batch; /* lines appended since the last hand-off */
    unsigned batch_lines;
    uint64_t batch_since; /* CLOCK_MONOTONIC ns of the first line in the batch */
    char *ring[RING_SIZE];
    size_t ring_next;
    buf_t rec;  /* scratch: the record without its hash */
    buf_t line; /* scratch: the line */
    EVP_MD_CTX *sha;
    EVP_MD *sha256; /* fetched once: an implicit fetch per record costs microseconds */
    writer_t w;
    uint64_t handoffs;
} journal_t;

static void write_fully(int fd, const char *d, size_t n) {
    while (n) {
        ssize_t k = write(fd, d, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) { perror("noop_core: journal write"); return; }
        d += k;
        n -= (size_t)k;
    }
}

/* The writer thread: writes whatever was handed off as soon as it arrives, fdatasyncs at most
 * once a second while records keep coming, and on stop (clove/kernel/audit/writer.py). */
static void *writer_main(void *arg) {
    writer_t *w = arg;
    buf_t out = {0};
    int dirty = 0;
    uint64_t synced_at = now_ns(CLOCK_MONOTONIC);
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->queue.n && !w->stop) {
            if (!dirty) { pthread_cond_wait(&w->cv, &w->mu); continue; }
            uint64_t due = synced_at + FSYNC_INTERVAL_NS;
            struct timespec ts = {(time_t)(due / 1000000000ULL), (long)(due % 1000000000ULL)};
            if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT) break;
        }
        buf_t swap = out;
        out = w->queue;
        w->queue = swap;
        w->queue.n = 0;
        int stop = w->stop;
        pthread_mutex_unlock(&w->mu);
        if (out.n) {
            write_fully(w->fd, out.d, out.n);
            w->writes++, w->bytes += out.n, out.n = 0, dirty = 1;
        }
        if (dirty && (stop || now_ns(CLOCK_MONOTONIC) - synced_at >= FSYNC_INTERVAL_NS)) {
            fdatasync(w->fd);
            w->syncs++, dirty = 0, synced_at = now_ns(CLOCK_MONOTONIC);
        }
        pthread_mutex_lock(&w->mu);
        if (stop && !w->queue.n) break;
    }
    pthread_mutex_unlock(&w->mu);
    free(out.d);
    return NULL;
}

static void journal_open(journal_t *j, const char *path) {
    memset(j, 0, sizeof *j);
    memset(j->last_hash, '0', 64); /* GENESIS_HASH */
    j->sha = EVP_MD_CTX_new();
    j->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    j->w.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (j->w.fd < 0) { perror("noop_core: journal"); exit(1); }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&j->w.cv, &attr);
    pthread_mutex_init(&j->w.mu, NULL);
    pthread_create(&j->w.thread, NULL, writer_main, &j->w);
}

/* One wake-up of the writer for the whole batch (Journal.hand_off). */
static void journal_hand_off(journal_t *j) {
    if (!j->batch_lines) return;
    pthread_mutex_lock(&j->w.mu);
    buf_put(&j->w.queue, j->batch.d, j->batch.n);
    pthread_cond_signal(&j->w.cv);
    pthread_mutex_unlock(&j->w.mu);
    j->batch.n = 0, j->batch_lines = 0, j->handoffs++;
}

static void journal_close(journal_t *j) {
    journal_hand_off(j);
    pthread_mutex_lock(&j->w.mu);
    j->w.stop = 1;
    pthread_cond_signal(&j->w.cv);
    pthread_mutex_unlock(&j->w.mu);
    pthread_join(j->w.thread, NULL);
    close(j->w.fd);
}

/* Chain and batch one record. `head` holds its keys that sort before "hash" (agent_id ...
 * event_type), each followed by a comma; `tail` those after "id"/"prev_hash" (syscall,
 * timestamp) and the closing brace: canonical JSON of the record is head+id+prev_hash+tail and
 * its hash is the SHA-256 of exactly that (Journal._seal). */
static void journal_append(journal_t *j, const buf_t *head, const buf_t *tail, uint64_t now) {
    uint64_t id = j->last_id + 1;
    buf_t *rec = &j->rec;
    rec->n = 0;
    buf_put(rec, head->d, head->n);
    size_t chained_at = rec->n;
    buf_printf(rec, "\"id\":%" PRIu64 ",\"prev_hash\":\"%s\",", id, j->last_hash);
    buf_put(rec, tail->d, tail->n);

    unsigned char digest[32];
    unsigned int digest_len = 0;
    EVP_DigestInit_ex(j->sha, j->sha256, NULL);
    EVP_DigestUpdate(j->sha, rec->d, rec->n);
    EVP_DigestFinal_ex(j->sha, digest, &digest_len);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) j->last_hash[2 * i] = hex[digest[i] >> 4], j->last_hash[2 * i + 1] = hex[digest[i] & 15];
    j->last_id = id;

    buf_t *line = &j->line;
    line->n = 0;
    buf_put(line, rec->d, chained_at);
    buf_puts(line, "\"hash\":\"");
    buf_put(line, j->last_hash, 64);
    buf_puts(line, "\",");
    buf_put(line, rec->d + chained_at, rec->n - chained_at);
    buf_byte(line, '\n');

    if (!j->batch_lines) j->batch_since = now;
    buf_put(&j->batch, line->d, line->n);
    j->batch_lines++;
    /* The ring the Python kernel keeps for audit.query (it holds the record as a dict). */
    char *kept = malloc(line->n);
    memcpy(kept, line->d, line->n);
    free(j->ring[j->ring_next]);
    j->ring[j->ring_next] = kept;
    j->ring_next = (j->ring_next + 1) % RING_SIZE;
    if (j->batch_lines >= MAX_BATCH_LINES) journal_hand_off(j);
}

/* ---- identity and authorization ------------------------------------------------------------ */

/* Operator sessions by ZeroMQ routing id (core/sessions.py): a new id opens a session. */
#define SESSION_SLOTS 4096
typedef struct {
    uint8_t len;
    uint8_t key[255];
    int id;
} session_t;
static session_t sessions[SESSION_SLOTS];
static int next_principal_id = 1;

static uint32_t fnv1a(const void *data, size_t n, uint32_t h) {
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

static int session_of(const uint8_t *routing, size_t n) {
    if (n > 255) n = 255;
    uint32_t i = fnv1a(routing, n, 2166136261u) % SESSION_SLOTS;
    for (int probes = 0; probes < SESSION_SLOTS; probes++, i = (i + 1) % SESSION_SLOTS) {
        session_t *s = &sessions[i];
        if (s->id && s->len == n && memcmp(s->key, routing, n) == 0) return s->id;
        if (!s->id) {
            s->len = (uint8_t)n;
            memcpy(s->key, routing, n);
            s->id = next_principal_id++;
            return s->id;
        }
    }
    return 0; /* the table is full: a prototype keeps no more sessions */
}

/* What may call what: (identity, syscall) -> allowed, the Permissions.require of the identity's
 * level for the syscall's right, resolved into one table when the kernel starts. */
#define ACL_SLOTS 1024
typedef struct {
    char key[96]; /* identity NUL call */
    size_t len;
    int used;
} acl_t;
static acl_t acl[ACL_SLOTS];

static size_t acl_key(char *out, const char *identity, const uint8_t *call, size_t call_len) {
    size_t n = strlen(identity);
    memcpy(out, identity, n + 1);
    memcpy(out + n + 1, call, call_len);
    return n + 1 + call_len;
}

static void acl_allow(const char *identity, const char *call) {
    char key[96];
    size_t n = acl_key(key, identity, (const uint8_t *)call, strlen(call));
    uint32_t i = fnv1a(key, n, 2166136261u) % ACL_SLOTS;
    while (acl[i].used) i = (i + 1) % ACL_SLOTS;
    memcpy(acl[i].key, key, n);
    acl[i].len = n, acl[i].used = 1;
}

static int acl_allows(const char *identity, const uint8_t *call, size_t call_len) {
    char key[96];
    if (strlen(identity) + 1 + call_len > sizeof key) return 0;
    size_t n = acl_key(key, identity, call, call_len);
    for (uint32_t i = fnv1a(key, n, 2166136261u) % ACL_SLOTS; acl[i].used; i = (i + 1) % ACL_SLOTS)
        if (acl[i].len == n && memcmp(acl[i].key, key, n) == 0) return 1;
    return 0;
}

/* The syscalls this prototype runs (both answer body.msg) and every identity's grant. */
static const char *const SYSCALLS[] = {"noop", "echo"};
static const char *const IDENTITIES[] = {"operator", "agent:standard", "agent:sandboxed", "agent:readonly", "agent:minimal"};

static int known_syscall(const mp_val_t *call) {
    for (size_t i = 0; i < sizeof SYSCALLS / sizeof *SYSCALLS; i++)
        if (str_is(call, SYSCALLS[i])) return 1;
    return 0;
}

/* ---- one request ----------------------------------------------------------------------------- */

typedef struct {
    const char *code;
    char message[400];
} fault_t;

typedef struct {
    void *sock;
    journal_t journal;
    buf_t reply, head, tail;
    uint64_t served, errors;
} core_t;

static void set_error(fault_t *e, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    e->code = code;
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
}

static void mp_put_str(buf_t *b, const char *s, size_t n) {
    if (n < 32) buf_byte(b, (uint8_t)(0xa0 | n));
    else if (n < 256) { buf_byte(b, 0xd9); buf_byte(b, (uint8_t)n); }
    else { buf_byte(b, 0xda); buf_byte(b, (uint8_t)(n >> 8)); buf_byte(b, (uint8_t)n); }
    buf_put(b, s, n);
}

/* wire.ok_reply / error_reply: {"id": id, "ok": ..., "result"|"error": ...}; `id_raw` is the
 * request's own msgpack encoding of the id (msgpack-python packs minimally, as the kernel does). */
static void build_reply(buf_t *b, const uint8_t *id_raw, size_t id_len, const uint8_t *result, size_t result_len,
                        const fault_t *err) {
    b->n = 0;
    PUT_LIT(b, "\x83\xa2id");
    if (id_raw) buf_put(b, id_raw, id_len);
    else buf_byte(b, 0xc0);
    if (!err) {
        PUT_LIT(b, "\xa2ok\xc3\xa6result");
        buf_put(b, result, result_len);
        return;
    }
    PUT_LIT(b, "\xa2ok\xc2\xa5" "error\x83\xa4" "code");
    mp_put_str(b, err->code, strlen(err->code));
    PUT_LIT(b, "\xa7message");
    mp_put_str(b, err->message, strlen(err->message));
    PUT_LIT(b, "\xa7" "details\x80");
}

static void send_reply(core_t *c, zmq_msg_t *routing) {
    if (!c->sock) return; /* `cost` mode: no socket */
    /* DONTWAIT: a peer that is gone or whose queue is full loses its reply (dispatch._send). */
    if (zmq_msg_send(routing, c->sock, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return;
    zmq_send(c->sock, "CLOVE1", 6, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->sock, "REP", 3, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(c->sock, c->reply.d, c->reply.n, ZMQ_DONTWAIT);
}

/* Dispatcher._record for an operator session's request. */
static void record(core_t *c, int session, const mp_val_t *call, const uint8_t *body, const uint8_t *body_end,
                   const fault_t *err, uint64_t started) {
    buf_t *h = &c->head, *t = &c->tail;
    int denied = err != NULL; /* every error this prototype can give is a denial or proto.* */
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    h->n = 0, t->n = 0;
    buf_puts(h, "{\"agent_id\":null,\"agent_name\":null,\"args\":");
    if (!call) buf_puts(h, "null");
    else if (!body) buf_puts(h, "{}");
    else put_summary_at(h, body, body_end, 0, 0);
    buf_printf(h, ",\"category\":\"%s\",\"code\":", denied ? "SECURITY" : "SYSCALL");
    put_json_cstr(h, err ? err->code : "ok");
    buf_printf(h, ",\"decision\":\"%s\",\"details\":{\"caller\":\"operator\",\"caller_id\":%d", denied ? "denied" : "allowed",
               session);
    if (err) {
        buf_puts(h, ",\"message\":");
        put_json_cstr(h, err->message);
    }
    buf_printf(h, "},\"duration_us\":%" PRIu64 ",\"event_type\":", (now - started) / 1000);
    if (call) put_json_str(h, call->data, call->len, SUM_MAX_STR);
    else buf_puts(h, "\"proto.rejected\"");
    buf_byte(h, ',');
    buf_puts(t, "\"syscall\":");
    if (call) put_json_str(t, call->data, call->len, SUM_MAX_STR);
    else buf_puts(t, "null");
    buf_puts(t, ",\"timestamp\":");
    put_float(t, (double)now_ns(CLOCK_REALTIME) / 1e9);
    buf_byte(t, '}');
    journal_append(&c->journal, h, t, now);
}

/* wire.decode_request, then authorize, run noop/echo, journal and reply (Dispatcher.handle). */
static void handle(core_t *c, zmq_msg_t *frames, int nframes, uint64_t started) {
    const uint8_t *routing = zmq_msg_data(&frames[0]);
    int session = session_of(routing, zmq_msg_size(&frames[0]));
    fault_t err = {0};
    const uint8_t *id_raw = NULL, *body = NULL, *body_end = NULL;
    size_t id_len = 0;
    mp_val_t call = {0};
    int have_call = 0;

    if (nframes != 4) {
        set_error(&err, "proto.malformed", "expected 3 frames, got %d", nframes - 1);
        goto rejected;
    }
    if (zmq_msg_size(&frames[1]) != 6 || memcmp(zmq_msg_data(&frames[1]), "CLOVE1", 6) != 0) {
        set_error(&err, "proto.version", "unsupported protocol version");
        goto rejected;
    }
    if (zmq_msg_size(&frames[2]) != 3 || memcmp(zmq_msg_data(&frames[2]), "REQ", 3) != 0) {
        set_error(&err, "proto.malformed", "expected a request frame (REQ)");
        goto rejected;
    }
    size_t size = zmq_msg_size(&frames[3]);
    if (size > MAX_MESSAGE_BYTES) {
        set_error(&err, "proto.too_large", "request of %zu bytes exceeds the limit of %u", size, MAX_MESSAGE_BYTES);
        goto rejected;
    }
    const uint8_t *payload = zmq_msg_data(&frames[3]);
    mp_t r = {payload, payload + size};
    mp_val_t map;
    if (mp_read(&r, &map) < 0) {
        set_error(&err, "proto.malformed", "payload is not valid msgpack");
        goto rejected;
    }
    if (map.kind != T_MAP) {
        mp_t whole = {payload, payload + size};
        int valid = mp_skip(&whole, 0) != -1 && whole.p == whole.end;
        set_error(&err, "proto.malformed", valid ? "payload must be a map" : "payload is not valid msgpack");
        goto rejected;
    }
    /* One pass over the envelope: each value is decoded (validated) once; the body's nesting is
     * counted from 1 like wire.too_deep. A body too deep ends the pass (its id came first). */
    int unknown_key = 0, bad_body = 0, deep = 0;
    int broken = map.len > (size_t)(r.end - r.p); /* more keys than bytes: truncated */
    for (uint32_t i = 0; i < map.len && !deep && !broken; i++) {
        mp_val_t key, value;
        /* A key that is not a str (the envelope's are) is malformed here; msgpack-python
         * would decode a bytes key and the kernel reject it as unknown: proto.malformed too. */
        if (mp_read(&r, &key) < 0 || key.kind != T_STR || utf8_chars(key.data, key.len) < 0) {
            broken = 1;
            break;
        }
        const uint8_t *at = r.p;
        mp_t peek = r;
        int rc = mp_read(&peek, &value) < 0 ? -1 : mp_skip(&r, 1);
        if (rc == -1) {
            broken = 1;
            break;
        }
        if (str_is(&key, "id")) {
            long chars = value.kind == T_STR ? utf8_chars(value.data, value.len) : 0;
            int valid = value.kind == T_INT || value.kind == T_UINT || (value.kind == T_STR && chars <= MAX_ID_CHARS);
            id_raw = valid ? at : NULL, id_len = valid ? (size_t)(r.p - at) : 0;
        } else if (str_is(&key, "call")) {
            have_call = value.kind == T_STR;
            call = value;
        } else if (str_is(&key, "body")) {
            bad_body = value.kind != T_MAP;
            body = at, body_end = r.p;
            deep = rc == -2;
        } else {
            unknown_key = 1;
            deep = rc == -2;
        }
    }
    if (broken || (r.p != r.end && !deep)) { /* undecodable, or trailing bytes (ExtraData) */
        set_error(&err, "proto.malformed", "payload is not valid msgpack");
        id_raw = NULL;
        goto rejected;
    }
    if (!id_raw) {
        set_error(&err, "proto.malformed", "request id must be an int or a short string");
        goto rejected;
    }
    long call_chars = have_call ? utf8_chars(call.data, call.len) : 0;
    if (!have_call || call_chars < 1 || call_chars > MAX_CALL_CHARS) {
        set_error(&err, "proto.malformed", "'call' must be a non-empty syscall name");
        goto rejected;
    }
    if (bad_body) {
        set_error(&err, "proto.malformed", "'body' must be a map");
        goto rejected;
    }
    if (unknown_key) {
        set_error(&err, "proto.malformed", "unknown envelope keys");
        goto rejected;
    }
    if (deep) {
        set_error(&err, "proto.malformed", "'body' nests deeper than %d levels", MAX_DEPTH);
        body = NULL;
        goto rejected;
    }

    /* Authorize: the registry, then (identity, call) in the grant table. */
    if (!known_syscall(&call)) {
        set_error(&err, "proto.unknown_syscall", "unknown syscall '%.*s'", (int)call.len, call.data);
        goto failed;
    }
    if (!acl_allows("operator", call.data, call.len)) {
        set_error(&err, "perm.denied", "%.*s is not granted", (int)call.len, call.data);
        goto failed;
    }
    /* noop / echo {msg: str = ""} -> msg (the raw msgpack str is the result as it is). */
    const uint8_t *result = (const uint8_t *)"\xa0";
    size_t result_len = 1;
    if (body) {
        mp_t b = {body, body_end};
        mp_val_t head;
        mp_read(&b, &head);
        for (uint32_t i = 0; i < head.len; i++) {
            mp_val_t key, value;
            mp_read(&b, &key);
            const uint8_t *at = b.p;
            if (!str_is(&key, "msg")) {
                set_error(&err, "proto.invalid_args", "%.*s: unknown argument", (int)call.len, call.data);
                goto failed;
            }
            mp_read(&b, &value);
            if (value.kind != T_STR) {
                set_error(&err, "proto.invalid_args", "%.*s: argument 'msg' must be str", (int)call.len, call.data);
                goto failed;
            }
            result = at, result_len = (size_t)(b.p - at);
        }
    }
    /* As the Python kernel: the reply is encoded, the record appended, then the reply sent
     * (a read-only call's reply does not wait for its record to be written). */
    build_reply(&c->reply, id_raw, id_len, result, result_len, NULL);
    record(c, session, &call, body, body_end, NULL, started);
    send_reply(c, &frames[0]);
    c->served++;
    return;

failed:
    build_reply(&c->reply, id_raw, id_len, NULL, 0, &err);
    send_reply(c, &frames[0]);
    record(c, session, &call, body, body_end, &err, started);
    c->errors++;
    return;
rejected:
    build_reply(&c->reply, id_raw, id_len, NULL, 0, &err);
    send_reply(c, &frames[0]);
    record(c, session, NULL, NULL, NULL, &err, started);
    c->errors++;
}

/* One multipart message, without waiting: 1, 0 when none is queued. */
static int serve_one(core_t *c) {
    zmq_msg_t frames[MAX_FRAMES];
    zmq_msg_init(&frames[0]);
    if (zmq_msg_recv(&frames[0], c->sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frames[0]);
        return 0;
    }
    uint64_t started = now_ns(CLOCK_MONOTONIC);
    int n = 1, more = zmq_msg_more(&frames[0]);
    while (more) { /* the rest of a multipart message is already here */
        zmq_msg_t extra, *m = n < MAX_FRAMES ? &frames[n] : &extra;
        zmq_msg_init(m);
        zmq_msg_recv(m, c->sock, 0);
        more = zmq_msg_more(m);
        if (m == &extra) zmq_msg_close(m); /* only counted */
        n++;
    }
    handle(c, frames, n, started);
    for (int i = 0; i < (n < MAX_FRAMES ? n : MAX_FRAMES); i++) zmq_msg_close(&frames[i]);
    return 1;
}

static void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

static void *bind_router(void *ctx, const char *endpoint) {
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int linger = 0, hwm = 10000;
    int64_t maxmsg = (int64_t)MAX_MESSAGE_BYTES * 4 + 4096; /* channels.HARD_CAP_FACTOR */
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(sock, endpoint) < 0) die("bind");
    return sock;
}

/* The kernel loop's shape (core/loop.py + dispatch.on_readable): poll, then a batch of up to
 * BATCH messages, then the journal's 2 ms hand-off timer. */
static void grant_all(void) {
    for (size_t i = 0; i < sizeof IDENTITIES / sizeof *IDENTITIES; i++)
        for (size_t k = 0; k < sizeof SYSCALLS / sizeof *SYSCALLS; k++) acl_allow(IDENTITIES[i], SYSCALLS[k]);
}

/* The work per NOOP without ZeroMQ: `n` requests (the SDK's frames for noop "x") through
 * handle() — decode, session, authorize, record, chain, batch and hand off, build the reply —
 * with the writer thread writing to `journal_path`. Prints the mean ns per request. */
static int cost(const char *journal_path, long n) {
    static core_t c;
    static const uint8_t payload[] = "\x83\xa2id\x01\xa4" "call\xa4noop\xa4" "body\x81\xa3msg\xa1x";
    grant_all();
    journal_open(&c.journal, journal_path);
    uint64_t started = now_ns(CLOCK_MONOTONIC), cpu_started = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    for (long i = 0; i < n; i++) {
        zmq_msg_t frames[4];
        const void *parts[4] = {"\0\x80\0\0\x29", "CLOVE1", "REQ", payload};
        const size_t sizes[4] = {5, 6, 3, sizeof payload - 1};
        for (int k = 0; k < 4; k++) { /* as a receive would leave them */
            zmq_msg_init_size(&frames[k], sizes[k]);
            memcpy(zmq_msg_data(&frames[k]), parts[k], sizes[k]);
        }
        uint64_t now = now_ns(CLOCK_MONOTONIC);
        handle(&c, frames, 4, now);
        for (int k = 0; k < 4; k++) zmq_msg_close(&frames[k]);
        if (c.journal.batch_lines && now_ns(CLOCK_MONOTONIC) - c.journal.batch_since >= HAND_OFF_NS)
            journal_hand_off(&c.journal);
    }
    journal_close(&c.journal); /* the writer's share is CPU time too */
    /* CPU time (both threads) is the figure: on a busy machine the wall clock counts waiting. */
    double cpu = (double)(now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_started), wall = (double)(now_ns(CLOCK_MONOTONIC) - started);
    printf("{\"requests\":%ld,\"cpu_ns_per_request\":%.1f,\"wall_ns_per_request\":%.1f,\"served\":%" PRIu64 "}\n", n,
           cpu / (double)n, wall / (double)n, c.served);
    return 0;
}

static int serve(const char *endpoint, const char *journal_path) {
    static core_t c;
    grant_all();
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
    c.sock = bind_router(ctx, endpoint);
    journal_open(&c.journal, journal_path);
    struct sigaction sa = {0};
    sa.sa_handler = on_stop; /* no SA_RESTART: zmq_poll returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    printf("ready\n");
    fflush(stdout);

    zmq_pollitem_t items[1] = {{c.sock, 0, ZMQ_POLLIN, 0}};
    while (!stopping) {
        long timeout = -1;
        if (c.journal.batch_lines) {
            uint64_t due = c.journal.batch_since + HAND_OFF_NS, now = now_ns(CLOCK_MONOTONIC);
            timeout = due > now ? (long)((due - now + 999999) / 1000000) : 0;
        }
        if (zmq_poll(items, 1, timeout) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (items[0].revents & ZMQ_POLLIN)
            for (int i = 0; i < BATCH && serve_one(&c); i++) {}
        if (c.journal.batch_lines && now_ns(CLOCK_MONOTONIC) - c.journal.batch_since >= HAND_OFF_NS)
            journal_hand_off(&c.journal);
    }
    journal_close(&c.journal);
    printf("{\"served\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"records\":%" PRIu64 ",\"hand_offs\":%" PRIu64
           ",\"writes\":%" PRIu64 ",\"syncs\":%" PRIu64 ",\"journal_bytes\":%" PRIu64 "}\n",
           c.served, c.errors, c.journal.last_id, c.journal.handoffs, c.journal.w.writes, c.journal.w.syncs,
           c.journal.w.bytes);
    fflush(stdout);
    zmq_close(c.sock);
    zmq_ctx_term(ctx);
    return 0;
}

/* The compiled floor: every frame straight back (common.py's _serve_echo in C). */
static _Noreturn void echo(const char *endpoint) {
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1);
    void *sock = bind_router(ctx, endpoint);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) die("recv");
        zmq_msg_send(&m, sock, zmq_msg_more(&m) ? ZMQ_SNDMORE : 0);
    }
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "serve") == 0) return serve(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "echo") == 0) echo(argv[2]);
    if (argc == 4 && strcmp(argv[1], "cost") == 0) return cost(argv[2], atol(argv[3]));
    fprintf(stderr, "usage: noop_core serve ENDPOINT JOURNAL | echo ENDPOINT | cost JOURNAL N\n");
    return 2;
}
