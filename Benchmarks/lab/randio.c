/*
 * randio: random block I/O on a device or file with O_DIRECT, for the lab's L2 guest (no fio there).
 *
 *   randio read|write DEVICE [-b BLOCK] [-o OFFSET] [-s SIZE] [-n OPS] [-q DEPTH] [-S SEED] [-T SECONDS] [-t NAME]
 *
 * Each operation reads or writes BLOCK bytes (default 4096) at a block-aligned offset drawn uniformly from
 * [OFFSET, OFFSET + SIZE) (defaults 0 and 256 MiB) by a splitmix64 generator seeded with SEED (default 1),
 * so every run, and every VMM, sees the same offsets in the same order. OPS operations (default 4096) are
 * issued; -T stops early after SECONDS (the figures then cover what was done).
 * DEPTH 1 (default) issues one pread/pwrite at a time; DEPTH > 1 keeps DEPTH requests in flight with Linux
 * native AIO (io_setup/io_submit/io_getevents as raw system calls, no libaio), resubmitting as each completes.
 * Timing: CLOCK_MONOTONIC around the whole loop.
 *
 * Output (stdout), one line each:
 *   VIREO-BENCH NAME BYTES MILLISECONDS          (NAME defaults to rand-read|rand-write-<block/1024>k-qd<depth>)
 *   randio: NAME ops=N bytes=B ms=T MB/s=X IOPS=Y
 * Exit status 0 on success; 1 on an I/O error or a short transfer (with a message on stderr), 2 on bad usage.
 *
 * Build: cc -static -O2 -o randio randio.c  (Benchmarks/lab/blk.sh does this for the blk-bench scenario).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng_state;

static uint64_t splitmix64(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static unsigned long long parse_size(const char *text) {
    char *end;
    unsigned long long value = strtoull(text, &end, 0);
    switch (*end) {
    case 'k': case 'K': value <<= 10; end++; break;
    case 'm': case 'M': value <<= 20; end++; break;
    case 'g': case 'G': value <<= 30; end++; break;
    }
    if (*end != '\0' || end == text) {
        fprintf(stderr, "randio: bad size '%s'\n", text);
        exit(2);
    }
    return value;
}

static void usage(void) {
    fprintf(stderr, "usage: randio read|write DEVICE [-b BLOCK] [-o OFFSET] [-s SIZE] [-n OPS] [-q DEPTH] "
                    "[-S SEED] [-T SECONDS] [-t NAME]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 3) usage();
    int writing;
    if (strcmp(argv[1], "read") == 0) writing = 0;
    else if (strcmp(argv[1], "write") == 0) writing = 1;
    else usage();
    const char *path = argv[2];
    unsigned long long block = 4096, offset = 0, size = 256ULL << 20, ops = 4096, seed = 1;
    unsigned depth = 1;
    double limit_ms = 0;
    const char *name = NULL;
    for (int i = 3; i < argc; i++) {
        if (i + 1 >= argc || argv[i][0] != '-' || strlen(argv[i]) != 2) usage();
        const char *value = argv[++i];
        switch (argv[i - 1][1]) {
        case 'b': block = parse_size(value); break;
        case 'o': offset = parse_size(value); break;
        case 's': size = parse_size(value); break;
        case 'n': ops = parse_size(value); break;
        case 'q': depth = (unsigned)parse_size(value); break;
        case 'S': seed = parse_size(value); break;
        case 'T': limit_ms = atof(value) * 1e3; break;
        case 't': name = value; break;
        default: usage();
        }
    }
    if (block == 0 || block % 512 != 0 || offset % block != 0 || size < block || depth == 0 || depth > 1024 || ops == 0) {
        fprintf(stderr, "randio: need BLOCK a multiple of 512, OFFSET a multiple of BLOCK, SIZE >= BLOCK, 1 <= DEPTH <= 1024, OPS > 0\n");
        return 2;
    }
    char default_name[64];
    if (name == NULL) {
        snprintf(default_name, sizeof default_name, "rand-%s-%lluk-qd%u", writing ? "write" : "read", block / 1024, depth);
        name = default_name;
    }
    int fd = open(path, (writing ? O_WRONLY : O_RDONLY) | O_DIRECT);
    if (fd < 0) {
        fprintf(stderr, "randio: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    /* One aligned buffer per request in flight; written data is a non-zero pattern. */
    unsigned char *buffers;
    if (posix_memalign((void **)&buffers, 4096, (size_t)block * depth) != 0) {
        fprintf(stderr, "randio: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)block * depth; i++) buffers[i] = (unsigned char)(i * 31 + 7);
    rng_state = seed;
    unsigned long long blocks = size / block;
    unsigned long long done = 0;
    double start = now_ms(), elapsed;

    if (depth == 1) {
        for (; done < ops; done++) {
            off_t at = (off_t)(offset + splitmix64() % blocks * block);
            ssize_t n = writing ? pwrite(fd, buffers, block, at) : pread(fd, buffers, block, at);
            if (n != (ssize_t)block) {
                fprintf(stderr, "randio: %s at %lld: %s\n", writing ? "pwrite" : "pread", (long long)at,
                        n < 0 ? strerror(errno) : "short transfer");
                return 1;
            }
            if (limit_ms > 0 && (done & 63) == 63 && now_ms() - start > limit_ms) { done++; break; }
        }
    } else {
        aio_context_t ctx = 0;
        if (syscall(SYS_io_setup, depth, &ctx) < 0) {
            fprintf(stderr, "randio: io_setup(%u): %s\n", depth, strerror(errno));
            return 1;
        }
        struct iocb *iocbs = calloc(depth, sizeof *iocbs);
        struct io_event *events = calloc(depth, sizeof *events);
        struct iocb **batch = calloc(depth, sizeof *batch);
        if (!iocbs || !events || !batch) {
            fprintf(stderr, "randio: out of memory\n");
            return 1;
        }
        unsigned long long submitted = 0;
        unsigned pending = 0, in_flight = 0;
        int stopping = 0;
        /* Slot i's iocb always uses buffer i; aio_data carries the slot. */
        for (unsigned i = 0; i < depth; i++) batch[pending++] = &iocbs[i];
        for (;;) {
            unsigned queued = 0;
            for (unsigned i = 0; i < pending && submitted < ops && !stopping; i++) {
                struct iocb *cb = batch[i];
                unsigned slot = (unsigned)(cb - iocbs);
                memset(cb, 0, sizeof *cb);
                cb->aio_data = slot;
                cb->aio_fildes = (uint32_t)fd;
                cb->aio_lio_opcode = writing ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
                cb->aio_buf = (uint64_t)(uintptr_t)(buffers + (size_t)slot * block);
                cb->aio_nbytes = block;
                cb->aio_offset = (int64_t)(offset + splitmix64() % blocks * block);
                batch[queued++] = cb;
                submitted++;
            }
            unsigned sent = 0;
            while (sent < queued) {
                long n = syscall(SYS_io_submit, ctx, (long)(queued - sent), batch + sent);
                if (n <= 0) {
                    fprintf(stderr, "randio: io_submit: %s\n", n < 0 ? strerror(errno) : "nothing submitted");
                    return 1;
                }
                sent += (unsigned)n;
            }
            in_flight += queued;
            pending = 0;
            if (in_flight == 0) break;
            long got = syscall(SYS_io_getevents, ctx, 1L, (long)depth, events, NULL);
            if (got < 0) {
                if (errno == EINTR) continue;
                fprintf(stderr, "randio: io_getevents: %s\n", strerror(errno));
                return 1;
            }
            for (long i = 0; i < got; i++) {
                if (events[i].res != (int64_t)block) {
                    struct iocb *cb = (struct iocb *)(uintptr_t)events[i].obj;
                    fprintf(stderr, "randio: %s at %lld: %s\n", writing ? "write" : "read", (long long)cb->aio_offset,
                            events[i].res < 0 ? strerror((int)-events[i].res) : "short transfer");
                    return 1;
                }
                batch[pending++] = &iocbs[events[i].data];
            }
            in_flight -= (unsigned)got;
            done += (unsigned long long)got;
            if (limit_ms > 0 && !stopping && now_ms() - start > limit_ms) stopping = 1;
        }
        syscall(SYS_io_destroy, ctx);
    }
    elapsed = now_ms() - start;
    close(fd);
    unsigned long long bytes = done * block;
    printf("VIREO-BENCH %s %llu %.3f\n", name, bytes, elapsed);
    printf("randio: %s ops=%llu bytes=%llu ms=%.3f MB/s=%.2f IOPS=%.0f\n", name, done, bytes, elapsed,
           elapsed > 0 ? bytes / elapsed / 1e3 : 0.0, elapsed > 0 ? done / elapsed * 1e3 : 0.0);
    return 0;
}
