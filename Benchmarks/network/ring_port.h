// The VMM side of a vireo-switchd `vm:` port, for the benchmark tools (vmport-blast, vm-relay):
// connect to the port's socket and offer shared-memory rings as vireo-vmm does (RingHandshake,
// CVireoFrameRing.h, docs/network.md "Shared-memory rings").
#ifndef VIREO_BENCH_RING_PORT_H
#define VIREO_BENCH_RING_PORT_H
#include "CVireoFrameRing.h"

enum { ring_port_capacity = 1 << 20 };

struct ring_port {
    int socket;
    void *region;
    struct vireo_ring to_switch, from_switch;
    /// Called by ring_port_pop_wait whenever it read kicks off the socket (optional): a producer
    /// waiting for room in to_switch is woken by the same kind of kick.
    void (*kicked)(void);
};

/// A SOCK_SEQPACKET connection to a port socket; exits on failure.
int ring_port_connect(const char *path);
/// Offers `port->socket`'s switch a fresh 1 MiB ring pair and waits for its answer (frames sent
/// before it are skipped); exits when refused or on failure.
void ring_port_offer(struct ring_port *port);
/// Wakes the switch after pushing (the one-byte kick, MSG_DONTWAIT).
void ring_port_kick(struct ring_port *port);
/// Consumer side: the next record from the switch into `buffer`, sleeping on the socket while the
/// ring is empty (at most `timeout_ms` per sleep; returns 0 then). Returns the length, or -1 when
/// the ring is broken.
long ring_port_pop_wait(struct ring_port *port, uint8_t *buffer, size_t capacity, int timeout_ms);
#endif
