// A stand-in for a VMM's virtio-net backend, so that switch-bench.sh can compare how two VMs'
// TCP crosses vireo-switchd and the Linux bridge with the same endpoints on both sides. The
// "guest" is a network namespace behind the tap GUEST: its kernel plays the guest's virtio-net
// driver (the same checksum and TSO offloads, 64 KiB super-frames behind a virtio-net header), and
// this relay's buffer plays guest memory. It moves each frame with its header between GUEST and
// the VM's port, as a VMM moves it between guest memory and its network backend:
//
//   vm-relay GUEST tap PORT        PORT is a second tap, enslaved to a Linux bridge by the caller
//                                  (a VMM's tap backend: QEMU's, or vireo-vmm's --net tap=)
//   vm-relay GUEST switch SOCKET   a vireo-switchd `vm:` port (offload=on) in ring mode with all
//                                  receive offloads announced (vireo-vmm's --net switch=)
//
// One thread per direction, blocking I/O. A frame that finds the switch's ring full waits for
// room (the ring's "waiting for room" flag and the switch's kick), as vireo-vmm's guest packets
// wait in their queue; a tap write never waits (the kernel takes the frame at once).
// Prints "ready" once its taps exist (the caller then moves GUEST into its namespace) and relays
// until SIGTERM or SIGINT, then prints "waited N" (frames that found the ring full).
//
// Build (from the repository root; switch-bench.sh does it):
//   cc -O2 -pthread -I Sources/CVireoLinux/include -I Benchmarks/network -o vm-relay Benchmarks/network/vm-relay.c
//      Benchmarks/network/ring_port.c Sources/CVireoLinux/frame_ring.c Sources/CVireoLinux/shim.c
#define _GNU_SOURCE
#include "CVireoLinux.h"
#include "ring_port.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

enum { offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN, buffer_size = VIREO_RING_MAX_RECORD };
/// Announced to the switch: checksum, TSO4, TSO6 and ECN accepted (OffloadAnnouncement).
static const uint8_t announcement[12] = { 0x0F };

static int guest = -1, port_tap = -1;
static struct ring_port port;
static _Atomic long waited;
static pthread_mutex_t room_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t room_kicked = PTHREAD_COND_INITIALIZER;

/// The receive thread read kicks: one of them may be the switch's "room" kick.
static void wake_transmit(void) {
    pthread_mutex_lock(&room_lock);
    pthread_cond_broadcast(&room_kicked);
    pthread_mutex_unlock(&room_lock);
}

/// Pushes one frame to the switch, waiting while its ring is full.
static void push_waiting(const uint8_t *frame, long length) {
    for (int counted = 0;;) {
        int result = vireo_ring_push(&port.to_switch, frame, (size_t)length, NULL, 0);
        if (result < 0) { fprintf(stderr, "broken ring\n"); exit(1); }
        if (result == 1) break;
        if (!counted++) waited++;
        if (vireo_ring_wait_for_room(&port.to_switch, (size_t)length)) continue;
        // The receive thread reads the socket's kicks; a short time-out covers a kick it read
        // between our announcement and this wait.
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 1000000;
        if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
        pthread_mutex_lock(&room_lock);
        pthread_cond_timedwait(&room_kicked, &room_lock, &until);
        pthread_mutex_unlock(&room_lock);
    }
    if (vireo_ring_kick_needed(&port.to_switch)) ring_port_kick(&port);
}

static int open_tap(const char *name) {
    int fd = vireo_tap_open(name, offloads);
    if (fd < 0) { perror(name); exit(1); }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

static void write_all(int fd, const uint8_t *bytes, long length, const char *what) {
    if (write(fd, bytes, (size_t)length) != length && errno != EIO) { perror(what); exit(1); }
}

/// Guest → port: what the VMM does on the guest's transmit queue.
static void *transmit(void *unused) {
    (void)unused;
    static uint8_t frame[buffer_size];
    for (;;) {
        long length = read(guest, frame, sizeof frame);
        if (length <= 0) { if (length < 0 && errno == EINTR) continue; perror("read guest tap"); exit(1); }
        if (port_tap >= 0) { write_all(port_tap, frame, length, "write port tap"); continue; }
        push_waiting(frame, length);
    }
    return NULL;
}

/// Port → guest: what the VMM does to fill the guest's receive queue.
static void *receive(void *unused) {
    (void)unused;
    static uint8_t frame[buffer_size];
    for (;;) {
        long length = port_tap >= 0 ? read(port_tap, frame, sizeof frame)
                                    : ring_port_pop_wait(&port, frame, sizeof frame, -1);
        if (length < 0) { if (errno == EINTR) continue; perror("receive from port"); exit(1); }
        if (length > 0) write_all(guest, frame, length, "write guest tap");
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[2], "tap") != 0 && strcmp(argv[2], "switch") != 0)) {
        fprintf(stderr, "usage: %s GUEST-TAP tap PORT-TAP | %s GUEST-TAP switch PORT-SOCKET\n", argv[0], argv[0]);
        return 64;
    }
    guest = open_tap(argv[1]);
    if (strcmp(argv[2], "tap") == 0) {
        port_tap = open_tap(argv[3]);
    } else {
        port.socket = ring_port_connect(argv[3]);
        port.kicked = wake_transmit;
        ring_port_offer(&port);
        if (send(port.socket, announcement, sizeof announcement, MSG_NOSIGNAL) != sizeof announcement) { perror("announce"); return 1; }
    }
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);  // the relay threads inherit it; main waits for it
    printf("ready\n");
    fflush(stdout);
    pthread_t threads[2];
    pthread_create(&threads[0], NULL, transmit, NULL);
    pthread_create(&threads[1], NULL, receive, NULL);
    int signal_number;
    sigwait(&stop, &signal_number);
    printf("waited %ld\n", (long)waited);
    return 0;
}
