// rtnetlink and persistent taps for Linux bridge management (VireoNetlink). Messages are built
// and parsed in Swift, field by field; only the sockets and the tun ioctls live here.
#ifndef CVIREONETLINK_H
#define CVIREONETLINK_H

/// Opens a NETLINK_ROUTE socket connected to the kernel, in the network namespace whose file is
/// `netns_path` (e.g. /run/netns/NAME; NULL: the caller's). Returns the fd or -1 with errno.
int vireo_netlink_route_open(const char *netns_path);

/// Creates a persistent tap device `name` (TUNSETIFF IFF_TAP|IFF_NO_PI, then TUNSETPERSIST), in
/// the network namespace at `netns_path` (NULL: the caller's). Returns 0 or -1 with errno.
int vireo_tap_create_persistent(const char *name, const char *netns_path);

#endif
