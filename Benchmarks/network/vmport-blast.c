// Load generator for vireo-switchd's `vm:` ports (docs/network.md): plays two VMMs. It connects
// to two port sockets (SOCK_SEQPACKET, one Ethernet frame per message), sends 60-byte frames
// (64 on the wire with the FCS) from the first to the second as fast as the switch takes them
// (sendmmsg, 64 per call, blocking on a full socket), and counts what arrives on the second
// (recvmmsg) for SECONDS. Prints "RECEIVED_PER_SECOND SENT_PER_SECOND".
// With --rings it first offers each port shared-memory rings, as vireo-vmm does (RingHandshake,
// CVireoFrameRing.h), and moves the frames through them instead: no system call per frame, a
// one-byte kick over the socket only when the other side sleeps.
//
//   cc -O2 -pthread -I Sources/CVireoLinux/include -o vmport-blast vmport-blast.c ring_port.c Sources/CVireoLinux/frame_ring.c
//   ./vmport-blast [--rings] A.sock B.sock 5
#define _GNU_SOURCE
#include "ring_port.h"
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { batch = 64, frame_length = 60 };
static atomic_long received;
static atomic_int done;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *receiver(void *argument) {
    int fd = *(int *)argument;
    static uint8_t buffers[batch][2048];
    struct mmsghdr messages[batch];
    struct iovec vectors[batch];
    struct timeval timeout = { .tv_sec = 0, .tv_usec = 100000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    while (!atomic_load(&done)) {
        memset(messages, 0, sizeof messages);
        for (int i = 0; i < batch; i++) {
            vectors[i] = (struct iovec){ .iov_base = buffers[i], .iov_len = sizeof buffers[i] };
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        int got = recvmmsg(fd, messages, batch, MSG_WAITFORONE, NULL);
        if (got > 0) atomic_fetch_add(&received, got);
    }
    return NULL;
}

// Stops the receiver and prints "RECEIVED_PER_SECOND SENT_PER_SECOND" since `start`.
static int report(double start, long received_before, long sent, pthread_t receiver_thread) {
    double elapsed = now() - start;
    long got = atomic_load(&received) - received_before;
    atomic_store(&done, 1);
    pthread_join(receiver_thread, NULL);
    printf("%.0f %.0f\n", (double)got / elapsed, (double)sent / elapsed);
    return 0;
}

// --- ring mode ---------------------------------------------------------------------------------
static void *ring_receiver(void *argument) {
    struct ring_port *port = argument;
    static uint8_t record[VIREO_RING_MAX_RECORD];
    while (!atomic_load(&done)) {
        long length = ring_port_pop_wait(port, record, sizeof record, 100);
        if (length > 0) atomic_fetch_add(&received, 1);
        if (length < 0) { fprintf(stderr, "broken ring\n"); exit(1); }
    }
    return NULL;
}

static int run_rings(int a, int b, double seconds, uint8_t *frame, const uint8_t *mac_a, const uint8_t *mac_b) {
    static struct ring_port port_a, port_b;
    port_a.socket = a; port_b.socket = b;
    ring_port_offer(&port_a);
    ring_port_offer(&port_b);
    // B announces itself, then A sends to B.
    memset(frame, 0xff, 6);
    memcpy(frame + 6, mac_b, 6);
    if (vireo_ring_push(&port_b.to_switch, frame, frame_length, NULL, 0) != 1) { fprintf(stderr, "push\n"); return 1; }
    if (vireo_ring_kick_needed(&port_b.to_switch)) ring_port_kick(&port_b);
    memcpy(frame, mac_b, 6);
    memcpy(frame + 6, mac_a, 6);
    pthread_t thread;
    pthread_create(&thread, NULL, ring_receiver, &port_b);
    long sent = 0;
    double start = now(), end = start + seconds;
    long before = atomic_load(&received);
    while (now() < end) {
        int pushed = 0;
        for (int i = 0; i < batch; i++) {
            int result = vireo_ring_push(&port_a.to_switch, frame, frame_length, NULL, 0);
            if (result < 0) { fprintf(stderr, "broken ring\n"); return 1; }
            if (result == 0) break;
            pushed++;
        }
        sent += pushed;
        if (vireo_ring_kick_needed(&port_a.to_switch)) ring_port_kick(&port_a);
        if (pushed < batch) sched_yield();  // full: the switch is busy with what is there
    }
    return report(start, before, sent, thread);
}

int main(int argc, char **argv) {
    int rings = argc == 5 && strcmp(argv[1], "--rings") == 0;
    if (argc != 4 + rings) { fprintf(stderr, "usage: %s [--rings] A.sock B.sock SECONDS\n", argv[0]); return 64; }
    argv += rings;
    int a = ring_port_connect(argv[1]), b = ring_port_connect(argv[2]);
    double seconds = atof(argv[3]);
    uint8_t mac_a[6] = { 0x02, 0, 0, 0, 0, 0x0a }, mac_b[6] = { 0x02, 0, 0, 0, 0, 0x0b };
    uint8_t frame[frame_length] = { 0 };
    frame[12] = 0x08; frame[13] = 0x00;
    if (rings) return run_rings(a, b, seconds, frame, mac_a, mac_b);
    // B announces itself (a broadcast the switch learns B's address from), then A sends to B.
    memset(frame, 0xff, 6);
    memcpy(frame + 6, mac_b, 6);
    frame[12] = 0x08; frame[13] = 0x00;
    if (send(b, frame, sizeof frame, 0) != (ssize_t)sizeof frame) { perror("send"); return 1; }
    memcpy(frame, mac_b, 6);
    memcpy(frame + 6, mac_a, 6);
    pthread_t thread;
    pthread_create(&thread, NULL, receiver, &b);

    struct mmsghdr messages[batch];
    struct iovec vector = { .iov_base = frame, .iov_len = sizeof frame };
    memset(messages, 0, sizeof messages);
    for (int i = 0; i < batch; i++) { messages[i].msg_hdr.msg_iov = &vector; messages[i].msg_hdr.msg_iovlen = 1; }
    long sent = 0;
    double start = now(), end = start + seconds;
    long before = atomic_load(&received);
    while (now() < end) {
        int n = sendmmsg(a, messages, batch, 0);
        if (n < 0) { perror("sendmmsg"); return 1; }
        sent += n;
    }
    return report(start, before, sent, thread);
}
