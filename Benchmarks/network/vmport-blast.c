// Load generator for vireo-switchd's `vm:` ports (docs/network.md): plays two VMMs. It connects
// to two port sockets (SOCK_SEQPACKET, one Ethernet frame per message), sends 60-byte frames
// (64 on the wire with the FCS) from the first to the second as fast as the switch takes them
// (sendmmsg, 64 per call, blocking on a full socket), and counts what arrives on the second
// (recvmmsg) for SECONDS. Prints "RECEIVED_PER_SECOND SENT_PER_SECOND".
//
//   cc -O2 -pthread -o vmport-blast vmport-blast.c && ./vmport-blast A.sock B.sock 5
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { batch = 64, frame_length = 60 };
static atomic_long received;
static atomic_int done;

static int connect_port(const char *path) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    if (fd < 0 || strlen(path) >= sizeof address.sun_path) { perror("socket"); exit(1); }
    strcpy(address.sun_path, path);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) { perror(path); exit(1); }
    return fd;
}

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

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s A.sock B.sock SECONDS\n", argv[0]); return 64; }
    int a = connect_port(argv[1]), b = connect_port(argv[2]);
    double seconds = atof(argv[3]);
    uint8_t mac_a[6] = { 0x02, 0, 0, 0, 0, 0x0a }, mac_b[6] = { 0x02, 0, 0, 0, 0, 0x0b };
    uint8_t frame[frame_length] = { 0 };
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
    double elapsed = now() - start;
    long got = atomic_load(&received) - before;
    atomic_store(&done, 1);
    pthread_join(thread, NULL);
    printf("%.0f %.0f\n", (double)got / elapsed, (double)sent / elapsed);
    return 0;
}
