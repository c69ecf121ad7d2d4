#define _GNU_SOURCE
#include "CVireoNetlink.h"
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

// The Swift side (VireoNetlink) encodes these structures field by field at these sizes.
_Static_assert(sizeof(struct nlmsghdr) == 16, "nlmsghdr ABI");
_Static_assert(sizeof(struct ifinfomsg) == 16, "ifinfomsg ABI");
_Static_assert(sizeof(struct nlmsgerr) == 20, "nlmsgerr ABI");
_Static_assert(sizeof(struct rtattr) == 4, "rtattr ABI");

/// Moves the calling thread into the network namespace at `path` (NULL: stays); `*saved` gets the
/// descriptor of the namespace to return to (-1 when nothing was changed).
static int enter_netns(const char *path, int *saved) {
    *saved = -1;
    if (path == NULL) return 0;
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0) return -1;
    int target = open(path, O_RDONLY | O_CLOEXEC);
    if (target < 0 || setns(target, CLONE_NEWNET) < 0) {
        int error = errno;
        if (target >= 0) close(target);
        close(self);
        errno = error;
        return -1;
    }
    close(target);
    *saved = self;
    return 0;
}

static void leave_netns(int saved) {
    if (saved < 0) return;
    int error = errno;
    (void)setns(saved, CLONE_NEWNET);
    close(saved);
    errno = error;
}

int vireo_netlink_route_open(const char *netns_path) {
    int saved;
    if (enter_netns(netns_path, &saved) < 0) return -1;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd >= 0) {
        struct sockaddr_nl kernel;
        memset(&kernel, 0, sizeof kernel);
        kernel.nl_family = AF_NETLINK;
        int one = 1;
        // Extended acks carry the kernel's error message (NLMSGERR_ATTR_MSG) when it has one.
        (void)setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&kernel, sizeof kernel) < 0) {
            int error = errno;
            close(fd);
            errno = error;
            fd = -1;
        }
    }
    leave_netns(saved);
    return fd;
}

int vireo_tap_create_persistent(const char *name, const char *netns_path) {
    if (name == NULL || strlen(name) == 0 || strlen(name) >= IFNAMSIZ) { errno = EINVAL; return -1; }
    int saved;
    if (enter_netns(netns_path, &saved) < 0) return -1;
    int result = -1;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd >= 0) {
        struct ifreq request;
        memset(&request, 0, sizeof request);
        strncpy(request.ifr_name, name, IFNAMSIZ - 1);
        request.ifr_flags = IFF_TAP | IFF_NO_PI;
        if (ioctl(fd, TUNSETIFF, &request) == 0 && ioctl(fd, TUNSETPERSIST, 1) == 0) result = 0;
        int error = errno;
        close(fd);
        errno = error;
    }
    leave_netns(saved);
    return result;
}
