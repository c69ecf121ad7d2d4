#include "CVireoBPF.h"
#include <errno.h>
#include <linux/bpf.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SO_ATTACH_BPF
#define SO_ATTACH_BPF 50
#endif
// enum bpf_attach_type values from Linux 6.6 (the build's headers may predate tcx).
#define VIREO_BPF_TCX_INGRESS 46
#define VIREO_BPF_TCX_EGRESS 47

static long vireo_bpf(int command, union bpf_attr *attributes) {
    return syscall(SYS_bpf, command, attributes, sizeof *attributes);
}

int vireo_bpf_hash_create(uint32_t key_size, uint32_t value_size, uint32_t max_entries) {
    union bpf_attr attributes;
    memset(&attributes, 0, sizeof attributes);
    attributes.map_type = BPF_MAP_TYPE_HASH;
    attributes.key_size = key_size;
    attributes.value_size = value_size;
    attributes.max_entries = max_entries;
    attributes.map_flags = BPF_F_NO_PREALLOC;
    return (int)vireo_bpf(BPF_MAP_CREATE, &attributes);
}

static int map_element(int command, int map_fd, const void *key, void *value, uint64_t flags) {
    union bpf_attr attributes;
    memset(&attributes, 0, sizeof attributes);
    attributes.map_fd = (uint32_t)map_fd;
    attributes.key = (uint64_t)(uintptr_t)key;
    attributes.value = (uint64_t)(uintptr_t)value;
    attributes.flags = flags;
    return (int)vireo_bpf(command, &attributes);
}

int vireo_bpf_map_update(int map_fd, const void *key, const void *value, uint64_t flags) {
    return map_element(BPF_MAP_UPDATE_ELEM, map_fd, key, (void *)value, flags);
}

int vireo_bpf_map_lookup(int map_fd, const void *key, void *value) {
    return map_element(BPF_MAP_LOOKUP_ELEM, map_fd, key, value, 0);
}

int vireo_bpf_map_delete(int map_fd, const void *key) {
    return map_element(BPF_MAP_DELETE_ELEM, map_fd, key, NULL, 0);
}

int vireo_bpf_prog_load(uint32_t type, const void *instructions, uint32_t count, const char *license,
                        char *log, uint32_t log_size) {
    union bpf_attr attributes;
    memset(&attributes, 0, sizeof attributes);
    attributes.prog_type = type;
    attributes.insns = (uint64_t)(uintptr_t)instructions;
    attributes.insn_cnt = count;
    attributes.license = (uint64_t)(uintptr_t)license;
    int fd = (int)vireo_bpf(BPF_PROG_LOAD, &attributes);
    if (fd >= 0 || log == NULL || log_size == 0) return fd;
    // Rejected: load again with the verifier's log, to say why.
    int saved = errno;
    log[0] = 0;
    attributes.log_buf = (uint64_t)(uintptr_t)log;
    attributes.log_size = log_size;
    attributes.log_level = 1;
    fd = (int)vireo_bpf(BPF_PROG_LOAD, &attributes);
    if (fd >= 0) return fd;
    errno = saved;
    return -1;
}

int vireo_bpf_tcx_attach(int prog_fd, int ifindex, int egress) {
    union bpf_attr attributes;
    memset(&attributes, 0, sizeof attributes);
    attributes.link_create.prog_fd = (uint32_t)prog_fd;
    attributes.link_create.target_ifindex = (uint32_t)ifindex;
    attributes.link_create.attach_type = egress ? VIREO_BPF_TCX_EGRESS : VIREO_BPF_TCX_INGRESS;
    return (int)vireo_bpf(BPF_LINK_CREATE, &attributes);
}

int vireo_bpf_attach_socket_filter(int socket_fd, int prog_fd) {
    return setsockopt(socket_fd, SOL_SOCKET, SO_ATTACH_BPF, &prog_fd, sizeof prog_fd);
}
