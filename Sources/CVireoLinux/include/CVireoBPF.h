// The bpf(2) calls vireo-switchd's kernel fast path makes (VireoSystem's BPF.swift): maps,
// program loading, tcx links. `union bpf_attr` is filled here, field by field, because its layout
// is a C union of per-command structs; the programs themselves are assembled in Swift.
#ifndef CVIREOBPF_H
#define CVIREOBPF_H

#include <stdint.h>

/// Creates a hash map (BPF_MAP_TYPE_HASH, entries allocated on demand). Returns the fd or -1 with errno.
int vireo_bpf_hash_create(uint32_t key_size, uint32_t value_size, uint32_t max_entries);

/// BPF_MAP_UPDATE_ELEM with `flags` (BPF_ANY 0, BPF_NOEXIST 1, BPF_EXIST 2). 0 or -1 with errno.
int vireo_bpf_map_update(int map_fd, const void *key, const void *value, uint64_t flags);

/// BPF_MAP_LOOKUP_ELEM into `value`. 0, or -1 with errno (ENOENT: no such key).
int vireo_bpf_map_lookup(int map_fd, const void *key, void *value);

/// BPF_MAP_DELETE_ELEM. 0, or -1 with errno (ENOENT: no such key).
int vireo_bpf_map_delete(int map_fd, const void *key);

/// BPF_PROG_LOAD of `count` 8-byte instructions as program type `type`; the verifier's log goes
/// to `log` (NUL-terminated, `log_size` bytes) when it rejects the program. Returns the fd or -1.
int vireo_bpf_prog_load(uint32_t type, const void *instructions, uint32_t count, const char *license,
                        char *log, uint32_t log_size);

/// BPF_LINK_CREATE of a tcx link (Linux 6.6): `prog_fd` runs on `ifindex`'s ingress (egress when
/// `egress` is non-zero) until the returned link fd is closed. Returns the fd or -1 with errno.
int vireo_bpf_tcx_attach(int prog_fd, int ifindex, int egress);

/// SO_ATTACH_BPF: runs socket filter `prog_fd` on every packet queued to `socket_fd`.
int vireo_bpf_attach_socket_filter(int socket_fd, int prog_fd);

#endif
