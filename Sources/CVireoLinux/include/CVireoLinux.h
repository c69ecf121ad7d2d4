// C shim for the Linux interfaces Vireo needs that Swift cannot import directly:
// ioctl request numbers (function-like macros such as _IOW) and the variadic ioctl(2).
// Struct sizes are checked against the KVM ABI so a header mismatch fails the build.
#ifndef CVIREOLINUX_H
#define CVIREOLINUX_H

#include <linux/kvm.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <termios.h>
#include <spawn.h>
#include "CVireoNetlink.h"
#include "CVireoFrameRing.h"
#include "CVireoBPF.h"

// MARK: ioctl entry points (ioctl(2) is variadic; Swift cannot call it).
int vireo_ioctl_none(int fd, unsigned long request);
int vireo_ioctl_value(int fd, unsigned long request, unsigned long value);
int vireo_ioctl_pointer(int fd, unsigned long request, void *argument);

// MARK: /dev/kvm system ioctls
static const unsigned long VIREO_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long VIREO_KVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long VIREO_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long VIREO_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long VIREO_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;
static const unsigned long VIREO_KVM_GET_MSR_INDEX_LIST = KVM_GET_MSR_INDEX_LIST;

// MARK: VM ioctls
static const unsigned long VIREO_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long VIREO_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long VIREO_KVM_SET_TSS_ADDR = KVM_SET_TSS_ADDR;
static const unsigned long VIREO_KVM_SET_IDENTITY_MAP_ADDR = KVM_SET_IDENTITY_MAP_ADDR;
static const unsigned long VIREO_KVM_CREATE_IRQCHIP = KVM_CREATE_IRQCHIP;
static const unsigned long VIREO_KVM_CREATE_PIT2 = KVM_CREATE_PIT2;
static const unsigned long VIREO_KVM_IRQ_LINE = KVM_IRQ_LINE;
static const unsigned long VIREO_KVM_IRQFD = KVM_IRQFD;
static const unsigned long VIREO_KVM_IOEVENTFD = KVM_IOEVENTFD;
static const unsigned long VIREO_KVM_SET_GSI_ROUTING = KVM_SET_GSI_ROUTING;
static const unsigned long VIREO_KVM_SIGNAL_MSI = KVM_SIGNAL_MSI;
static const unsigned long VIREO_KVM_GET_STATS_FD = KVM_GET_STATS_FD;

// MARK: vCPU ioctls
static const unsigned long VIREO_KVM_RUN = KVM_RUN;
static const unsigned long VIREO_KVM_GET_REGS = KVM_GET_REGS;
static const unsigned long VIREO_KVM_SET_REGS = KVM_SET_REGS;
static const unsigned long VIREO_KVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long VIREO_KVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long VIREO_KVM_GET_FPU = KVM_GET_FPU;
static const unsigned long VIREO_KVM_SET_FPU = KVM_SET_FPU;
static const unsigned long VIREO_KVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long VIREO_KVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long VIREO_KVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long VIREO_KVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long VIREO_KVM_SET_LAPIC = KVM_SET_LAPIC;
static const unsigned long VIREO_KVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long VIREO_KVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long VIREO_KVM_SET_SIGNAL_MASK = KVM_SET_SIGNAL_MASK;
static const unsigned long VIREO_KVM_SET_TSC_KHZ = KVM_SET_TSC_KHZ;
static const unsigned long VIREO_KVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
static const unsigned long VIREO_KVM_KVMCLOCK_CTRL = KVM_KVMCLOCK_CTRL;

// MARK: Flexible-array structures: helpers that size them correctly.
/// Size in bytes of a `struct kvm_cpuid2` holding `count` entries.
static inline size_t vireo_kvm_cpuid2_size(uint32_t count) {
    return sizeof(struct kvm_cpuid2) + (size_t)count * sizeof(struct kvm_cpuid_entry2);
}
/// Size in bytes of a `struct kvm_msrs` holding `count` entries.
static inline size_t vireo_kvm_msrs_size(uint32_t count) {
    return sizeof(struct kvm_msrs) + (size_t)count * sizeof(struct kvm_msr_entry);
}
/// Size in bytes of a `struct kvm_msr_list` holding `count` indices.
static inline size_t vireo_kvm_msr_list_size(uint32_t count) {
    return sizeof(struct kvm_msr_list) + (size_t)count * sizeof(uint32_t);
}
/// Size in bytes of a `struct kvm_irq_routing` holding `count` entries.
static inline size_t vireo_kvm_irq_routing_size(uint32_t count) {
    return sizeof(struct kvm_irq_routing) + (size_t)count * sizeof(struct kvm_irq_routing_entry);
}

// MARK: kvm_run accessors (the exit payload is an anonymous union).
static inline struct kvm_run *vireo_kvm_run(void *mapping) { return (struct kvm_run *)mapping; }

// MARK: Signals used to kick vCPU threads out of KVM_RUN.
/// Real-time signal used to interrupt a vCPU thread blocked in KVM_RUN.
int vireo_vcpu_kick_signal(void);
/// Installs an empty handler for the kick signal (SA_RESTART off) so KVM_RUN returns EINTR.
int vireo_install_kick_handler(void);
/// Unblocks the kick signal on the calling thread (threads inherit masks: a vCPU thread started from
/// a libdispatch worker would otherwise start with every signal blocked).
int vireo_unblock_kick_signal(void);
/// Sends the kick signal to a thread.
int vireo_kick_thread(unsigned long thread);
/// The calling thread's pthread handle.
unsigned long vireo_current_thread(void);
/// accept4(fd, NULL, NULL, SOCK_CLOEXEC) (accept4 needs _GNU_SOURCE).
int vireo_accept_cloexec(int listener);
/// Names a thread (pthread_setname_np needs _GNU_SOURCE, which the shim defines).
int vireo_set_thread_name(unsigned long thread, const char *name);

// MARK: tap devices (/dev/net/tun).
/// Size of the virtio-net header a tap opened by `vireo_tap_open` prepends to every frame
/// (struct virtio_net_hdr_v1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers).
#define VIREO_TAP_VNET_HDR_LEN 12
/// Opens /dev/net/tun as the tap `name` (created if it does not exist) with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR,
/// a 12-byte vnet header (TUNSETVNETHDRSZ), the offloads `offloads` (TUNSETOFFLOAD, TUN_F_* bits),
/// non-blocking and close-on-exec. Returns the fd, or -1 with errno set.
int vireo_tap_open(const char *name, unsigned int offloads);
/// TUNSETOFFLOAD on an open tap.
int vireo_tap_set_offload(int fd, unsigned int offloads);
/// TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN for Swift.
unsigned int vireo_tun_f_csum(void);
unsigned int vireo_tun_f_tso4(void);
unsigned int vireo_tun_f_tso6(void);
unsigned int vireo_tun_f_tso_ecn(void);

// MARK: Virtual switch: tap devices, AF_PACKET raw sockets, epoll, signalfd (used by vireo-switchd).
/// Opens /dev/net/tun as a tap device (IFF_TAP|IFF_NO_PI, non-blocking) named `name` ("" lets the
/// kernel pick); writes the device's name (IFNAMSIZ bytes) to `actual_name`. With `offload`, frames
/// carry a 12-byte virtio-net header (IFF_VNET_HDR) and the kernel may hand over checksum-partial
/// and TSO super-frames (TUN_F_CSUM|TSO4|TSO6|TSO_ECN). Returns the fd or -1.
int vireo_switch_tap_open(const char *name, char *actual_name, int offload);
/// An AF_PACKET SOCK_RAW socket (ETH_P_ALL, non-blocking) bound to interface `ifname`, promiscuous,
/// ignoring outgoing packets, with PACKET_AUXDATA so stripped VLAN tags can be restored. With
/// `vnet_header`, PACKET_VNET_HDR: every frame comes and goes after a virtio-net header, so
/// checksum-partial and GSO packets the host hands over keep what a receiver needs to finish them.
/// -1 on error.
int vireo_packet_open(const char *ifname, int vnet_header);
/// Receives one frame from a packet socket into `buffer`, re-inserting the 802.1Q tag the kernel
/// moved into metadata (VLAN receive offload). Returns the frame length, or -1 with errno
/// (EAGAIN when nothing is queued). Frames longer than `capacity` are truncated to it.
long vireo_packet_recv(int fd, uint8_t *buffer, size_t capacity);
/// ``vireo_packet_recv`` on a PACKET_VNET_HDR socket: `buffer` gets a 12-byte virtio-net header
/// (num_buffers zero; csum_start and hdr_len moved past a re-inserted tag), then the frame.
/// Returns 12 plus the frame length.
long vireo_packet_recv_headed(int fd, uint8_t *buffer, size_t capacity);
/// Sends a 12-byte virtio-net header and a frame (`length` bytes in all) on a PACKET_VNET_HDR
/// socket without blocking; the kernel segments or checksums as the header asks. Returns `length` or -1.
long vireo_packet_send_headed(int fd, const uint8_t *buffer, size_t length);
/// The interface index of `ifname`, 0 if none.
unsigned int vireo_interface_index(const char *ifname);
/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and returns a non-blocking signalfd for them; ignores SIGPIPE.
int vireo_termination_signalfd(void);
/// Sends one message (a frame on a SOCK_SEQPACKET/SOCK_DGRAM socket) without blocking or raising SIGPIPE.
long vireo_send_message(int fd, const uint8_t *buffer, size_t length);
/// Receives up to `count` (at most 64) messages from a SOCK_SEQPACKET/SOCK_DGRAM socket with one
/// recvmmsg(2), without blocking: message i lands at `arena + i * slot`, its length in `lengths[i]`
/// (`slot` when it was truncated). Returns how many, or -1 with errno (EAGAIN: none queued).
/// A zero length is the end of the stream.
int vireo_recv_batch(int fd, uint8_t *arena, size_t slot, unsigned count, uint32_t *lengths);
/// Sends `count` (at most 64) messages, message i being `lengths[i]` bytes at `base + offsets[i]`,
/// with one sendmmsg(2), without blocking or raising SIGPIPE. Returns how many were sent (the
/// first ones), or -1 with errno.
int vireo_send_batch(int fd, const uint8_t *base, const uint32_t *offsets, const uint32_t *lengths, unsigned count);
/// A non-blocking unix socket of `type` (SOCK_SEQPACKET, SOCK_DGRAM, SOCK_STREAM) listening (or bound,
/// for datagrams) at `path`, replacing a stale socket file. Returns the fd or -1.
int vireo_unix_listen(const char *path, int type);
/// Connects a unix socket of `type` to `path`. Returns the fd or -1.
int vireo_unix_connect(const char *path, int type);
/// accept4(listener, SOCK_CLOEXEC|SOCK_NONBLOCK).
int vireo_accept_nonblocking(int listener);

// MARK: files
/// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length): deallocates the range
/// (it reads as zeros) without changing the file size. Returns 0 or -1 with errno (EOPNOTSUPP where the
/// file system cannot punch holes).
int vireo_punch_hole(int fd, int64_t offset, int64_t length);

/// Closes every descriptor from `lowfd` up in a posix_spawn child (glibc's
/// posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does not expose).
int vireo_spawn_close_from(posix_spawn_file_actions_t *actions, int lowfd);

#endif
