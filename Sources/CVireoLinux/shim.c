#define _GNU_SOURCE
#include "CVireoLinux.h"
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <errno.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <spawn.h>

_Static_assert(sizeof(struct kvm_regs) == 144, "kvm_regs ABI");
_Static_assert(sizeof(struct kvm_sregs) == 312, "kvm_sregs ABI");
_Static_assert(sizeof(struct kvm_cpuid_entry2) == 40, "kvm_cpuid_entry2 ABI");
_Static_assert(sizeof(struct kvm_userspace_memory_region) == 32, "kvm_userspace_memory_region ABI");
_Static_assert(sizeof(struct kvm_lapic_state) == 1024, "kvm_lapic_state ABI");
_Static_assert(sizeof(struct kvm_fpu) == 416, "kvm_fpu ABI");

int vireo_ioctl_none(int fd, unsigned long request) { return ioctl(fd, request, 0); }
int vireo_ioctl_value(int fd, unsigned long request, unsigned long value) { return ioctl(fd, request, value); }
int vireo_ioctl_pointer(int fd, unsigned long request, void *argument) { return ioctl(fd, request, argument); }

int vireo_vcpu_kick_signal(void) { return SIGRTMIN; }

static void kick_handler(int signo) { (void)signo; }

int vireo_install_kick_handler(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = kick_handler;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
    return sigaction(SIGRTMIN, &action, NULL);
}


int vireo_kick_thread(unsigned long thread) { return pthread_kill((pthread_t)thread, SIGRTMIN); }

unsigned long vireo_current_thread(void) { return (unsigned long)pthread_self(); }


int vireo_set_thread_name(unsigned long thread, const char *name) { return pthread_setname_np((pthread_t)thread, name); }

int vireo_accept_cloexec(int listener) { return accept4(listener, NULL, NULL, SOCK_CLOEXEC); }

int vireo_unblock_kick_signal(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/// The one tap opener: /dev/net/tun, non-blocking, as tap `name` ("" or NULL: the kernel picks
/// tapN) with IFF_TAP|IFF_NO_PI and `extra_flags`; the device's name goes to `actual_name`
/// (IFNAMSIZ bytes) when given. Used by the VMM's tap backend and by the switch's tap ports.
static int tap_open(const char *name, short extra_flags, char *actual_name) {
    if (name != NULL && strlen(name) >= IFNAMSIZ) { errno = EINVAL; return -1; }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof request);
    if (name != NULL) strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | extra_flags;
    if (ioctl(fd, TUNSETIFF, &request) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    if (actual_name != NULL) memcpy(actual_name, request.ifr_name, IFNAMSIZ);
    return fd;
}

/// Opens tap `name` with IFF_VNET_HDR, a 12-byte vnet header (TUNSETVNETHDRSZ) and the TUN_F_*
/// `offloads` (TUNSETOFFLOAD: what the kernel may hand the reader). Shared by the VMM's tap backend
/// and the switch's tap ports in offload mode.
static int tap_open_vnet(const char *name, unsigned int offloads, char *actual_name) {
    int fd = tap_open(name, IFF_VNET_HDR, actual_name);
    if (fd < 0) return -1;
    int header = VIREO_TAP_VNET_HDR_LEN;
    if (ioctl(fd, TUNSETVNETHDRSZ, &header) < 0 || ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int vireo_tap_open(const char *name, unsigned int offloads) {
    if (name == NULL) { errno = EINVAL; return -1; }
    return tap_open_vnet(name, offloads, NULL);
}

int vireo_tap_set_offload(int fd, unsigned int offloads) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads); }
unsigned int vireo_tun_f_csum(void) { return TUN_F_CSUM; }
unsigned int vireo_tun_f_tso4(void) { return TUN_F_TSO4; }
unsigned int vireo_tun_f_tso6(void) { return TUN_F_TSO6; }
unsigned int vireo_tun_f_tso_ecn(void) { return TUN_F_TSO_ECN; }

// MARK: Virtual switch helpers (vireo-switchd).
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <arpa/inet.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <unistd.h>

int vireo_switch_tap_open(const char *name, char *actual_name, int offload) {
    if (!offload) return tap_open(name, 0, actual_name);
    return tap_open_vnet(name, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN, actual_name);
}

unsigned int vireo_interface_index(const char *ifname) { return if_nametoindex(ifname); }

int vireo_packet_open(const char *ifname, int vnet_header) {
    unsigned int index = if_nametoindex(ifname);
    if (index == 0) { errno = ENODEV; return -1; }
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) return -1;
    struct sockaddr_ll address;
    memset(&address, 0, sizeof address);
    address.sll_family = AF_PACKET;
    address.sll_protocol = htons(ETH_P_ALL);
    address.sll_ifindex = (int)index;
    int one = 1;
    struct packet_mreq membership;
    memset(&membership, 0, sizeof membership);
    membership.mr_ifindex = (int)index;
    membership.mr_type = PACKET_MR_PROMISC;
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0
        || setsockopt(fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) < 0
        || (vnet_header && setsockopt(fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0)
        || setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &membership, sizeof membership) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
#ifdef PACKET_IGNORE_OUTGOING
    (void)setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one); // best effort (Linux 4.20+)
#endif
    return fd;
}

/// Receives one message from a packet socket: with `vnet_header`, a 10-byte virtio_net_hdr goes
/// to buffer[0..10), two zero bytes (num_buffers) follow and the frame starts at 12; without, the
/// frame starts at 0. Room is left for a stripped 802.1Q tag to go back without moving the payload.
static long packet_recv(int fd, uint8_t *buffer, size_t capacity, int vnet_header) {
    size_t header = vnet_header ? 12 : 0;
    if (capacity < header + 18) { errno = EINVAL; return -1; }
    uint8_t *frame = buffer + header;
    size_t room = capacity - header - 4;
    for (;;) {
        struct iovec vector[2];
        int vectors = 0;
        if (vnet_header) vector[vectors++] = (struct iovec){ .iov_base = buffer, .iov_len = 10 };
        vector[vectors++] = (struct iovec){ .iov_base = frame + 4, .iov_len = room };
        union { struct cmsghdr header; char space[CMSG_SPACE(sizeof(struct tpacket_auxdata))]; } control;
        struct sockaddr_ll from;
        struct msghdr message;
        memset(&message, 0, sizeof message);
        message.msg_name = &from;
        message.msg_namelen = sizeof from;
        message.msg_iov = vector;
        message.msg_iovlen = (size_t)vectors;
        message.msg_control = &control;
        message.msg_controllen = sizeof control;
        ssize_t length = recvmsg(fd, &message, MSG_TRUNC);
        if (length < 0) return -1;
        if (from.sll_pkttype == PACKET_OUTGOING) continue; // our own transmissions, or the host's
        if (vnet_header) {
            if (length < 10) continue;
            length -= 10;
            buffer[10] = 0;
            buffer[11] = 0;
        }
        if (length > (ssize_t)room) length = (ssize_t)room;
        int tagged = 0;
        uint16_t tci = 0, tpid = ETH_P_8021Q;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c != NULL; c = CMSG_NXTHDR(&message, c)) {
            if (c->cmsg_level != SOL_PACKET || c->cmsg_type != PACKET_AUXDATA) continue;
            struct tpacket_auxdata aux;
            memcpy(&aux, CMSG_DATA(c), sizeof aux);
            if (aux.tp_status & TP_STATUS_VLAN_VALID) {
                tagged = 1;
                tci = aux.tp_vlan_tci;
                if (aux.tp_status & TP_STATUS_VLAN_TPID_VALID) tpid = aux.tp_vlan_tpid;
            }
        }
        if (!tagged || length < 12) {
            memmove(frame, frame + 4, (size_t)length);
            return (long)header + length;
        }
        memmove(frame, frame + 4, 12); // MAC addresses
        frame[12] = (uint8_t)(tpid >> 8);
        frame[13] = (uint8_t)(tpid & 0xff);
        frame[14] = (uint8_t)(tci >> 8);
        frame[15] = (uint8_t)(tci & 0xff);
        if (vnet_header) {
            // The header's offsets count from the frame as the kernel holds it, tag stripped
            // (virtio 1.2 5.1.6.2: csum_start, hdr_len; little-endian): move them past the tag.
            uint16_t csum_start = (uint16_t)(buffer[6] | buffer[7] << 8);
            uint16_t hdr_len = (uint16_t)(buffer[2] | buffer[3] << 8);
            if (buffer[0] & 1 /* VIRTIO_NET_HDR_F_NEEDS_CSUM */) csum_start += 4;
            if (buffer[1] != 0 /* gso_type */ && hdr_len != 0) hdr_len += 4;
            buffer[6] = (uint8_t)csum_start; buffer[7] = (uint8_t)(csum_start >> 8);
            buffer[2] = (uint8_t)hdr_len; buffer[3] = (uint8_t)(hdr_len >> 8);
        }
        return (long)header + length + 4;
    }
}

long vireo_packet_recv(int fd, uint8_t *buffer, size_t capacity) { return packet_recv(fd, buffer, capacity, 0); }

long vireo_packet_recv_headed(int fd, uint8_t *buffer, size_t capacity) { return packet_recv(fd, buffer, capacity, 1); }

long vireo_packet_send_headed(int fd, const uint8_t *buffer, size_t length) {
    if (length < 12) { errno = EINVAL; return -1; }
    struct iovec vector[2] = {
        { .iov_base = (void *)buffer, .iov_len = 10 },
        { .iov_base = (void *)(buffer + 12), .iov_len = length - 12 },
    };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = vector;
    message.msg_iovlen = 2;
    ssize_t sent = sendmsg(fd, &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    return sent < 0 ? -1 : sent + 2;
}

int vireo_termination_signalfd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

long vireo_send_message(int fd, const uint8_t *buffer, size_t length) {
    return send(fd, buffer, length, MSG_DONTWAIT | MSG_NOSIGNAL);
}

enum { vireo_batch_max = 64 };

int vireo_recv_batch(int fd, uint8_t *arena, size_t slot, unsigned count, uint32_t *lengths) {
    struct mmsghdr messages[vireo_batch_max];
    struct iovec vectors[vireo_batch_max];
    if (count > vireo_batch_max) count = vireo_batch_max;
    memset(messages, 0, sizeof(struct mmsghdr) * count);
    for (unsigned i = 0; i < count; i++) {
        vectors[i].iov_base = arena + (size_t)i * slot;
        vectors[i].iov_len = slot;
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int got;
    do { got = recvmmsg(fd, messages, count, MSG_DONTWAIT, NULL); } while (got < 0 && errno == EINTR);
    for (int i = 0; i < got; i++) {
        lengths[i] = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) ? (uint32_t)slot : messages[i].msg_len;
    }
    return got;
}

int vireo_send_batch(int fd, const uint8_t *base, const uint32_t *offsets, const uint32_t *lengths, unsigned count) {
    struct mmsghdr messages[vireo_batch_max];
    struct iovec vectors[vireo_batch_max];
    if (count > vireo_batch_max) count = vireo_batch_max;
    memset(messages, 0, sizeof(struct mmsghdr) * count);
    for (unsigned i = 0; i < count; i++) {
        vectors[i].iov_base = (void *)(base + offsets[i]);
        vectors[i].iov_len = lengths[i];
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int sent;
    do { sent = sendmmsg(fd, messages, count, MSG_DONTWAIT | MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
    return sent;
}

static int unix_address(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(address->sun_path, path);
    return 0;
}

int vireo_unix_listen(const char *path, int type) {
    struct sockaddr_un address;
    if (unix_address(path, &address) < 0) return -1;
    int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0 || (type != SOCK_DGRAM && listen(fd, 8) < 0)) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int vireo_unix_connect(const char *path, int type) {
    struct sockaddr_un address;
    if (unix_address(path, &address) < 0) return -1;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int vireo_accept_nonblocking(int listener) { return accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK); }

int vireo_punch_hole(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

int vireo_spawn_close_from(posix_spawn_file_actions_t *actions, int lowfd) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowfd);
}
