/*
 * A pyconpro bus subscriber in C, written from docs/wire-format.md alone (no Python involved).
 * It proves the bus contract is usable from another language; tests/sinks/test_other_language.py
 * builds and runs it.
 *
 *   pyconpro_sub ENDPOINT COUNT PREFIX [PREFIX ...]
 *
 * Connects a SUB socket to ENDPOINT, subscribes to each topic PREFIX, and for each of the next
 * COUNT well-formed messages prints one JSON object per line: the topic and every schema-v1 key
 * it knows (unknown keys are ignored, as the format requires). Messages that are not two frames
 * or whose body is not a single MessagePack map with an integer v >= 1 and an unsigned sq are
 * counted as malformed and skipped. Ends with "done received=N malformed=M" and exit status 0;
 * exit status 1 if nothing arrives for 20 s, 2 for usage or socket errors.
 *
 * Build: cc -o pyconpro_sub pyconpro_sub.c $(pkg-config --cflags --libs libzmq msgpack-c)
 *        (Debian 12 names the msgpack module "msgpack" instead of "msgpack-c").
 */
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define MAX_FRAMES 3 /* enough to tell "two frames" from "more than two" */

static const char *KNOWN_KEYS[] = {
    /* common */ "v", "sq", "pub", "tw", "tm",
    /* sample */ "plc", "tag", "cs", "gap", "val", "raw", "ty",
    /* event  */ "k", "from", "to", "gs", "es", "stx", "msg",
    /* stats  */ "wk", "c",
};

static void print_json_string(const char *p, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

static void print_object(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        printf("null");
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        printf(o->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        printf("%" PRIu64, o->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        printf("%" PRId64, o->via.i64);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        printf("%.17g", o->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        print_json_string(o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_BIN: /* raw tag bytes: lower-case hex, like the Python sinks */
        putchar('"');
        for (uint32_t i = 0; i < o->via.bin.size; i++) {
            printf("%02x", (unsigned char)o->via.bin.ptr[i]);
        }
        putchar('"');
        break;
    case MSGPACK_OBJECT_ARRAY:
        putchar('[');
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            if (i) putchar(',');
            print_object(&o->via.array.ptr[i]);
        }
        putchar(']');
        break;
    case MSGPACK_OBJECT_MAP:
        putchar('{');
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            if (i) putchar(',');
            const msgpack_object *k = &o->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR) {
                print_json_string(k->via.str.ptr, k->via.str.size);
            } else {
                printf("\"?\"");
            }
            putchar(':');
            print_object(&o->via.map.ptr[i].val);
        }
        putchar('}');
        break;
    default: /* ext types are not part of schema v1 */
        printf("null");
        break;
    }
}

static const msgpack_object *lookup(const msgpack_object *map, const char *key) {
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0) {
            return &map->via.map.ptr[i].val;
        }
    }
    return NULL;
}

/* Returns 1 and prints a line for a well-formed message, 0 for a malformed one. */
static int handle(zmq_msg_t *topic, zmq_msg_t *body) {
    msgpack_unpacked result;
    size_t off = 0;
    const char *data = zmq_msg_data(body);
    size_t len = zmq_msg_size(body);
    int ok = 0;

    msgpack_unpacked_init(&result);
    if (msgpack_unpack_next(&result, data, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len &&
        result.data.type == MSGPACK_OBJECT_MAP) {
        const msgpack_object *v = lookup(&result.data, "v");
        const msgpack_object *sq = lookup(&result.data, "sq");
        if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 >= 1 && sq &&
            sq->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            ok = 1;
        }
    }
    if (ok) {
        printf("{\"topic\":");
        print_json_string(zmq_msg_data(topic), zmq_msg_size(topic));
        for (size_t i = 0; i < sizeof KNOWN_KEYS / sizeof KNOWN_KEYS[0]; i++) {
            const msgpack_object *val = lookup(&result.data, KNOWN_KEYS[i]);
            if (val) {
                printf(",\"%s\":", KNOWN_KEYS[i]);
                print_object(val);
            }
        }
        printf("}\n");
        fflush(stdout);
    }
    msgpack_unpacked_destroy(&result);
    return ok;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ENDPOINT COUNT PREFIX [PREFIX ...]\n", argv[0]);
        return 2;
    }
    long want = strtol(argv[2], NULL, 10);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_SUB);
    int hwm = 100000, linger = 0, timeout_ms = 20000;
    /* Explicit HWM and LINGER on every socket, as the wire contract asks. */
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms);
    for (int i = 3; i < argc; i++) {
        zmq_setsockopt(sock, ZMQ_SUBSCRIBE, argv[i], strlen(argv[i]));
    }
    if (zmq_connect(sock, argv[1]) != 0) {
        fprintf(stderr, "cannot connect to %s: %s\n", argv[1], zmq_strerror(errno));
        return 2;
    }

    long received = 0, malformed = 0;
    int status = 0;
    while (received < want) {
        zmq_msg_t frames[MAX_FRAMES];
        int nframes = 0, more = 1, failed = 0;
        while (more) {
            zmq_msg_t part;
            zmq_msg_init(&part);
            if (zmq_msg_recv(&part, sock, 0) == -1) {
                zmq_msg_close(&part);
                failed = 1;
                break;
            }
            more = zmq_msg_more(&part);
            if (nframes < MAX_FRAMES) {
                frames[nframes] = part; /* ownership moves into the array */
            } else {
                zmq_msg_close(&part);
            }
            nframes++;
        }
        if (failed) {
            fprintf(stderr, "no message within %d ms (%s)\n", timeout_ms, zmq_strerror(errno));
            for (int i = 0; i < nframes && i < MAX_FRAMES; i++) zmq_msg_close(&frames[i]);
            status = 1;
            break;
        }
        if (nframes == 2 && handle(&frames[0], &frames[1])) {
            received++;
        } else {
            malformed++;
        }
        for (int i = 0; i < nframes && i < MAX_FRAMES; i++) zmq_msg_close(&frames[i]);
    }
    printf("done received=%ld malformed=%ld\n", received, malformed);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return status;
}
