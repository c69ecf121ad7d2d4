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

int vireo_tap_open(const char *name, unsigned int offloads) {
    if (name == NULL || strlen(name) >= IFNAMSIZ) { errno = EINVAL; return -1; }
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq request;
    memset(&request, 0, sizeof(request));
    strncpy(request.ifr_name, name, IFNAMSIZ - 1);
    request.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    int header = VIREO_TAP_VNET_HDR_LEN;
    if (ioctl(fd, TUNSETIFF, &request) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &header) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int vireo_tap_set_offload(int fd, unsigned int offloads) { return ioctl(fd, TUNSETOFFLOAD, (unsigned long)offloads); }
unsigned int vireo_tun_f_csum(void) { return TUN_F_CSUM; }
unsigned int vireo_tun_f_tso4(void) { return TUN_F_TSO4; }
unsigned int vireo_tun_f_tso6(void) { return TUN_F_TSO6; }
