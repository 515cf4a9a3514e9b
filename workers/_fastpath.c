/* The I/O worker's compiled receive path (docs/worker.md "Receive path", docs/performance.md).
 *
 * Owns, for one worker: reading the class-1 UDP sockets with recvmmsg, the demultiplexer
 * (the same rules, drop reasons and counters as acquisition/demux.py, which stays the
 * reference: tests/acquisition/test_demux.py runs on both), and for a consumer whose data is
 * routine (its connection RUNNING, no outage open, no datagram missed) the whole sample: the
 * flight recorder entry (acquisition/originator.py's ring layout), the MessagePack body (the
 * bytes of acquisition/wire.py SampleStream.encode, the value written by the program of
 * acquisition/value_plan.py) and the two frames sent on the PUB socket through libzmq's own
 * zmq_send. Everything else goes back to Python as it is (a "slow" datagram): the connection
 * machine decides, Python publishes. O->T heartbeats go out in one sendmmsg.
 *
 * In a section of its own ("the bus forwarder's loop"), for the supervisor: the forwarding
 * loop of workers/forwarder.py, XSUB -> XPUB (and the replay buffer's capture) without the GIL.
 *
 * Built by setup.py as pyconpro.workers._fastpath when a C compiler is there; the worker runs
 * the pure-Python path otherwise, or when PYCONPRO_FASTPATH=0 (workers/fastpath.py).
 * Linux only (recvmmsg, sendmmsg), little-endian hosts (the recorder ring is native).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#if !defined(__linux__)
#error "the compiled receive path needs Linux (recvmmsg, sendmmsg)"
#endif
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the compiled receive path assumes a little-endian host"
#endif

/* ------------------------------------------------------------------ constants */

enum {  /* acquisition.demux.DropReason, in its order */
    DROP_MALFORMED, DROP_UNKNOWN_ID, DROP_WRONG_SOURCE, DROP_WRONG_PORT, DROP_STALE,
    DROP_SEQ_JUMP, DROP_WRONG_SIZE, N_DROPS
};

enum {  /* acquisition.value_plan.Op */
    OP_NIL = 1, OP_ATOM, OP_ATOMS, OP_BITS, OP_ARRAY, OP_MAP, OP_CONST, OP_BIT, OP_STRING
};

enum {  /* acquisition.value_plan.Kind */
    K_BOOL, K_I8, K_I16, K_I32, K_I64, K_U8, K_U16, K_U32, K_U64, K_F32, K_F64, N_KINDS
};
static const int KIND_SIZE[N_KINDS] = {1, 1, 2, 4, 8, 1, 2, 4, 8, 4, 8};

#define PREFIX_SIZE 20
#define BATCH 64
#define DGRAM_MAX 2048  /* what the Python path reads with recvfrom(2048) */
#define RING_COUNTS 16  /* acquisition/originator.py: two u64 counters, then the records */
#define RING_RECORD 80  /* <dIH2x64s */
#define RING_BYTES 64
#define ZMQ_DONTWAIT_ 1
#define ZMQ_SNDMORE_ 2

typedef int (*zmq_send_fn)(void *, const void *, size_t, int);
typedef int (*zmq_errno_fn)(void);
static zmq_send_fn p_zmq_send = NULL;
static zmq_errno_fn p_zmq_errno = NULL;

/* ------------------------------------------------------------------ a growable buffer */

typedef struct {
    char *p;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t more) {
    if (b->len + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more) cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) { PyErr_NoMemory(); return -1; }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(Buf *b, const void *data, size_t n) {
    if (buf_grow(b, n) < 0) return -1;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    return 0;
}

static inline void put_be16(char *p, uint16_t v) { p[0] = (char)(v >> 8); p[1] = (char)v; }
static inline void put_be32(char *p, uint32_t v) {
    p[0] = (char)(v >> 24); p[1] = (char)(v >> 16); p[2] = (char)(v >> 8); p[3] = (char)v;
}
static inline void put_be64(char *p, uint64_t v) {
    put_be32(p, (uint32_t)(v >> 32)); put_be32(p + 4, (uint32_t)v);
}

/* ------------------------------------------------------------------ MessagePack, as
 * msgpack-python packs: integers in their shortest form (unsigned for non-negative), floats as
 * float 64, str / bin / array / map with the smallest header. */

static int mp_uint(Buf *b, uint64_t v) {
    char t[9];
    if (v < 128) { t[0] = (char)v; return buf_put(b, t, 1); }
    if (v < 256) { t[0] = (char)0xcc; t[1] = (char)v; return buf_put(b, t, 2); }
    if (v < 65536) { t[0] = (char)0xcd; put_be16(t + 1, (uint16_t)v); return buf_put(b, t, 3); }
    if (v <= 0xFFFFFFFFull) { t[0] = (char)0xce; put_be32(t + 1, (uint32_t)v); return buf_put(b, t, 5); }
    t[0] = (char)0xcf; put_be64(t + 1, v); return buf_put(b, t, 9);
}

static int mp_int(Buf *b, int64_t v) {
    char t[9];
    if (v >= 0) return mp_uint(b, (uint64_t)v);
    if (v >= -32) { t[0] = (char)(int8_t)v; return buf_put(b, t, 1); }
    if (v >= -128) { t[0] = (char)0xd0; t[1] = (char)(int8_t)v; return buf_put(b, t, 2); }
    if (v >= -32768) { t[0] = (char)0xd1; put_be16(t + 1, (uint16_t)(int16_t)v); return buf_put(b, t, 3); }
    if (v >= -2147483648LL) { t[0] = (char)0xd2; put_be32(t + 1, (uint32_t)(int32_t)v); return buf_put(b, t, 5); }
    t[0] = (char)0xd3; put_be64(t + 1, (uint64_t)v); return buf_put(b, t, 9);
}

static int mp_double(Buf *b, double d) {
    char t[9];
    uint64_t u;
    memcpy(&u, &d, 8);
    t[0] = (char)0xcb;
    put_be64(t + 1, u);
    return buf_put(b, t, 9);
}

static int mp_bool(Buf *b, int v) { char c = v ? (char)0xc3 : (char)0xc2; return buf_put(b, &c, 1); }

static int mp_header(Buf *b, uint32_t n, int fix, int fixmax, unsigned char c16, unsigned char c32) {
    char t[5];
    if (n < (uint32_t)fixmax) { t[0] = (char)(fix | n); return buf_put(b, t, 1); }
    if (n < 65536) { t[0] = (char)c16; put_be16(t + 1, (uint16_t)n); return buf_put(b, t, 3); }
    t[0] = (char)c32; put_be32(t + 1, n); return buf_put(b, t, 5);
}
#define mp_array(b, n) mp_header((b), (n), 0x90, 16, 0xdc, 0xdd)
#define mp_map(b, n) mp_header((b), (n), 0x80, 16, 0xde, 0xdf)

static int mp_str_header(Buf *b, uint32_t n) {
    char t[5];
    if (n < 32) { t[0] = (char)(0xa0 | n); return buf_put(b, t, 1); }
    if (n < 256) { t[0] = (char)0xd9; t[1] = (char)n; return buf_put(b, t, 2); }
    if (n < 65536) { t[0] = (char)0xda; put_be16(t + 1, (uint16_t)n); return buf_put(b, t, 3); }
    t[0] = (char)0xdb; put_be32(t + 1, n); return buf_put(b, t, 5);
}

static int mp_bin(Buf *b, const char *data, uint32_t n) {
    char t[5];
    int h;
    if (n < 256) { t[0] = (char)0xc4; t[1] = (char)n; h = 2; }
    else if (n < 65536) { t[0] = (char)0xc5; put_be16(t + 1, (uint16_t)n); h = 3; }
    else { t[0] = (char)0xc6; put_be32(t + 1, n); h = 5; }
    if (buf_put(b, t, (size_t)h) < 0) return -1;
    return buf_put(b, data, n);
}

/* ------------------------------------------------------------------ the value program */

static inline uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int pack_atom(Buf *b, int kind, const unsigned char *d) {
    switch (kind) {
    case K_BOOL: return mp_bool(b, d[0] != 0);
    case K_I8: return mp_int(b, (int8_t)d[0]);
    case K_I16: { int16_t v; memcpy(&v, d, 2); return mp_int(b, v); }
    case K_I32: { int32_t v; memcpy(&v, d, 4); return mp_int(b, v); }
    case K_I64: { int64_t v; memcpy(&v, d, 8); return mp_int(b, v); }
    case K_U8: return mp_uint(b, d[0]);
    case K_U16: { uint16_t v; memcpy(&v, d, 2); return mp_uint(b, v); }
    case K_U32: { uint32_t v; memcpy(&v, d, 4); return mp_uint(b, v); }
    case K_U64: { uint64_t v; memcpy(&v, d, 8); return mp_uint(b, v); }
    case K_F32: { float v; memcpy(&v, d, 4); return mp_double(b, (double)v); }
    case K_F64: { double v; memcpy(&v, d, 8); return mp_double(b, v); }
    }
    return -1;
}

/* Check a program against an image of ``size`` bytes: every read inside it, every operand
 * there. Returns 0 when it is sound. */
static int plan_check(const unsigned char *pc, Py_ssize_t n, Py_ssize_t size) {
    const unsigned char *end = pc + n;
    while (pc < end) {
        Py_ssize_t need;
        switch (*pc) {
        case OP_NIL: pc += 1; break;
        case OP_ATOM:
            if (end - pc < 4 || pc[1] >= N_KINDS) return -1;
            need = rd16(pc + 2) + KIND_SIZE[pc[1]];
            if (need > size) return -1;
            pc += 4; break;
        case OP_ATOMS:
            if (end - pc < 6 || pc[1] >= N_KINDS) return -1;
            need = rd16(pc + 2) + (Py_ssize_t)rd16(pc + 4) * KIND_SIZE[pc[1]];
            if (need > size) return -1;
            pc += 6; break;
        case OP_BITS:
            if (end - pc < 5) return -1;
            need = rd16(pc + 1) + (rd16(pc + 3) + 7) / 8;
            if (need > size) return -1;
            pc += 5; break;
        case OP_ARRAY: case OP_MAP:
            if (end - pc < 5) return -1;
            pc += 5; break;
        case OP_CONST:
            if (end - pc < 3 || end - pc - 3 < rd16(pc + 1)) return -1;
            pc += 3 + rd16(pc + 1); break;
        case OP_BIT:
            if (end - pc < 4 || rd16(pc + 1) + 1 > size) return -1;
            pc += 4; break;
        case OP_STRING:
            if (end - pc < 7) return -1;
            if (rd16(pc + 1) + 4 > size || rd16(pc + 3) + rd16(pc + 5) > size) return -1;
            pc += 7; break;
        default: return -1;
        }
    }
    return 0;
}

static int plan_run(Buf *b, const unsigned char *pc, Py_ssize_t n, const unsigned char *d) {
    const unsigned char *end = pc + n;
    while (pc < end) {
        switch (*pc) {
        case OP_NIL: { char c = (char)0xc0; if (buf_put(b, &c, 1) < 0) return -1; pc += 1; break; }
        case OP_ATOM:
            if (pack_atom(b, pc[1], d + rd16(pc + 2)) < 0) return -1;
            pc += 4; break;
        case OP_ATOMS: {
            int kind = pc[1], size = KIND_SIZE[pc[1]];
            const unsigned char *p = d + rd16(pc + 2);
            uint16_t count = rd16(pc + 4);
            if (mp_array(b, count) < 0 || buf_grow(b, (size_t)count * 9) < 0) return -1;
            for (uint16_t i = 0; i < count; i++, p += size)
                if (pack_atom(b, kind, p) < 0) return -1;
            pc += 6; break;
        }
        case OP_BITS: {
            const unsigned char *p = d + rd16(pc + 1);
            uint16_t count = rd16(pc + 3);
            if (mp_array(b, count) < 0 || buf_grow(b, count) < 0) return -1;
            for (uint16_t i = 0; i < count; i++)
                b->p[b->len++] = (p[i >> 3] >> (i & 7)) & 1 ? (char)0xc3 : (char)0xc2;
            pc += 5; break;
        }
        case OP_ARRAY: if (mp_array(b, rd32(pc + 1)) < 0) return -1; pc += 5; break;
        case OP_MAP: if (mp_map(b, rd32(pc + 1)) < 0) return -1; pc += 5; break;
        case OP_CONST:
            if (buf_put(b, pc + 3, rd16(pc + 1)) < 0) return -1;
            pc += 3 + rd16(pc + 1); break;
        case OP_BIT:
            if (mp_bool(b, (d[rd16(pc + 1)] & pc[3]) != 0) < 0) return -1;
            pc += 4; break;
        case OP_STRING: {
            int32_t len;
            memcpy(&len, d + rd16(pc + 1), 4);
            uint16_t cap = rd16(pc + 5);
            uint32_t n_chars = len < 0 ? 0 : ((uint32_t)len > cap ? cap : (uint32_t)len);
            const unsigned char *s = d + rd16(pc + 3);
            uint32_t n_utf8 = n_chars;  /* ISO-8859-1: 0x80..0xFF take two bytes in UTF-8 */
            for (uint32_t i = 0; i < n_chars; i++) n_utf8 += s[i] >> 7;
            if (mp_str_header(b, n_utf8) < 0 || buf_grow(b, n_utf8) < 0) return -1;
            for (uint32_t i = 0; i < n_chars; i++) {
                unsigned char c = s[i];
                if (c < 0x80) b->p[b->len++] = (char)c;
                else { b->p[b->len++] = (char)(0xc0 | (c >> 6)); b->p[b->len++] = (char)(0x80 | (c & 0x3f)); }
            }
            pc += 7; break;
        }
        default:
            PyErr_SetString(PyExc_ValueError, "bad value program");
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ Tap: one consumer */

typedef struct {
    PyObject_HEAD
    PyObject *key;        /* the consumer's key (the worker finds it by this) */
    int express;          /* its routine datagrams are handled here (set by the worker) */
    unsigned long long gap;  /* the connection's gap counter, carried by every sample */
    /* the stream: topic, fragments f[0..7], the value program, the per-topic sq table */
    PyObject *topic;
    PyObject *fragments;  /* tuple of 8 bytes */
    PyObject *plan;       /* bytes */
    Py_ssize_t plan_size; /* the image size the program reads */
    PyObject *table;      /* dict topic -> next sq (wire.SeqCounter.table) */
    /* the flight recorder ring */
    PyObject *ring_owner;
    Py_buffer ring;
    Py_ssize_t ring_slots;
    uint16_t what_in;
    /* what happened here since the worker last asked (``take``) */
    unsigned long long pending;
    double last;
    unsigned long long samples;  /* express samples since the tap was made */
} Tap;

static PyTypeObject TapType;

static int Tap_init(Tap *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"key", NULL};
    PyObject *key;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O", names, &key)) return -1;
    Py_INCREF(key);
    Py_XSETREF(self->key, key);
    return 0;
}

static void Tap_release_ring(Tap *self) {
    if (self->ring_owner != NULL) {
        PyBuffer_Release(&self->ring);
        Py_CLEAR(self->ring_owner);
    }
}

static int Tap_traverse(Tap *self, visitproc visit, void *arg) {
    Py_VISIT(self->key);
    Py_VISIT(self->topic);
    Py_VISIT(self->fragments);
    Py_VISIT(self->plan);
    Py_VISIT(self->table);
    Py_VISIT(self->ring_owner);
    return 0;
}

static int Tap_clear(Tap *self) {
    Py_CLEAR(self->key);
    Py_CLEAR(self->topic);
    Py_CLEAR(self->fragments);
    Py_CLEAR(self->plan);
    Py_CLEAR(self->table);
    Tap_release_ring(self);
    return 0;
}

static void Tap_dealloc(Tap *self) {
    PyObject_GC_UnTrack(self);
    Tap_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(Tap_stream_doc,
"stream(topic, fragments, plan, size, table) or stream(None): how this consumer's samples\n"
"are encoded (wire.SampleStream.fragments, value_plan.compile_value_plan for an image of\n"
"``size`` bytes, the publisher's SeqCounter.table); None: not here (express stays off).");

static PyObject *Tap_stream(Tap *self, PyObject *args) {
    PyObject *topic, *fragments = NULL, *plan = NULL, *table = NULL;
    Py_ssize_t size = 0;
    if (!PyArg_ParseTuple(args, "O|OOnO", &topic, &fragments, &plan, &size, &table)) return NULL;
    if (topic == Py_None) {
        self->express = 0;
        Py_CLEAR(self->topic);
        Py_CLEAR(self->fragments);
        Py_CLEAR(self->plan);
        Py_CLEAR(self->table);
        Py_RETURN_NONE;
    }
    if (!PyBytes_Check(topic) || fragments == NULL || !PyTuple_Check(fragments)
            || PyTuple_GET_SIZE(fragments) != 8 || plan == NULL || !PyBytes_Check(plan)
            || table == NULL || !PyDict_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "stream(topic: bytes, fragments: 8 bytes, plan: bytes,"
                        " size: int, table: dict)");
        return NULL;
    }
    for (int i = 0; i < 8; i++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(fragments, i))) {
            PyErr_SetString(PyExc_TypeError, "fragments must be bytes");
            return NULL;
        }
    }
    if (plan_check((const unsigned char *)PyBytes_AS_STRING(plan), PyBytes_GET_SIZE(plan), size) < 0) {
        PyErr_Format(PyExc_ValueError, "the value program does not fit an image of %zd bytes", size);
        return NULL;
    }
    Py_INCREF(topic); Py_XSETREF(self->topic, topic);
    Py_INCREF(fragments); Py_XSETREF(self->fragments, fragments);
    Py_INCREF(plan); Py_XSETREF(self->plan, plan);
    Py_INCREF(table); Py_XSETREF(self->table, table);
    self->plan_size = size;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Tap_recorder_doc,
"recorder(buf, slots, what_in): the flight recorder ring (originator.FlightRecorder.buf) the\n"
"datagrams handled here are written to, as 'what_in' (its code).");

static PyObject *Tap_recorder(Tap *self, PyObject *args) {
    PyObject *buf;
    Py_ssize_t slots;
    int what;
    if (!PyArg_ParseTuple(args, "Oni", &buf, &slots, &what)) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (slots < 1 || view.len < RING_COUNTS + 2 * slots * RING_RECORD || what < 0 || what > 0xFFFF) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "recorder ring too small for its slots");
        return NULL;
    }
    Tap_release_ring(self);
    self->ring = view;
    Py_INCREF(buf);
    self->ring_owner = buf;
    self->ring_slots = slots;
    self->what_in = (uint16_t)what;
    Py_RETURN_NONE;
}

static inline void tap_record(Tap *t, double now, const char *data, uint32_t len) {
    if (t->ring_owner == NULL) return;
    char *base = t->ring.buf;
    uint64_t k;
    memcpy(&k, base, 8);
    uint64_t k1 = k + 1;
    memcpy(base, &k1, 8);
    char *rec = base + RING_COUNTS + (Py_ssize_t)(k % (uint64_t)t->ring_slots) * RING_RECORD;
    memcpy(rec, &now, 8);
    memcpy(rec + 8, &len, 4);
    memcpy(rec + 12, &t->what_in, 2);
    rec[14] = rec[15] = 0;
    size_t n = len < RING_BYTES ? len : RING_BYTES;
    memcpy(rec + 16, data, n);
    memset(rec + 16 + n, 0, RING_BYTES - n);
}

/* The next sq of the tap's topic, numbered in the shared table; -1 with an exception. */
static int tap_next_seq(Tap *t, uint64_t *seq) {
    PyObject *v = PyDict_GetItemWithError(t->table, t->topic);
    uint64_t n = 0;
    if (v != NULL) {
        n = PyLong_AsUnsignedLongLong(v);
        if (n == (uint64_t)-1 && PyErr_Occurred()) return -1;
    } else if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *next = PyLong_FromUnsignedLongLong(n + 1);  /* wraps at 2**64 like U64_MAX */
    if (next == NULL) return -1;
    int rc = PyDict_SetItem(t->table, t->topic, next);
    Py_DECREF(next);
    *seq = n;
    return rc;
}

#define FRAG(t, i) PyTuple_GET_ITEM((t)->fragments, (i))
#define PUT_FRAG(b, t, i) buf_put((b), PyBytes_AS_STRING(FRAG(t, i)), (size_t)PyBytes_GET_SIZE(FRAG(t, i)))

/* The body of one sample into ``b`` (cleared first); the data must be ``plan_size`` bytes. */
static int tap_encode(Tap *t, Buf *b, uint64_t seq, int64_t t_wall, int64_t t_mono, unsigned cs,
                      uint64_t gap, const char *data, Py_ssize_t n) {
    b->len = 0;
    if (PUT_FRAG(b, t, 0) < 0 || mp_uint(b, seq) < 0 || PUT_FRAG(b, t, 1) < 0
            || mp_int(b, t_wall) < 0 || PUT_FRAG(b, t, 2) < 0 || mp_int(b, t_mono) < 0
            || PUT_FRAG(b, t, 3) < 0 || mp_uint(b, cs) < 0 || PUT_FRAG(b, t, 4) < 0
            || mp_uint(b, gap) < 0 || PUT_FRAG(b, t, 5) < 0
            || plan_run(b, (const unsigned char *)PyBytes_AS_STRING(t->plan),
                        PyBytes_GET_SIZE(t->plan), (const unsigned char *)data) < 0
            || PUT_FRAG(b, t, 6) < 0 || mp_bin(b, data, (uint32_t)n) < 0 || PUT_FRAG(b, t, 7) < 0)
        return -1;
    return 0;
}

PyDoc_STRVAR(Tap_encode_doc,
"encode(t_wall_ns, t_mono_ns, cip_seq, gap, raw) -> bytes: the next body of this stream\n"
"(numbers it in the table, like wire.SampleStream.encode, whose bytes it are).");

static PyObject *Tap_encode(Tap *self, PyObject *args) {
    long long tw, tm;
    unsigned int cs;
    unsigned long long gap;
    Py_buffer raw;
    if (!PyArg_ParseTuple(args, "LLIKy*", &tw, &tm, &cs, &gap, &raw)) return NULL;
    PyObject *out = NULL;
    Buf b = {0};
    uint64_t seq;
    if (self->topic == NULL) {
        PyErr_SetString(PyExc_ValueError, "no stream: call stream() first");
    } else if (raw.len != self->plan_size) {
        PyErr_Format(PyExc_ValueError, "raw is %zd bytes, the stream's image %zd", raw.len,
                     self->plan_size);
    } else if (tap_next_seq(self, &seq) == 0
               && tap_encode(self, &b, seq, tw, tm, cs, gap, raw.buf, raw.len) == 0) {
        out = PyBytes_FromStringAndSize(b.p, (Py_ssize_t)b.len);
    }
    PyMem_Free(b.p);
    PyBuffer_Release(&raw);
    return out;
}

PyDoc_STRVAR(Tap_take_doc,
"take() -> (count, last): the datagrams handled here since the last call and the read time\n"
"of the last one (the worker reports them to the connection: on_data(last, 0, count)).");

static PyObject *Tap_take(Tap *self, PyObject *unused) {
    unsigned long long n = self->pending;
    self->pending = 0;
    return Py_BuildValue("Kd", n, self->last);
}

static PyMethodDef Tap_methods[] = {
    {"stream", (PyCFunction)Tap_stream, METH_VARARGS, Tap_stream_doc},
    {"recorder", (PyCFunction)Tap_recorder, METH_VARARGS, Tap_recorder_doc},
    {"encode", (PyCFunction)Tap_encode, METH_VARARGS, Tap_encode_doc},
    {"take", (PyCFunction)Tap_take, METH_NOARGS, Tap_take_doc},
    {NULL}
};

static PyMemberDef Tap_members[] = {
    {"key", T_OBJECT, offsetof(Tap, key), READONLY, "the consumer's key"},
    {"express", T_INT, offsetof(Tap, express), 0,
     "routine datagrams are handled here (cleared here when one is handed to Python)"},
    {"gap", T_ULONGLONG, offsetof(Tap, gap), 0, "the gap counter the samples carry"},
    {"samples", T_ULONGLONG, offsetof(Tap, samples), READONLY, "samples published here"},
    {"pending", T_ULONGLONG, offsetof(Tap, pending), READONLY, "datagrams not taken yet"},
    {NULL}
};

static PyTypeObject TapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyconpro.workers._fastpath.Tap",
    .tp_basicsize = sizeof(Tap),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One consumer as the compiled receive path sees it: Tap(key).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Tap_init,
    .tp_dealloc = (destructor)Tap_dealloc,
    .tp_traverse = (traverseproc)Tap_traverse,
    .tp_clear = (inquiry)Tap_clear,
    .tp_methods = Tap_methods,
    .tp_members = Tap_members,
};

/* ------------------------------------------------------------------ Demux */

typedef struct Route {
    uint32_t cid;
    uint32_t ip;          /* network order, as in sockaddr_in */
    uint16_t port;        /* host order */
    Py_ssize_t data_size;
    long long max_jump;   /* -1: any */
    int has_last, has_jump;
    uint32_t last_seq32, jumped_to;
    unsigned long long accepted;
    Py_ssize_t n_owners, cap_owners;
    PyObject **owners;
    struct Route *next;   /* the bucket's chain */
} Route;

typedef struct {
    PyObject_HEAD
    Route **buckets;
    Py_ssize_t n_buckets;  /* a power of two */
    Py_ssize_t n_routes;
    unsigned long long drops[N_DROPS];
    int dropped_set[N_DROPS];
    uint32_t dropped_ip[N_DROPS];
    uint16_t dropped_port[N_DROPS];
    unsigned long long accepted;
    /* the receive loop's counters: datagrams read, express samples, their EAGAIN drops,
     * receive errors */
    unsigned long long datagrams, samples, pub_drops, recv_errors;
    void *pub;             /* the libzmq socket of the PUB, or NULL */
    Buf body;
    /* recvmmsg buffers */
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addrs[BATCH];
    char data[BATCH][DGRAM_MAX];
} Demux;

static inline Py_ssize_t bucket_of(const Demux *d, uint32_t cid) {
    uint32_t h = cid * 2654435761u;
    return (Py_ssize_t)(h >> 8) & (d->n_buckets - 1);
}

static int Demux_init(Demux *self, PyObject *args, PyObject *kw) {
    if (!PyArg_ParseTuple(args, "")) return -1;
    if (self->buckets == NULL) {
        self->n_buckets = 64;
        self->buckets = PyMem_Calloc((size_t)self->n_buckets, sizeof(Route *));
        if (self->buckets == NULL) { PyErr_NoMemory(); return -1; }
    }
    for (int i = 0; i < BATCH; i++) {
        self->iov[i].iov_base = self->data[i];
        self->iov[i].iov_len = DGRAM_MAX;
        memset(&self->msgs[i], 0, sizeof(self->msgs[i]));
        self->msgs[i].msg_hdr.msg_iov = &self->iov[i];
        self->msgs[i].msg_hdr.msg_iovlen = 1;
        self->msgs[i].msg_hdr.msg_name = &self->addrs[i];
        self->msgs[i].msg_hdr.msg_namelen = sizeof(self->addrs[i]);
    }
    return 0;
}

static void route_free(Route *r) {
    for (Py_ssize_t i = 0; i < r->n_owners; i++) Py_DECREF(r->owners[i]);
    PyMem_Free(r->owners);
    PyMem_Free(r);
}

static int Demux_traverse(Demux *self, visitproc visit, void *arg) {
    for (Py_ssize_t b = 0; b < self->n_buckets; b++)
        for (Route *r = self->buckets[b]; r != NULL; r = r->next)
            for (Py_ssize_t i = 0; i < r->n_owners; i++) Py_VISIT(r->owners[i]);
    return 0;
}

static int Demux_clear(Demux *self) {
    for (Py_ssize_t b = 0; b < self->n_buckets; b++) {
        Route *r = self->buckets[b];
        self->buckets[b] = NULL;
        while (r != NULL) { Route *next = r->next; route_free(r); r = next; }
    }
    self->n_routes = 0;
    return 0;
}

static void Demux_dealloc(Demux *self) {
    PyObject_GC_UnTrack(self);
    Demux_clear(self);
    PyMem_Free(self->buckets);
    PyMem_Free(self->body.p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* "a.b.c.d" -> network-order address; -1 with ValueError for anything else */
static int parse_source(PyObject *source, uint32_t *ip, uint16_t *port) {
    const char *host;
    int p;
    if (!PyArg_ParseTuple(source, "si", &host, &p)) return -1;
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) != 1 || p < 0 || p > 65535) {
        PyErr_Format(PyExc_ValueError, "source %R is not (IPv4 address, port)", source);
        return -1;
    }
    *ip = a.s_addr;
    *port = (uint16_t)p;
    return 0;
}

static PyObject *source_tuple(uint32_t ip, uint16_t port) {
    char text[INET_ADDRSTRLEN];
    struct in_addr a = {.s_addr = ip};
    inet_ntop(AF_INET, &a, text, sizeof(text));
    return Py_BuildValue("(si)", text, (int)port);
}

static Route *find_route(Demux *d, uint32_t cid, uint32_t ip, uint16_t port, int *any_id,
                         int *same_host) {
    for (Route *r = d->buckets[bucket_of(d, cid)]; r != NULL; r = r->next) {
        if (r->cid != cid) continue;
        if (r->ip == ip && r->port == port) return r;
        *any_id = 1;
        if (r->ip == ip) *same_host = 1;
    }
    return NULL;
}

static int grow_buckets(Demux *d) {
    Py_ssize_t n = d->n_buckets * 2;
    Route **fresh = PyMem_Calloc((size_t)n, sizeof(Route *));
    if (fresh == NULL) { PyErr_NoMemory(); return -1; }
    Route **old = d->buckets;
    Py_ssize_t old_n = d->n_buckets;
    d->buckets = fresh;
    d->n_buckets = n;
    for (Py_ssize_t b = 0; b < old_n; b++) {
        Route *r = old[b];
        while (r != NULL) {
            Route *next = r->next;
            Py_ssize_t nb = bucket_of(d, r->cid);
            r->next = fresh[nb];
            fresh[nb] = r;
            r = next;
        }
    }
    PyMem_Free(old);
    return 0;
}

PyDoc_STRVAR(Demux_add_doc,
"_add(source, connection_id, data_size, owner, max_jump) -> str | None: route (see\n"
"acquisition.demux.Demux.add); the text of the UsageError to raise, or None.");

static PyObject *Demux_add(Demux *self, PyObject *args) {
    PyObject *source, *owner, *max_jump_obj;
    unsigned long cid;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OknOO", &source, &cid, &size, &owner, &max_jump_obj)) return NULL;
    uint32_t ip;
    uint16_t port;
    if (parse_source(source, &ip, &port) < 0) return NULL;
    long long max_jump = -1;
    if (max_jump_obj != Py_None) {
        max_jump = PyLong_AsLongLong(max_jump_obj);
        if (max_jump == -1 && PyErr_Occurred()) return NULL;
    }
    int any_id = 0, same_host = 0;
    Route *r = find_route(self, (uint32_t)cid, ip, port, &any_id, &same_host);
    if (r == NULL) {
        if (self->n_routes + 1 > self->n_buckets && grow_buckets(self) < 0) return NULL;
        r = PyMem_Calloc(1, sizeof(Route));
        if (r == NULL) return PyErr_NoMemory();
        r->cid = (uint32_t)cid;
        r->ip = ip;
        r->port = port;
        r->data_size = size;
        r->max_jump = max_jump;
        Py_ssize_t b = bucket_of(self, r->cid);
        r->next = self->buckets[b];
        self->buckets[b] = r;
        self->n_routes++;
    } else if (r->data_size != size) {
        return PyUnicode_FromFormat(
            "T->O id 0x%08lX from %S:%d is already routed with %zd data bytes, not %zd", cid,
            PyTuple_GET_ITEM(source, 0), (int)port, r->data_size, size);
    }
    for (Py_ssize_t i = 0; i < r->n_owners; i++) {
        int eq = PyObject_RichCompareBool(r->owners[i], owner, Py_EQ);
        if (eq < 0) return NULL;
        if (eq) Py_RETURN_NONE;
    }
    if (r->n_owners == r->cap_owners) {
        Py_ssize_t cap = r->cap_owners ? 2 * r->cap_owners : 2;
        PyObject **owners = PyMem_Realloc(r->owners, (size_t)cap * sizeof(PyObject *));
        if (owners == NULL) return PyErr_NoMemory();
        r->owners = owners;
        r->cap_owners = cap;
    }
    Py_INCREF(owner);
    r->owners[r->n_owners++] = owner;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Demux_remove_doc, "remove(source, connection_id, owner): see acquisition.demux.");

static PyObject *Demux_remove(Demux *self, PyObject *args) {
    PyObject *source, *owner;
    unsigned long cid;
    if (!PyArg_ParseTuple(args, "OkO", &source, &cid, &owner)) return NULL;
    uint32_t ip;
    uint16_t port;
    if (parse_source(source, &ip, &port) < 0) return NULL;
    Py_ssize_t b = bucket_of(self, (uint32_t)cid);
    for (Route **link = &self->buckets[b]; *link != NULL; link = &(*link)->next) {
        Route *r = *link;
        if (r->cid != (uint32_t)cid || r->ip != ip || r->port != port) continue;
        for (Py_ssize_t i = 0; i < r->n_owners; i++) {
            int eq = PyObject_RichCompareBool(r->owners[i], owner, Py_EQ);
            if (eq < 0) return NULL;
            if (eq) {
                PyObject *gone = r->owners[i];
                memmove(&r->owners[i], &r->owners[i + 1],
                        (size_t)(r->n_owners - i - 1) * sizeof(PyObject *));
                r->n_owners--;
                Py_DECREF(gone);
                break;
            }
        }
        if (r->n_owners == 0) {
            *link = r->next;
            route_free(r);
            self->n_routes--;
        }
        break;
    }
    Py_RETURN_NONE;
}

static inline void drop(Demux *d, int reason, uint32_t ip, uint16_t port) {
    d->drops[reason]++;
    d->dropped_set[reason] = 1;
    d->dropped_ip[reason] = ip;
    d->dropped_port[reason] = port;
}

static inline int32_t seq32_diff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }

/* acquisition/demux.py Demux.admit: the route, with *missed and *cseq, or NULL (dropped). */
static Route *admit(Demux *d, const unsigned char *p, Py_ssize_t n, uint32_t ip, uint16_t port,
                    long long *missed, unsigned *cseq) {
    if (n < PREFIX_SIZE) { drop(d, DROP_MALFORMED, ip, port); return NULL; }
    uint16_t count = rd16(p), item_type = rd16(p + 2), item_len = rd16(p + 4);
    uint32_t cid = rd32(p + 6), seq = rd32(p + 10);
    uint16_t data_type = rd16(p + 14), data_len = rd16(p + 16);
    if (count != 2 || item_type != 0x8002 || item_len != 8) {
        drop(d, DROP_MALFORMED, ip, port);
        return NULL;
    }
    int any_id = 0, same_host = 0;
    Route *r = find_route(d, cid, ip, port, &any_id, &same_host);
    if (r == NULL) {
        drop(d, !any_id ? DROP_UNKNOWN_ID : same_host ? DROP_WRONG_PORT : DROP_WRONG_SOURCE,
             ip, port);
        return NULL;
    }
    if (data_type != 0x00B1 || (Py_ssize_t)data_len != n - 18) {
        drop(d, DROP_MALFORMED, ip, port);
        return NULL;
    }
    if (n - PREFIX_SIZE != r->data_size) { drop(d, DROP_WRONG_SIZE, ip, port); return NULL; }
    long long m = 0;
    if (r->has_last) {
        long long diff = seq32_diff(seq, r->last_seq32);
        if (diff <= 0) { drop(d, DROP_STALE, ip, port); return NULL; }
        if (r->max_jump < 0 || diff <= r->max_jump) {
            m = diff - 1;
        } else if (r->has_jump && seq32_diff(seq, r->jumped_to) > 0
                   && seq32_diff(seq, r->jumped_to) <= r->max_jump) {
            m = diff - 1;  /* it continues from the jump before it: the jump was real */
        } else {
            r->has_jump = 1;
            r->jumped_to = seq;
            drop(d, DROP_SEQ_JUMP, ip, port);
            return NULL;
        }
    }
    r->has_last = 1;
    r->last_seq32 = seq;
    r->has_jump = 0;
    r->accepted++;
    d->accepted++;
    *missed = m;
    *cseq = rd16(p + 18);
    return r;
}

PyDoc_STRVAR(Demux_receive_doc,
"_receive(data, source) -> (owners, connection_id, sequence, cip_sequence, missed) | None:\n"
"admit one datagram (acquisition.demux.Demux.receive's decision, without its objects).");

static PyObject *Demux_receive(Demux *self, PyObject *args) {
    Py_buffer data;
    PyObject *source;
    if (!PyArg_ParseTuple(args, "y*O", &data, &source)) return NULL;
    uint32_t ip;
    uint16_t port;
    if (parse_source(source, &ip, &port) < 0) { PyBuffer_Release(&data); return NULL; }
    long long missed;
    unsigned cseq;
    Route *r = admit(self, data.buf, data.len, ip, port, &missed, &cseq);
    PyBuffer_Release(&data);
    if (r == NULL) Py_RETURN_NONE;
    PyObject *owners = PyTuple_New(r->n_owners);
    if (owners == NULL) return NULL;
    for (Py_ssize_t i = 0; i < r->n_owners; i++) {
        Py_INCREF(r->owners[i]);
        PyTuple_SET_ITEM(owners, i, r->owners[i]);
    }
    return Py_BuildValue("(NkkIL)", owners, (unsigned long)r->cid, (unsigned long)r->last_seq32,
                         cseq, missed);
}

/* One express sample: recorder, counts, body, the two frames. 0, or -1 with an exception. */
static int express(Demux *d, Tap *t, double now, int64_t t_wall, int64_t t_mono,
                   const char *data, Py_ssize_t n, unsigned cseq) {
    uint64_t seq;
    tap_record(t, now, data, (uint32_t)n);
    t->pending++;
    t->last = now;
    t->samples++;
    d->samples++;
    if (tap_next_seq(t, &seq) < 0) return -1;
    if (tap_encode(t, &d->body, seq, t_wall, t_mono, cseq, t->gap, data + PREFIX_SIZE,
                   n - PREFIX_SIZE) < 0)
        return -1;
    if (d->pub == NULL) return 0;  /* tests: encoded, not sent */
    if (p_zmq_send(d->pub, PyBytes_AS_STRING(t->topic), (size_t)PyBytes_GET_SIZE(t->topic),
                   ZMQ_SNDMORE_ | ZMQ_DONTWAIT_) < 0) {
        int e = p_zmq_errno();
        if (e == EAGAIN) { d->pub_drops++; return 0; }  /* the PUB's pipe is full: counted */
        errno = e;
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "zmq_send (topic)");
        return -1;
    }
    /* A PUB that took the first frame takes the rest of the message (libzmq). */
    if (p_zmq_send(d->pub, d->body.p, d->body.len, ZMQ_DONTWAIT_) < 0) {
        errno = p_zmq_errno();
        PyErr_SetFromErrnoWithFilename(PyExc_OSError, "zmq_send (body)");
        return -1;
    }
    return 0;
}

/* Admit and handle one batch read at ``now``; slow datagrams are appended to ``slow``. */
static int handle_batch(Demux *d, int count, double now, PyObject *wall_ns, PyObject *slow) {
    int64_t t_wall = 0, t_mono = 0;
    int have_times = 0;
    for (int i = 0; i < count; i++) {
        const char *p = d->data[i];
        Py_ssize_t n = d->msgs[i].msg_len;
        uint32_t ip = d->addrs[i].sin_addr.s_addr;
        uint16_t port = ntohs(d->addrs[i].sin_port);
        long long missed;
        unsigned cseq;
        Route *r = admit(d, (const unsigned char *)p, n, ip, port, &missed, &cseq);
        if (r == NULL) continue;
        if (!have_times) {
            PyObject *w = PyObject_CallNoArgs(wall_ns);
            if (w == NULL) return -1;
            t_wall = PyLong_AsLongLong(w);
            Py_DECREF(w);
            if (t_wall == -1 && PyErr_Occurred()) return -1;
            t_mono = llrint(now * 1e9);  /* Python's round(now * 1e9): half to even */
            have_times = 1;
        }
        PyObject *bytes = NULL;
        for (Py_ssize_t k = 0; k < r->n_owners; k++) {
            PyObject *owner = r->owners[k];
            if (Py_IS_TYPE(owner, &TapType)) {
                Tap *t = (Tap *)owner;
                if (t->express && missed == 0 && t->topic != NULL
                        && n - PREFIX_SIZE == t->plan_size) {
                    if (express(d, t, now, t_wall, t_mono, p, n, cseq) < 0) {
                        Py_XDECREF(bytes);
                        return -1;
                    }
                    continue;
                }
                t->express = 0;  /* keep this consumer's order: the rest of its data follows */
            }
            if (bytes == NULL) {
                bytes = PyBytes_FromStringAndSize(p, n);
                if (bytes == NULL) return -1;
            }
            PyObject *item = Py_BuildValue("(OOLIdL)", owner, bytes, missed, cseq, now, t_wall);
            if (item == NULL || PyList_Append(slow, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(bytes);
                return -1;
            }
            Py_DECREF(item);
        }
        Py_XDECREF(bytes);
    }
    return 0;
}

/* now = clock(); 0, or -1 with an exception */
static int read_clock(PyObject *clock, double *now) {
    PyObject *c = PyObject_CallNoArgs(clock);
    if (c == NULL) return -1;
    *now = PyFloat_AsDouble(c);
    Py_DECREF(c);
    return (*now == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int read_batch(Demux *d, int fd) {
    for (int i = 0; i < BATCH; i++) d->msgs[i].msg_hdr.msg_namelen = sizeof(d->addrs[i]);
    for (;;) {
        int got = recvmmsg(fd, d->msgs, BATCH, MSG_DONTWAIT, NULL);
        if (got >= 0) return got;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
        /* ICMP errors surface here on Linux; the next read goes on (like the Python loop) */
        d->recv_errors++;
        return -2;
    }
}

PyDoc_STRVAR(Demux_drain_doc,
"drain(fds, clock, wall_ns, budget_s) -> (drained, slow): read the UDP sockets ``fds``, a\n"
"batch of up to 64 from each in turn, until every one is empty or ``budget_s`` is spent\n"
"(``drained`` False: one still had datagrams). Each batch is read, then ``clock()`` once (its\n"
"datagrams' read time), then admitted; routine datagrams of express taps are published\n"
"here, every other accepted one is in ``slow`` as (owner, datagram, missed, cip_sequence,\n"
"now, t_wall_ns), in order.");

static PyObject *Demux_drain(Demux *self, PyObject *args) {
    PyObject *fds_obj, *clock, *wall_ns;
    double budget;
    if (!PyArg_ParseTuple(args, "OOOd", &fds_obj, &clock, &wall_ns, &budget)) return NULL;
    PyObject *fds_seq = PySequence_Fast(fds_obj, "fds must be a sequence of ints");
    if (fds_seq == NULL) return NULL;
    Py_ssize_t n_fds = PySequence_Fast_GET_SIZE(fds_seq);
    int fds_small[16];
    int *fds = n_fds <= 16 ? fds_small : PyMem_Malloc((size_t)n_fds * sizeof(int));
    PyObject *slow = PyList_New(0);
    PyObject *result = NULL;
    if (fds == NULL || slow == NULL) { PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < n_fds; i++) {
        fds[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(fds_seq, i));
        if (fds[i] == -1 && PyErr_Occurred()) goto done;
    }
    double now;
    if (read_clock(clock, &now) < 0) goto done;
    double deadline = now + budget;
    Py_ssize_t pending = n_fds;
    int drained = 1;
    while (pending > 0) {
        Py_ssize_t still = 0;
        int reads_clock = 0;
        for (Py_ssize_t i = 0; i < pending; i++) {
            int got = read_batch(self, fds[i]);
            if (got == -2) { fds[still++] = fds[i]; continue; }  /* an error: read again */
            if (got > 0) {
                if (read_clock(clock, &now) < 0) goto done;
                reads_clock = 1;
                self->datagrams += (unsigned long long)got;
                if (handle_batch(self, got, now, wall_ns, slow) < 0) goto done;
            }
            if (got == BATCH) fds[still++] = fds[i];
        }
        pending = still;
        if (pending > 0 && reads_clock && now >= deadline) { drained = 0; break; }
        if (pending > 0 && !reads_clock) {
            /* only errors this round: bound them by the budget too */
            if (read_clock(clock, &now) < 0) goto done;
            if (now >= deadline) { drained = 0; break; }
        }
    }
    result = Py_BuildValue("(OO)", drained ? Py_True : Py_False, slow);
done:
    if (fds != NULL && fds != fds_small) PyMem_Free(fds);
    Py_XDECREF(slow);
    Py_DECREF(fds_seq);
    return result;
}

PyDoc_STRVAR(Demux_publisher_doc,
"publisher(socket_address): the libzmq socket (pyzmq's Socket.underlying) express samples\n"
"are sent on, or 0 for none (they are then encoded and dropped: tests).");

static PyObject *Demux_publisher(Demux *self, PyObject *arg) {
    void *p = PyLong_AsVoidPtr(arg);
    if (p == NULL && PyErr_Occurred()) return NULL;
    if (p != NULL && (p_zmq_send == NULL || p_zmq_errno == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "bind_libzmq() first");
        return NULL;
    }
    self->pub = p;
    Py_RETURN_NONE;
}

static PyObject *Demux_drop_counts(Demux *self, PyObject *unused) {
    PyObject *counts = PyTuple_New(N_DROPS), *last = PyTuple_New(N_DROPS);
    if (counts == NULL || last == NULL) { Py_XDECREF(counts); Py_XDECREF(last); return NULL; }
    for (int i = 0; i < N_DROPS; i++) {
        PyTuple_SET_ITEM(counts, i, PyLong_FromUnsignedLongLong(self->drops[i]));
        PyObject *src = Py_None;
        if (self->dropped_set[i]) src = source_tuple(self->dropped_ip[i], self->dropped_port[i]);
        else Py_INCREF(src);
        PyTuple_SET_ITEM(last, i, src);
    }
    return Py_BuildValue("(NN)", counts, last);
}

static Py_ssize_t Demux_len(Demux *self) { return self->n_routes; }

static PyMethodDef Demux_methods[] = {
    {"_add", (PyCFunction)Demux_add, METH_VARARGS, Demux_add_doc},
    {"remove", (PyCFunction)Demux_remove, METH_VARARGS, Demux_remove_doc},
    {"_receive", (PyCFunction)Demux_receive, METH_VARARGS, Demux_receive_doc},
    {"drain", (PyCFunction)Demux_drain, METH_VARARGS, Demux_drain_doc},
    {"publisher", (PyCFunction)Demux_publisher, METH_O, Demux_publisher_doc},
    {"_drop_counts", (PyCFunction)Demux_drop_counts, METH_NOARGS,
     "(counts by reason, last source by reason or None), in DropReason order"},
    {NULL}
};

static PyMemberDef Demux_members[] = {
    {"accepted", T_ULONGLONG, offsetof(Demux, accepted), READONLY, "datagrams accepted"},
    {"datagrams", T_ULONGLONG, offsetof(Demux, datagrams), READONLY, "datagrams read by drain"},
    {"samples", T_ULONGLONG, offsetof(Demux, samples), READONLY, "samples published here"},
    {"pub_drops", T_ULONGLONG, offsetof(Demux, pub_drops), READONLY,
     "samples the PUB socket refused (full pipe)"},
    {"recv_errors", T_ULONGLONG, offsetof(Demux, recv_errors), READONLY, "receive errors"},
    {NULL}
};

static PySequenceMethods Demux_as_sequence = {.sq_length = (lenfunc)Demux_len};

static PyTypeObject DemuxType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyconpro.workers._fastpath.Demux",
    .tp_basicsize = sizeof(Demux),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The class-1 demultiplexer and receive loop (workers/fastpath.py wraps it).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Demux_init,
    .tp_dealloc = (destructor)Demux_dealloc,
    .tp_traverse = (traverseproc)Demux_traverse,
    .tp_clear = (inquiry)Demux_clear,
    .tp_methods = Demux_methods,
    .tp_members = Demux_members,
    .tp_as_sequence = &Demux_as_sequence,
};

/* ================================================================== the bus forwarder's loop
 *
 * workers/forwarder.py's forwarding in C (docs/performance.md "The bus forwarder"): whole
 * multipart messages from the XSUB (the publishers' side) to the public XPUB and, with a
 * replay buffer, a copy of each to the capture PUB, with the GIL released. It returns to
 * Python as soon as something there needs attention: a message on the XPUB (a subscription
 * for the caps to judge, acquisition/subscriptions.py), one on the control pipe (stop, new
 * upstreams), or the time given is up (the periodic duties). Like libzmq's
 * zmq_proxy_steerable, but zmq_proxy would pass every subscription upstream unchecked.
 * Forwarder._forward is the reference (PYCONPRO_FASTPATH=0, or no compiler).
 *
 * The sockets are the forwarder thread's (pyzmq's Socket.underlying), and only that thread
 * calls this; the GIL is released, so no Python object is touched in between. The counters
 * are added to a buffer of two uint64 (frames, bytes) that Python reads from other threads:
 * each is stored whole after every batch. libzmq's functions come from the library pyzmq
 * loaded (bind_forwarder, from workers/fastpath.py), as zmq_send does for the receive path;
 * its types are declared here as zmq.h declares them (its ABI), so no zmq.h is needed to
 * build. */

typedef struct { unsigned char _[64] __attribute__((aligned(sizeof(void *)))); } zmsg_t;
typedef struct { void *socket; int fd; short events; short revents; } zpollitem_t;
#define ZMQ_POLLIN_ 1
#define FWD_XSUB 1     /* bits of what forward() returns: which sockets had input */
#define FWD_XPUB 2
#define FWD_CONTROL 4

static struct {
    int (*msg_init)(zmsg_t *);
    int (*msg_recv)(zmsg_t *, void *, int);
    int (*msg_send)(zmsg_t *, void *, int);
    int (*msg_close)(zmsg_t *);
    int (*msg_copy)(zmsg_t *, zmsg_t *);
    size_t (*msg_size)(const zmsg_t *);
    int (*msg_more)(const zmsg_t *);
    int (*poll)(zpollitem_t *, int, long);
    int (*errno_)(void);
} zf;

/* The libzmq functions forward() uses, in this order (workers/fastpath.py looks them up). */
static const char *const FORWARDER_FUNCTIONS[] = {
    "zmq_msg_init", "zmq_msg_recv", "zmq_msg_send", "zmq_msg_close", "zmq_msg_copy",
    "zmq_msg_size", "zmq_msg_more", "zmq_poll", "zmq_errno",
};
#define N_FORWARDER_FUNCTIONS (sizeof(FORWARDER_FUNCTIONS) / sizeof(FORWARDER_FUNCTIONS[0]))

typedef struct {
    void *xsub, *xpub, *capture;  /* capture: NULL without a replay buffer */
    uint64_t frames, bytes;       /* of the batch under way */
} Fwd;

/* One whole message from the XSUB to the XPUB (and the capture): 1, 0 when none is waiting,
 * or -errno. The rest of a message is there with its first frame (libzmq), so only the first
 * read may find nothing. A PUB-like socket never blocks: a subscriber or the capture past its
 * HWM loses the message there (counted by nobody, as with zmq_proxy); the XPUB's own send
 * fails only when the context ends. */
static int fwd_message(Fwd *f) {
    zmsg_t msg, copy;
    int recv_flags = ZMQ_DONTWAIT_;
    for (;;) {
        zf.msg_init(&msg);
        if (zf.msg_recv(&msg, f->xsub, recv_flags) < 0) {
            int e = zf.errno_();
            zf.msg_close(&msg);
            return (e == EAGAIN && recv_flags == ZMQ_DONTWAIT_) ? 0 : -e;
        }
        recv_flags = 0;
        int more = zf.msg_more(&msg);
        int flags = more ? ZMQ_SNDMORE_ : 0;
        f->frames++;
        f->bytes += zf.msg_size(&msg);
        if (f->capture != NULL) {
            /* A copy shares a large frame's buffer (a reference count), copies a small one. */
            zf.msg_init(&copy);
            if (zf.msg_copy(&copy, &msg) < 0 || zf.msg_send(&copy, f->capture, flags) < 0)
                zf.msg_close(&copy);
        }
        if (zf.msg_send(&msg, f->xpub, flags) < 0) {
            int e = zf.errno_();
            zf.msg_close(&msg);
            if (e != EAGAIN) return -e;
        }
        if (!more) return 1;
    }
}

static inline int64_t fwd_clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The loop, without the GIL: which sockets had input when it returned, or -errno. */
static int fwd_run(Fwd *f, void *control, long timeout_ms, long batch, uint64_t *counts) {
    zpollitem_t items[3] = {
        {f->xsub, 0, ZMQ_POLLIN_, 0}, {f->xpub, 0, ZMQ_POLLIN_, 0}, {control, 0, ZMQ_POLLIN_, 0},
    };
    int64_t deadline = fwd_clock_ms() + timeout_ms;
    long wait = timeout_ms;
    for (;;) {
        int n = zf.poll(items, 3, wait);
        if (n < 0) {
            int e = zf.errno_();
            return e == EINTR ? 0 : -e;  /* a signal: Python's turn, as after a timeout */
        }
        int ready = ((items[0].revents & ZMQ_POLLIN_) ? FWD_XSUB : 0)
                    | ((items[1].revents & ZMQ_POLLIN_) ? FWD_XPUB : 0)
                    | ((items[2].revents & ZMQ_POLLIN_) ? FWD_CONTROL : 0);
        if (ready & FWD_XSUB) {
            int r = 1;
            f->frames = f->bytes = 0;
            for (long i = 0; i < batch && r > 0; i++) r = fwd_message(f);
            __atomic_store_n(&counts[0], counts[0] + f->frames, __ATOMIC_RELAXED);
            __atomic_store_n(&counts[1], counts[1] + f->bytes, __ATOMIC_RELAXED);
            if (r < 0) return r;
        }
        if (ready & (FWD_XPUB | FWD_CONTROL) || n == 0) return ready;
        int64_t left = deadline - fwd_clock_ms();
        if (left <= 0) return ready;  /* busy all along: Python's periodic duties are due */
        wait = (long)left;
    }
}

PyDoc_STRVAR(forward_doc,
"forward(xsub, xpub, capture, control, timeout_ms, batch, counts) -> int: forward whole\n"
"messages from the XSUB to the XPUB (and a copy to ``capture``, 0 for none), up to ``batch``\n"
"messages between two looks at the sockets, with the GIL released, until the XPUB or\n"
"``control`` has a message or ``timeout_ms`` has passed. The sockets are libzmq's (pyzmq's\n"
"Socket.underlying). ``counts``: a writable buffer of two uint64, frames and bytes taken in,\n"
"added to after every batch. Returns which had input at the last look (1 the XSUB, 2 the\n"
"XPUB, 4 control; 0: the time was up with nothing), or -errno when libzmq failed (ETERM:\n"
"the context is ending).");

static PyObject *py_forward(PyObject *mod, PyObject *args) {
    PyObject *xsub_o, *xpub_o, *capture_o, *control_o, *counts_o;
    long timeout_ms, batch;
    if (!PyArg_ParseTuple(args, "OOOOllO", &xsub_o, &xpub_o, &capture_o, &control_o,
                          &timeout_ms, &batch, &counts_o))
        return NULL;
    if (zf.poll == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_forwarder() first");
        return NULL;
    }
    Fwd f = {0};
    f.xsub = PyLong_AsVoidPtr(xsub_o);
    f.xpub = PyLong_AsVoidPtr(xpub_o);
    f.capture = PyLong_AsVoidPtr(capture_o);
    void *control = PyLong_AsVoidPtr(control_o);
    if (PyErr_Occurred()) return NULL;
    if (f.xsub == NULL || f.xpub == NULL || control == NULL) {
        PyErr_SetString(PyExc_ValueError, "xsub, xpub and control must be sockets, not 0");
        return NULL;
    }
    if (timeout_ms < 0 || batch < 1) {
        PyErr_SetString(PyExc_ValueError, "timeout_ms must be >= 0 and batch >= 1");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(counts_o, &view, PyBUF_WRITABLE) < 0) return NULL;
    if (view.len < (Py_ssize_t)(2 * sizeof(uint64_t)) || ((uintptr_t)view.buf & 7) != 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "counts must be an aligned buffer of two uint64");
        return NULL;
    }
    int ready;
    Py_BEGIN_ALLOW_THREADS
    ready = fwd_run(&f, control, timeout_ms, batch, (uint64_t *)view.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromLong(ready);
}

PyDoc_STRVAR(bind_forwarder_doc,
"bind_forwarder(addresses): the libzmq functions forward() uses, a mapping of each name in\n"
"FORWARDER_FUNCTIONS to its address in the libzmq pyzmq loaded.");

static PyObject *bind_forwarder(PyObject *mod, PyObject *addresses) {
    void *found[N_FORWARDER_FUNCTIONS];
    for (size_t i = 0; i < N_FORWARDER_FUNCTIONS; i++) {
        PyObject *a = PyMapping_GetItemString(addresses, FORWARDER_FUNCTIONS[i]);
        if (a == NULL) return NULL;
        found[i] = PyLong_AsVoidPtr(a);
        Py_DECREF(a);
        if (PyErr_Occurred()) return NULL;
        if (found[i] == NULL) {
            PyErr_Format(PyExc_ValueError, "null address for %s", FORWARDER_FUNCTIONS[i]);
            return NULL;
        }
    }
    zf.msg_init = (int (*)(zmsg_t *))found[0];
    zf.msg_recv = (int (*)(zmsg_t *, void *, int))found[1];
    zf.msg_send = (int (*)(zmsg_t *, void *, int))found[2];
    zf.msg_close = (int (*)(zmsg_t *))found[3];
    zf.msg_copy = (int (*)(zmsg_t *, zmsg_t *))found[4];
    zf.msg_size = (size_t (*)(const zmsg_t *))found[5];
    zf.msg_more = (int (*)(const zmsg_t *))found[6];
    zf.errno_ = (int (*)(void))found[8];
    zf.poll = (int (*)(zpollitem_t *, int, long))found[7];  /* last: forward() checks it */
    Py_RETURN_NONE;
}

static PyObject *forwarder_functions(void) {
    PyObject *t = PyTuple_New((Py_ssize_t)N_FORWARDER_FUNCTIONS);
    if (t == NULL) return NULL;
    for (size_t i = 0; i < N_FORWARDER_FUNCTIONS; i++) {
        PyObject *s = PyUnicode_FromString(FORWARDER_FUNCTIONS[i]);
        if (s == NULL) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, s);
    }
    return t;
}

/* ------------------------------------------------------------------ module functions */

PyDoc_STRVAR(bind_libzmq_doc,
"bind_libzmq(zmq_send_address, zmq_errno_address): the functions of the libzmq pyzmq loaded.");

static PyObject *bind_libzmq(PyObject *mod, PyObject *args) {
    PyObject *send_addr, *errno_addr;
    if (!PyArg_ParseTuple(args, "OO", &send_addr, &errno_addr)) return NULL;
    void *s = PyLong_AsVoidPtr(send_addr), *e = PyLong_AsVoidPtr(errno_addr);
    if (PyErr_Occurred()) return NULL;
    if (s == NULL || e == NULL) {
        PyErr_SetString(PyExc_ValueError, "null function address");
        return NULL;
    }
    p_zmq_send = (zmq_send_fn)s;
    p_zmq_errno = (zmq_errno_fn)e;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(sendmmsg_doc,
"sendmmsg(fd, datagrams) -> (sent, failed): send [(bytes, address, port), ...] from UDP\n"
"socket ``fd`` in as few sendmmsg calls as the kernel takes; a datagram the kernel refuses\n"
"(no route, ...) is counted in ``failed`` and the rest go on.");

static PyObject *py_sendmmsg(PyObject *mod, PyObject *args) {
    int fd;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "iO!", &fd, &PyList_Type, &items)) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items), sent = 0, failed = 0;
    enum { CHUNK = 64 };
    struct mmsghdr msgs[CHUNK];
    struct iovec iov[CHUNK];
    struct sockaddr_in addrs[CHUNK];
    Py_ssize_t i = 0;
    while (i < n) {
        int m = 0;
        for (; m < CHUNK && i + m < n; m++) {
            PyObject *item = PyList_GET_ITEM(items, i + m);
            const char *host;
            const char *data;
            Py_ssize_t len;
            int port;
            if (!PyTuple_Check(item) || !PyArg_ParseTuple(item, "y#si", &data, &len, &host, &port))
                return NULL;
            memset(&addrs[m], 0, sizeof(addrs[m]));
            addrs[m].sin_family = AF_INET;
            addrs[m].sin_port = htons((uint16_t)port);
            if (inet_pton(AF_INET, host, &addrs[m].sin_addr) != 1) {
                PyErr_Format(PyExc_ValueError, "%s is not an IPv4 address", host);
                return NULL;
            }
            iov[m].iov_base = (void *)data;
            iov[m].iov_len = (size_t)len;
            memset(&msgs[m], 0, sizeof(msgs[m]));
            msgs[m].msg_hdr.msg_iov = &iov[m];
            msgs[m].msg_hdr.msg_iovlen = 1;
            msgs[m].msg_hdr.msg_name = &addrs[m];
            msgs[m].msg_hdr.msg_namelen = sizeof(addrs[m]);
        }
        int done = 0;
        while (done < m) {
            int r = sendmmsg(fd, msgs + done, (unsigned)(m - done), MSG_DONTWAIT);
            if (r < 0) {
                if (errno == EINTR) continue;
                failed++;  /* the first one of the rest was refused: count it, go on */
                done++;
            } else {
                sent += r;
                done += r;
            }
        }
        i += m;
    }
    return Py_BuildValue("(nn)", sent, failed);
}

static PyMethodDef module_methods[] = {
    {"bind_libzmq", bind_libzmq, METH_VARARGS, bind_libzmq_doc},
    {"sendmmsg", py_sendmmsg, METH_VARARGS, sendmmsg_doc},
    {"bind_forwarder", bind_forwarder, METH_O, bind_forwarder_doc},
    {"forward", py_forward, METH_VARARGS, forward_doc},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pyconpro.workers._fastpath",
    "The I/O worker's compiled receive path (see workers/fastpath.py).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&TapType) < 0 || PyType_Ready(&DemuxType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&TapType);
    Py_INCREF(&DemuxType);
    if (PyModule_AddObject(m, "Tap", (PyObject *)&TapType) < 0
            || PyModule_AddObject(m, "Demux", (PyObject *)&DemuxType) < 0
            || PyModule_AddIntConstant(m, "BATCH", BATCH) < 0
            || PyModule_AddIntConstant(m, "DGRAM_MAX", DGRAM_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *names = forwarder_functions();
    if (names == NULL || PyModule_AddObject(m, "FORWARDER_FUNCTIONS", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
