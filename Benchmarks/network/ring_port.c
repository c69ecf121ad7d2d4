// See ring_port.h.
#define _GNU_SOURCE
#include "ring_port.h"
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int ring_port_connect(const char *path) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    if (fd < 0 || strlen(path) >= sizeof address.sun_path) { perror("socket"); exit(1); }
    strcpy(address.sun_path, path);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) { perror(path); exit(1); }
    return fd;
}

static void put32(uint8_t *at, uint32_t value) { for (int i = 0; i < 4; i++) at[i] = (uint8_t)(value >> (8 * i)); }

void ring_port_offer(struct ring_port *port) {
    int memfd = vireo_ring_region_create(ring_port_capacity);
    if (memfd < 0 || !(port->region = vireo_ring_map(memfd, ring_port_capacity))) { perror("ring region"); exit(1); }
    vireo_ring_region_init(port->region);
    uint8_t offer[16] = { 'V', 'R', 'N', 'G' };
    put32(offer + 4, VIREO_RING_VERSION); put32(offer + 8, ring_port_capacity); put32(offer + 12, 0);
    if (vireo_send_with_fds(port->socket, offer, sizeof offer, &memfd, 1) != 0) { perror("ring offer"); exit(1); }
    close(memfd);
    uint8_t reply[2048];
    for (;;) {
        ssize_t got = recv(port->socket, reply, sizeof reply, 0);
        if (got <= 0) { perror("ring reply"); exit(1); }
        if (got == 16 && memcmp(reply, "VRNG", 4) == 0) {
            if (reply[8] != 0) { fprintf(stderr, "the switch refused the rings\n"); exit(1); }
            break;
        }
    }
    vireo_ring_attach(&port->to_switch, port->region, ring_port_capacity, 0, 1);
    vireo_ring_attach(&port->from_switch, port->region, ring_port_capacity, 1, 0);
}

void ring_port_kick(struct ring_port *port) {
    static const uint8_t one = 'K';
    send(port->socket, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

long ring_port_pop_wait(struct ring_port *port, uint8_t *buffer, size_t capacity, int timeout_ms) {
    uint8_t scratch[64];
    for (;;) {
        long length = vireo_ring_pop(&port->from_switch, buffer, capacity);
        if (length != 0) return length;
        int kicks = 0;
        while (recv(port->socket, scratch, sizeof scratch, MSG_DONTWAIT) > 0) kicks++;
        if (kicks && port->kicked) port->kicked();
        if (vireo_ring_arm(&port->from_switch)) continue;
        struct pollfd waiter = { .fd = port->socket, .events = POLLIN };
        if (poll(&waiter, 1, timeout_ms) == 0) return 0;
    }
}
