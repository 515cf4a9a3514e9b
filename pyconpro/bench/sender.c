/* The load source of `pyconpro bench`: class-1 T->O datagrams at a paced rate, with sendmmsg.
 *
 * The datagrams are templates built in Python with acquisition/class1.py (exactly the bytes the
 * simulator sends for a produced tag); this program only writes the sequence numbers into them:
 * the 32-bit encapsulation sequence at offset 10 and the 16-bit CIP sequence count at offset 18
 * (little-endian, protocol.md 6.1). Datagram k goes to stream k % N (round robin) and carries
 * the stream's first sequence numbers plus k / N.
 *
 *   pyconpro-sender --plan FILE --bind ADDR [--bind-port P [--share-port]] --dest ADDR
 *                   --port PORT --rate R --count K [--batch B] [--timing FILE] [--end-marker]
 *
 * Plan file (text):  "pyconpro-sender-plan 1", then N, then N lines "SEQ32 SEQ16 HEX" giving
 * each stream's sequence numbers for its first datagram and its template in hex.
 * Pacing: datagram k is due at start + k / R (CLOCK_MONOTONIC); whatever is due goes out in
 * sendmmsg calls of at most B datagrams; when nothing is due the program sleeps until the next
 * datagram is. --timing writes one record per sendmmsg call, two native int64: the monotonic
 * time in ns just before the call and the index of its first datagram. --end-marker sends a
 * 1-byte datagram after the last one (a receiver that counts can tell the run ended).
 * --bind-port sends from that port; with --share-port the port is shared with the socket that
 * bound it first (SO_REUSEPORT: the simulator started with --share-udp-port), as a controller
 * sends T->O data from its class-1 port, and a BPF program steers every datagram arriving at the
 * port to that first socket, so the simulator still receives the heartbeats.
 * On success it prints one JSON line: {"sent": K, "t_start_ns": ..., "t_end_ns": ...,
 * "calls": ..., "errors": ...} and exits 0; bad arguments exit 2, a socket failure 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define MAX_DATAGRAM 65507
#define MIN_DATAGRAM 20 /* the class-1 prefix up to and including the CIP sequence count */
#define MAX_ERRORS_IN_A_ROW 1000
#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

struct stream {
    unsigned char *tmpl;
    size_t len;
    uint32_t seq32;
    uint16_t seq16;
};

static void die(int code, const char *what, const char *detail) {
    fprintf(stderr, "pyconpro-sender: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    exit(code);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static struct stream *read_plan(const char *path, size_t *count) {
    FILE *f = fopen(path, "r");
    if (!f) die(2, "cannot read the plan file", strerror(errno));
    int version = 0;
    size_t n = 0;
    if (fscanf(f, "pyconpro-sender-plan %d %zu", &version, &n) != 2 || version != 1 || n == 0)
        die(2, "the plan file does not start with \"pyconpro-sender-plan 1\" and a stream count",
            path);
    struct stream *streams = calloc(n, sizeof *streams);
    char *hex = malloc(2 * MAX_DATAGRAM + 2);
    if (!streams || !hex) die(1, "out of memory", NULL);
    for (size_t i = 0; i < n; i++) {
        unsigned long s32 = 0, s16 = 0;
        if (fscanf(f, "%lu %lu %131015s", &s32, &s16, hex) != 3 || s32 > 0xFFFFFFFFul ||
            s16 > 0xFFFFul)
            die(2, "a plan line is not \"SEQ32 SEQ16 HEX\"", path);
        size_t digits = strlen(hex);
        if (digits % 2 || digits / 2 < MIN_DATAGRAM || digits / 2 > MAX_DATAGRAM)
            die(2, "a template is not a whole number of bytes between 20 and 65507", path);
        streams[i].len = digits / 2;
        streams[i].tmpl = malloc(streams[i].len);
        if (!streams[i].tmpl) die(1, "out of memory", NULL);
        for (size_t b = 0; b < streams[i].len; b++) {
            int hi = hexval(hex[2 * b]), lo = hexval(hex[2 * b + 1]);
            if (hi < 0 || lo < 0) die(2, "a template has a character that is not hex", path);
            streams[i].tmpl[b] = (unsigned char)(hi << 4 | lo);
        }
        streams[i].seq32 = (uint32_t)s32;
        streams[i].seq16 = (uint16_t)s16;
    }
    free(hex);
    fclose(f);
    *count = n;
    return streams;
}

static void put_le32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static void put_le16(unsigned char *p, uint16_t v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void parse_address(const char *text, struct in_addr *out, const char *what) {
    if (inet_pton(AF_INET, text, out) != 1) die(2, what, text);
}

int main(int argc, char **argv) {
    const char *plan = NULL, *bind_to = NULL, *dest = NULL, *timing_path = NULL;
    long port = -1, batch = 64, bind_port = 0;
    double rate = 0;
    unsigned long long count = 0;
    int end_marker = 0, share_port = 0;
    static const struct option options[] = {
        {"plan", required_argument, NULL, 'p'},  {"bind", required_argument, NULL, 'b'},
        {"dest", required_argument, NULL, 'd'},  {"port", required_argument, NULL, 'P'},
        {"rate", required_argument, NULL, 'r'},  {"count", required_argument, NULL, 'c'},
        {"batch", required_argument, NULL, 'B'}, {"timing", required_argument, NULL, 't'},
        {"end-marker", no_argument, NULL, 'e'},  {"bind-port", required_argument, NULL, 'q'},
        {"share-port", no_argument, NULL, 's'},  {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'p': plan = optarg; break;
        case 'b': bind_to = optarg; break;
        case 'd': dest = optarg; break;
        case 'P': port = strtol(optarg, NULL, 10); break;
        case 'r': rate = strtod(optarg, NULL); break;
        case 'c': count = strtoull(optarg, NULL, 10); break;
        case 'B': batch = strtol(optarg, NULL, 10); break;
        case 't': timing_path = optarg; break;
        case 'e': end_marker = 1; break;
        case 'q': bind_port = strtol(optarg, NULL, 10); break;
        case 's': share_port = 1; break;
        default: die(2, "unknown option (see the comment at the top of sender.c)", NULL);
        }
    }
    if (!plan || !bind_to || !dest || port < 1 || port > 65535 || !(rate > 0) || count == 0 ||
        batch < 1 || batch > MAX_BATCH || bind_port < 0 || bind_port > 65535 ||
        (share_port && bind_port == 0))
        die(2, "usage: --plan FILE --bind ADDR [--bind-port 1..65535 [--share-port]] --dest ADDR "
               "--port 1..65535 --rate R>0 --count K>0 [--batch 1..1024] [--timing FILE] "
               "[--end-marker]", NULL);

    size_t n_streams = 0;
    struct stream *streams = read_plan(plan, &n_streams);
    size_t largest = 0;
    for (size_t i = 0; i < n_streams; i++)
        if (streams[i].len > largest) largest = streams[i].len;

    struct sockaddr_in local = {.sin_family = AF_INET}, remote = {.sin_family = AF_INET};
    parse_address(bind_to, &local.sin_addr, "--bind is not an IPv4 address");
    parse_address(dest, &remote.sin_addr, "--dest is not an IPv4 address");
    remote.sin_port = htons((uint16_t)port);
    local.sin_port = htons((uint16_t)bind_port);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die(1, "socket", strerror(errno));
    int one = 1;
    if (share_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
        die(1, "SO_REUSEPORT", strerror(errno));
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0)
        die(1, share_port ? "bind (is the port's first socket opened with SO_REUSEPORT, e.g. "
                            "the simulator with --share-udp-port?)" : "bind", strerror(errno));
    if (share_port) {
        /* "return 0": every datagram arriving at the port goes to the group's first socket */
        struct sock_filter code[] = {{BPF_RET | BPF_K, 0, 0, 0}};
        struct sock_fprog prog = {.len = 1, .filter = code};
        if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) < 0)
            die(1, "SO_ATTACH_REUSEPORT_CBPF", strerror(errno));
        /* not connected: a connected member of the group would take the receiver's datagrams
           (its 4-tuple matches them better than the BPF program's choice) */
    } else if (connect(fd, (struct sockaddr *)&remote, sizeof remote) < 0) {
        /* connected: no route lookup per datagram, and the kernel checks the address once */
        die(1, "connect", strerror(errno));
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake up on time, not 50 us late */

    FILE *timing = NULL;
    if (timing_path) {
        timing = fopen(timing_path, "wb");
        if (!timing) die(1, "cannot write the timing file", strerror(errno));
    }
    static struct mmsghdr msgs[MAX_BATCH];
    static struct iovec iov[MAX_BATCH];
    unsigned char *bufs = malloc((size_t)batch * largest);
    if (!bufs) die(1, "out of memory", NULL);
    for (long j = 0; j < batch; j++) {
        iov[j].iov_base = bufs + (size_t)j * largest;
        msgs[j].msg_hdr.msg_iov = &iov[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
        if (share_port) {
            msgs[j].msg_hdr.msg_name = &remote;
            msgs[j].msg_hdr.msg_namelen = sizeof remote;
        }
    }

    const double ns_per_datagram = 1e9 / rate;
    uint64_t sent = 0, calls = 0, errors = 0, errors_in_a_row = 0;
    const uint64_t start = now_ns();
    while (sent < count) {
        uint64_t now = now_ns();
        uint64_t due = (uint64_t)((double)(now - start) / ns_per_datagram) + 1;
        if (due > count) due = count;
        if (due <= sent) {
            uint64_t at = start + (uint64_t)((double)sent * ns_per_datagram);
            struct timespec ts = {.tv_sec = (time_t)(at / 1000000000u),
                                  .tv_nsec = (long)(at % 1000000000u)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            continue;
        }
        unsigned int n = (unsigned int)(due - sent < (uint64_t)batch ? due - sent : (uint64_t)batch);
        for (unsigned int j = 0; j < n; j++) {
            uint64_t k = sent + j;
            const struct stream *s = &streams[k % n_streams];
            uint64_t round = k / n_streams;
            unsigned char *b = iov[j].iov_base;
            memcpy(b, s->tmpl, s->len);
            put_le32(b + 10, (uint32_t)(s->seq32 + round));
            put_le16(b + 18, (uint16_t)(s->seq16 + round));
            iov[j].iov_len = s->len;
        }
        if (timing) {
            int64_t record[2] = {(int64_t)now_ns(), (int64_t)sent};
            fwrite(record, sizeof record, 1, timing);
        }
        int m = sendmmsg(fd, msgs, n, 0);
        calls++;
        if (m < 0) {
            if (errno == EINTR) continue;
            errors++;
            /* a full send queue, or ICMP unreachable from an earlier datagram: try again */
            if (++errors_in_a_row >= MAX_ERRORS_IN_A_ROW) die(1, "sendmmsg", strerror(errno));
            continue;
        }
        errors_in_a_row = 0;
        sent += (uint64_t)m;
    }
    const uint64_t end = now_ns();
    if (end_marker) {
        unsigned char marker = 0;
        if (sendto(fd, &marker, 1, 0, (struct sockaddr *)&remote, sizeof remote) < 0) errors++;
    }
    if (timing && fclose(timing) != 0) die(1, "cannot write the timing file", strerror(errno));
    printf("{\"sent\": %" PRIu64 ", \"t_start_ns\": %" PRIu64 ", \"t_end_ns\": %" PRIu64
           ", \"calls\": %" PRIu64 ", \"errors\": %" PRIu64 "}\n",
           sent, start, end, calls, errors);
    return 0;
}
