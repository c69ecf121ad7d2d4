// Shared-memory frame rings: see include/CVireoFrameRing.h for the layout and the rules.
#define _GNU_SOURCE
#include "CVireoFrameRing.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

enum { line = 64, lines_per_ring = 3, pad_marker = 0xFFFFFFFFu };

static inline uint32_t align8(uint32_t n) { return (n + 7u) & ~7u; }

size_t vireo_ring_region_size(uint32_t capacity) {
    return (size_t)VIREO_RING_CONTROL_SIZE + 2 * (size_t)capacity;
}

int vireo_ring_capacity_valid(uint32_t capacity) {
    return capacity >= VIREO_RING_MIN_CAPACITY && capacity <= VIREO_RING_MAX_CAPACITY && (capacity & (capacity - 1)) == 0;
}

int vireo_ring_region_create(uint32_t capacity) {
    if (!vireo_ring_capacity_valid(capacity)) { errno = EINVAL; return -1; }
    int fd = memfd_create("vireo-frame-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -1;
    if (ftruncate(fd, (off_t)vireo_ring_region_size(capacity)) != 0 ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

void *vireo_ring_map(int fd, uint32_t capacity) {
    if (!vireo_ring_capacity_valid(capacity)) { errno = EINVAL; return NULL; }
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return NULL;
    if (!(seals & F_SEAL_SHRINK)) { errno = EPERM; return NULL; }
    struct stat status;
    if (fstat(fd, &status) != 0) return NULL;
    size_t size = vireo_ring_region_size(capacity);
    if (!S_ISREG(status.st_mode) || (size_t)status.st_size < size) { errno = EINVAL; return NULL; }
    void *region = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return region == MAP_FAILED ? NULL : region;
}

void vireo_ring_region_init(void *region) {
    uint32_t *words = region;
    words[0] = VIREO_RING_MAGIC;
    words[1] = VIREO_RING_VERSION;
}

int vireo_ring_region_check(const void *region) {
    const uint32_t *words = region;
    return __atomic_load_n(&words[0], __ATOMIC_RELAXED) == VIREO_RING_MAGIC &&
           __atomic_load_n(&words[1], __ATOMIC_RELAXED) == VIREO_RING_VERSION;
}

void vireo_ring_unmap(void *region, uint32_t capacity) {
    if (region != NULL) munmap(region, vireo_ring_region_size(capacity));
}

void vireo_ring_attach(struct vireo_ring *ring, void *region, uint32_t capacity, int index, int producer) {
    uint8_t *base = region;
    uint8_t *control = base + line + (size_t)index * line * lines_per_ring;
    ring->producer = (uint32_t *)control;
    ring->consumer = (uint32_t *)(control + line);
    ring->waiting = (uint32_t *)(control + 2 * line);
    ring->room = (uint32_t *)(control + 2 * line + 4);
    ring->data = base + VIREO_RING_CONTROL_SIZE + (size_t)index * capacity;
    ring->capacity = capacity;
    ring->position = __atomic_load_n(producer ? ring->producer : ring->consumer, __ATOMIC_ACQUIRE);
    ring->peeked = 0;
}

/// Producer: whether a record of `length` bytes fits now (1), not yet (0), or the consumer's
/// position is impossible (-1).
static int record_fits(const struct vireo_ring *ring, size_t length) {
    uint32_t need = align8(4u + (uint32_t)length);
    uint32_t consumer = __atomic_load_n(ring->consumer, __ATOMIC_ACQUIRE);
    uint32_t used = ring->position - consumer;
    if (used > ring->capacity || (used & 7u)) return -1;
    uint32_t to_end = ring->capacity - (ring->position & (ring->capacity - 1));
    uint32_t total = need <= to_end ? need : to_end + need;
    return ring->capacity - used >= total;
}

int vireo_ring_pushv(struct vireo_ring *ring, const struct iovec *parts, int count) {
    size_t length = 0;
    for (int i = 0; i < count; i++) {
        if (parts[i].iov_len > VIREO_RING_MAX_RECORD) return -1;
        length += parts[i].iov_len;
    }
    if (count < 0 || length == 0 || length > VIREO_RING_MAX_RECORD) return -1;
    int fits = record_fits(ring, length);
    if (fits <= 0) return fits;
    uint32_t need = align8(4u + (uint32_t)length);
    uint32_t offset = ring->position & (ring->capacity - 1);
    uint32_t to_end = ring->capacity - offset;
    if (need > to_end) {
        // The record does not fit before the end: mark the rest as padding and start over at 0.
        __atomic_store_n((uint32_t *)(ring->data + offset), pad_marker, __ATOMIC_RELAXED);
        ring->position += to_end;
        offset = 0;
    }
    uint32_t stored = (uint32_t)length;
    memcpy(ring->data + offset, &stored, 4);
    uint8_t *destination = ring->data + offset + 4;
    for (int i = 0; i < count; i++) {
        if (parts[i].iov_len) memcpy(destination, parts[i].iov_base, parts[i].iov_len);
        destination += parts[i].iov_len;
    }
    ring->position += need;
    __atomic_store_n(ring->producer, ring->position, __ATOMIC_RELEASE);
    return 1;
}

int vireo_ring_push(struct vireo_ring *ring, const uint8_t *first, size_t first_length,
                    const uint8_t *second, size_t second_length) {
    struct iovec parts[2] = {
        { .iov_base = (void *)first, .iov_len = first_length },
        { .iov_base = (void *)second, .iov_len = second_length },
    };
    return vireo_ring_pushv(ring, parts, 2);
}

int vireo_ring_kick_needed(struct vireo_ring *ring) {
    // Pairs with the fence in vireo_ring_arm: either the consumer sees the new records, or we see its flag.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(ring->waiting, __ATOMIC_RELAXED) == 0) return 0;
    return __atomic_exchange_n(ring->waiting, 0, __ATOMIC_ACQ_REL) != 0;
}

int vireo_ring_wait_for_room(struct vireo_ring *ring, size_t length) {
    if (length == 0 || length > VIREO_RING_MAX_RECORD) return 1;  // push will report it
    __atomic_store_n(ring->room, 1, __ATOMIC_RELAXED);
    // Pairs with the fence in vireo_ring_room_kick_needed: either we see the consumer's new
    // position, or it sees our flag.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (record_fits(ring, length) != 0) {
        __atomic_store_n(ring->room, 0, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

int vireo_ring_room_kick_needed(struct vireo_ring *ring) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(ring->room, __ATOMIC_RELAXED) == 0) return 0;
    return __atomic_exchange_n(ring->room, 0, __ATOMIC_ACQ_REL) != 0;
}

long vireo_ring_peek(struct vireo_ring *ring, const uint8_t **record) {
    ring->peeked = 0;
    // At most one pad marker before a record: a second one in a row is left for the next call.
    for (int step = 0; step < 2; step++) {
        uint32_t producer = __atomic_load_n(ring->producer, __ATOMIC_ACQUIRE);
        uint32_t available = producer - ring->position;
        if (available == 0) return 0;
        if (available > ring->capacity || (available & 7u)) return -1;
        uint32_t offset = ring->position & (ring->capacity - 1);
        uint32_t to_end = ring->capacity - offset;
        // Read once: the peer may rewrite it while we look.
        uint32_t length = __atomic_load_n((const uint32_t *)(ring->data + offset), __ATOMIC_RELAXED);
        if (length == pad_marker) {
            if (to_end > available) return -1;
            ring->position += to_end;
            __atomic_store_n(ring->consumer, ring->position, __ATOMIC_RELEASE);
            continue;
        }
        if (length == 0 || length > VIREO_RING_MAX_RECORD) return -1;
        uint32_t need = align8(4u + length);
        if (need > to_end || need > available) return -1;
        ring->peeked = need;
        *record = ring->data + offset + 4;
        return (long)length;
    }
    return 0;
}

void vireo_ring_release(struct vireo_ring *ring) {
    if (ring->peeked == 0) return;
    ring->position += ring->peeked;
    ring->peeked = 0;
    __atomic_store_n(ring->consumer, ring->position, __ATOMIC_RELEASE);
}

long vireo_ring_pop(struct vireo_ring *ring, uint8_t *buffer, size_t capacity) {
    const uint8_t *record = NULL;
    long length = vireo_ring_peek(ring, &record);
    if (length <= 0) return length;
    if ((size_t)length > capacity) {
        ring->peeked = 0;
        return -1;
    }
    memcpy(buffer, record, (size_t)length);
    vireo_ring_release(ring);
    return length;
}

int vireo_ring_has_records(const struct vireo_ring *ring) {
    return __atomic_load_n(ring->producer, __ATOMIC_ACQUIRE) != ring->position;
}

int vireo_ring_arm(struct vireo_ring *ring) {
    __atomic_store_n(ring->waiting, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (vireo_ring_has_records(ring)) {
        __atomic_store_n(ring->waiting, 0, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

int vireo_send_with_fds(int socket, const uint8_t *buffer, size_t length, const int *fds, int count) {
    if (count < 0 || count > 4) { errno = EINVAL; return -1; }
    union { struct cmsghdr header; char space[CMSG_SPACE(4 * sizeof(int))]; } control;
    memset(&control, 0, sizeof control);
    struct iovec vector = { .iov_base = (void *)buffer, .iov_len = length };
    struct msghdr message = { .msg_iov = &vector, .msg_iovlen = 1 };
    if (count > 0) {
        message.msg_control = control.space;
        message.msg_controllen = CMSG_SPACE((size_t)count * sizeof(int));
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN((size_t)count * sizeof(int));
        memcpy(CMSG_DATA(header), fds, (size_t)count * sizeof(int));
    }
    ssize_t sent = sendmsg(socket, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0) return -1;
    if ((size_t)sent != length) { errno = EMSGSIZE; return -1; }
    return 0;
}

long vireo_recv_with_fds(int socket, uint8_t *buffer, size_t length, int *fds, int max, int *count) {
    union { struct cmsghdr header; char space[CMSG_SPACE(8 * sizeof(int))]; } control;
    struct iovec vector = { .iov_base = buffer, .iov_len = length };
    struct msghdr message = { .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.space,
                              .msg_controllen = sizeof control.space };
    *count = 0;
    ssize_t got = recvmsg(socket, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (got < 0) return -1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int received = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *descriptors = (int *)CMSG_DATA(header);
        for (int i = 0; i < received; i++) {
            if (*count < max && *count < 4) fds[(*count)++] = descriptors[i];
            else close(descriptors[i]);
        }
    }
    return (long)got;
}
