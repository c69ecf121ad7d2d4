#ifndef CVIREO_FRAME_RING_H
#define CVIREO_FRAME_RING_H

// Shared-memory frame rings between a VMM and vireo-switchd (docs/network.md, "Shared-memory
// rings"). One sealed memfd holds a control page and two single-producer single-consumer byte
// rings: ring 0 carries frames from the VMM to the switch, ring 1 from the switch to the VMM.
//
// Control page (4096 bytes): the magic and version at 0, then per ring three 64-byte lines
// (own cache lines, so the two sides do not share one): the producer's position, the consumer's
// position, and the flags: the consumer's "waiting" at +0, the producer's "waiting for room" at
// +4 (version 2). Ring r's positions sit at 64 + r * 192.
// Data: ring r at 4096 + r * capacity, `capacity` a power of two.
//
// Positions are free-running 32-bit byte counts. A record is a 32-bit length and that many bytes,
// padded to 8; it never wraps: when it does not fit before the end, the producer writes the pad
// marker and goes on at the start. Each side keeps its own position privately and only publishes
// it; the other side's position and every length are checked before use, since the peer may be
// hostile (a VMM whose guest took it over): a bad value reports the ring broken (-1), never a
// read or write outside the mapping. The memfd must be sealed against shrinking (F_SEAL_SHRINK):
// a peer that truncated a mapped file would otherwise make the other side fault.
//
// Wake-ups: a consumer about to sleep sets its waiting flag and checks the ring once more; a
// producer that published records clears the flag and, if it was set, wakes the consumer (over
// the port's socket: a one-byte message sent with MSG_DONTWAIT, which a peer can neither block
// nor fill up for good, unlike an eventfd whose flags it shares). Under load neither side makes a
// system call per frame.
//
// Room (version 2): a producer that finds the ring full may wait instead of dropping. It sets its
// "waiting for room" flag and checks for room once more; a consumer that took records clears the
// flag and, if it was set, kicks the producer the same way. The switch never waits on a VMM (it
// drops what does not fit in a VMM's ring); a VMM waits on the switch, as it would on a tap.

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define VIREO_RING_MAGIC 0x474e4952u     /* "RING" little-endian */
#define VIREO_RING_VERSION 2u
#define VIREO_RING_CONTROL_SIZE 4096u
#define VIREO_RING_MIN_CAPACITY (1u << 17)
#define VIREO_RING_MAX_CAPACITY (1u << 24)
/// The largest record: a 12-byte virtio-net header, 64 KiB and an Ethernet header with a tag.
#define VIREO_RING_MAX_RECORD 65566u /* 12 + 65536 + 18 */

struct vireo_ring {
    uint8_t *data;
    uint32_t *producer;   /* shared: the producer's published position */
    uint32_t *consumer;   /* shared: the consumer's published position */
    uint32_t *waiting;    /* shared: the consumer sleeps and wants a kick */
    uint32_t *room;       /* shared: the producer found the ring full and wants a kick */
    uint32_t capacity;
    uint32_t position;    /* this side's own position (producer's or consumer's) */
    uint32_t peeked;      /* consumer: bytes the record found by vireo_ring_peek takes, 0 if none */
};

/// The size of a region for two rings of `capacity` bytes.
size_t vireo_ring_region_size(uint32_t capacity);
/// Whether `capacity` is a power of two within [VIREO_RING_MIN_CAPACITY, VIREO_RING_MAX_CAPACITY].
int vireo_ring_capacity_valid(uint32_t capacity);
/// A new sealed memfd (no shrinking, growing or further seals) sized for two rings of `capacity`,
/// with the control page initialised once mapped by ``vireo_ring_map``. Returns the fd or -1 with errno.
int vireo_ring_region_create(uint32_t capacity);
/// Maps a region received from a peer after checking it: seals include F_SEAL_SHRINK, size is at
/// least ``vireo_ring_region_size``, and `capacity` valid. Returns the mapping or NULL with errno
/// (EINVAL: capacity or size, EPERM: not sealed).
void *vireo_ring_map(int fd, uint32_t capacity);
/// Writes the magic and version into a freshly created region's control page.
void vireo_ring_region_init(void *region);
/// Whether a mapped region carries the magic and version.
int vireo_ring_region_check(const void *region);
void vireo_ring_unmap(void *region, uint32_t capacity);

/// Attaches `ring` to ring `index` (0 or 1) of a mapped region, as its producer or consumer, taking
/// the current published positions (zero in a fresh region).
void vireo_ring_attach(struct vireo_ring *ring, void *region, uint32_t capacity, int index, int producer);

/// Producer: appends one record made of `first` then `second` (either may be empty). Returns 1 when
/// written, 0 when the ring has no room now, -1 when the ring is broken (a bad consumer position)
/// or the record is empty or larger than VIREO_RING_MAX_RECORD.
int vireo_ring_push(struct vireo_ring *ring, const uint8_t *first, size_t first_length,
                    const uint8_t *second, size_t second_length);
/// Producer: appends one record made of the `count` parts in order (a VMM's header and a frame
/// gathered from guest memory, copied once). Results as for ``vireo_ring_push``.
int vireo_ring_pushv(struct vireo_ring *ring, const struct iovec *parts, int count);
/// Producer, after pushing: 1 when the consumer was waiting (the flag is now clear) and its
/// eventfd must be written, else 0.
int vireo_ring_kick_needed(struct vireo_ring *ring);

/// Producer, after a push found no room for a record of `length` bytes: sets the "waiting for
/// room" flag, then looks again. Returns 1 when the record fits now (the flag is cleared again:
/// push it), 0 when the caller may wait for the consumer's kick.
int vireo_ring_wait_for_room(struct vireo_ring *ring, size_t length);
/// Consumer, after taking records: 1 when the producer was waiting for room (the flag is now
/// clear) and must be kicked, else 0.
int vireo_ring_room_kick_needed(struct vireo_ring *ring);

/// Consumer: finds the next record and leaves it in the ring: returns its length with `*record`
/// pointing at its first byte (0 when the ring is empty, -1 when broken). The bytes stay the
/// consumer's to read until ``vireo_ring_release``, but the peer can still rewrite them: copy
/// whatever a decision rests on before deciding (the switch copies a frame's headers).
long vireo_ring_peek(struct vireo_ring *ring, const uint8_t **record);
/// Consumer: takes the record found by the last ``vireo_ring_peek`` (publishes the position past it).
void vireo_ring_release(struct vireo_ring *ring);
/// Consumer: copies the next record into `buffer` (`capacity` at least VIREO_RING_MAX_RECORD) and
/// returns its length; 0 when the ring is empty, -1 when it is broken.
long vireo_ring_pop(struct vireo_ring *ring, uint8_t *buffer, size_t capacity);
/// Consumer, about to sleep: sets the waiting flag, then looks again. Returns 1 when records
/// arrived meanwhile (the flag is cleared again: go on consuming), 0 when the caller may sleep.
int vireo_ring_arm(struct vireo_ring *ring);
/// Consumer: whether a record is waiting.
int vireo_ring_has_records(const struct vireo_ring *ring);

/// Sends `length` bytes as one message on a unix socket with `count` (at most 4) descriptors
/// (SCM_RIGHTS), without blocking or SIGPIPE. Returns 0 or -1 with errno.
int vireo_send_with_fds(int socket, const uint8_t *buffer, size_t length, const int *fds, int count);
/// Receives one message and up to `max` (at most 4) descriptors (made close-on-exec) without
/// blocking. Returns the message length (0 at end of stream) with `*count` descriptors in `fds`,
/// or -1 with errno (EAGAIN: none queued). Descriptors beyond `max` are closed.
long vireo_recv_with_fds(int socket, uint8_t *buffer, size_t length, int *fds, int max, int *count);

#endif
