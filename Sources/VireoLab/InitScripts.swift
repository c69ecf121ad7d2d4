/// The init programs the lab generates for its images (shell scripts run by busybox).
public enum InitScripts {
    /// Fixed locations inside the L1 image.
    public enum L1Paths {
        public static let vmm = "/vireo/bin/vireo-vmm"
        public static let l2Kernel = "/l2/vmlinuz"
        public static let l2Initrd = "/l2/initrd.cpio"
        public static let rootfs = "/l2/rootfs.img"
        public static let qemu = "/qemu/bin/qemu-system-x86_64"
        public static let qemuData = "/qemu/share"
        public static let results = "/results"
        public static let scenario = "/scenario"
    }

    /// How the L1 init ends: run the scenario, give the user a shell, or boot an L2 guest under vireo-vmm.
    public enum Mode: String, Sendable {
        case run
        case shell
        case guest
    }

    static let mountBasics = """
        /bin/busybox mkdir -p /proc /sys /dev /tmp /run /var /bin /sbin /usr/bin /usr/sbin
        /bin/busybox --install -s /bin
        export PATH=/bin:/sbin:/usr/bin:/usr/sbin
        mount -t proc proc /proc
        mount -t sysfs sysfs /sys
        mount -t devtmpfs devtmpfs /dev 2>/dev/null
        mkdir -p /dev/pts /dev/shm
        mount -t devpts devpts /dev/pts
        mount -t tmpfs tmpfs /tmp
        mount -t tmpfs tmpfs /run
        """

    /// `/init` of the lab host (L1). The host index and mode come from the kernel command line
    /// (`vireo.host=N vireo.mode=run|shell|guest`), so all hosts share one image.
    public static func l1Init(hosts: Int, l2Cmdline: String) -> String {
        """
        #!/bin/busybox sh
        \(mountBasics)
        dmesg -n 1
        MODE=run
        VIREO_LAB_HOST_INDEX=0
        for word in $(cat /proc/cmdline); do
          case "$word" in
            vireo.mode=*) MODE="${word#vireo.mode=}" ;;
            vireo.host=*) VIREO_LAB_HOST_INDEX="${word#vireo.host=}" ;;
          esac
        done
        for m in $(cat /lab/modules.order); do
          insmod "/lab/modules/$m" || echo "VIREO-LAB: insmod $m failed"
        done
        . /lab/env
        export PATH="/vireo/bin:$PATH"
        export VIREO_LAB_HOST_INDEX VIREO_LAB_HOSTS=\(hosts)
        mkdir -p /results
        if [ -b /dev/vda ]; then
          mount -t ext4 /dev/vda /results || echo "VIREO-LAB: cannot mount the results disk"
        fi
        hostname "lab$VIREO_LAB_HOST_INDEX"
        ip link set lo up
        if [ -e /sys/class/net/eth0 ]; then
          ip link set eth0 up
          ip addr add 10.0.2.15/24 dev eth0
          ip route add default via 10.0.2.2
        fi
        if [ "$VIREO_LAB_HOSTS" -gt 1 ] && [ -e /sys/class/net/eth1 ]; then
          VIREO_LAB_IP="10.99.0.$((VIREO_LAB_HOST_INDEX + 1))"
          export VIREO_LAB_IP
          ip link set eth1 up
          ip addr add "$VIREO_LAB_IP/24" dev eth1
        fi
        if [ -e /dev/kvm ]; then KVM=yes; else KVM=no; fi
        echo "VIREO-LAB: host $VIREO_LAB_HOST_INDEX ready (kvm=$KVM, uptime $(cut -d' ' -f1 /proc/uptime)s)"
        case "$MODE" in
          run)
            cd /scenario
            sh /scenario/run.sh
            rc=$?
            if [ "$rc" -ne 0 ]; then echo "VIREO-LAB: FAIL run.sh exited with status $rc"; fi
            ;;
          shell)
            echo "Vireo lab host: /dev/kvm=$KVM. vireo-vmm is $VIREO_VMM; L2 kernel $L2_KERNEL, initramfs $L2_INITRD."
            echo "Try: \\"$VIREO_VMM\\" --kernel $L2_KERNEL --initrd $L2_INITRD --cmdline '\(l2Cmdline)' --memory 256M --serial stdio"
            echo "Peer baseline: $QEMU -L $QEMU_DATA -enable-kvm -cpu host -m 256M -nographic -no-reboot -kernel $L2_KERNEL -initrd $L2_INITRD -append console=ttyS0"
            echo "Leave with exit or poweroff (or Ctrl-a x)."
            setsid cttyhack sh -l
            ;;
          guest)
            # The VMM's serial is this console: raw mode, so keys (Ctrl-C too) reach the L2 guest unechoed.
            stty raw -echo 2>/dev/null
            "$VIREO_VMM" --kernel "$L2_KERNEL" --initrd "$L2_INITRD" --cmdline "\(l2Cmdline)" --memory 256M --serial stdio
            rc=$?
            stty sane 2>/dev/null
            echo "VIREO-LAB: vireo-vmm exited with status $rc"
            ;;
        esac
        sync
        umount /results 2>/dev/null
        poweroff -f
        """
    }

    public static let defaultL2Cmdline = "console=ttyS0 panic=-1 quiet"

    /// `/init` of the L2 guest: basics, virtio modules, then the scenario's guest script (`/guest-init.sh`).
    public static func l2Init() -> String {
        """
        #!/bin/busybox sh
        \(mountBasics)
        for m in $(cat /lab/modules.order); do
          [ -d "/sys/module/$(basename "$m" .ko | tr - _)" ] && continue
          insmod "/lab/modules/$m" 2>/dev/null || echo "VIREO-GUEST: insmod $m failed"
        done
        hostname l2
        # The ACPI power button (vireo-vmm `powerdown`, vireod's shutdown) powers the guest off, as
        # systemd-logind would on a distribution: busybox acpid runs /etc/acpi/PWRF/00000080 on KEY_POWER.
        mkdir -p /etc/acpi/PWRF
        printf '#!/bin/sh\\necho "VIREO-GUEST: power button pressed: powering off" >/dev/console\\nsync\\npoweroff -f\\n' >/etc/acpi/PWRF/00000080
        chmod +x /etc/acpi/PWRF/00000080
        acpid -c /etc/acpi -l /run/acpid.log
        # vireo.root=/dev/vda: switch from the initramfs to the ext4 root filesystem image (ROOTFS_IMG).
        ROOT=
        for word in $(cat /proc/cmdline); do
          case "$word" in vireo.root=*) ROOT="${word#vireo.root=}" ;; esac
        done
        if [ -n "$ROOT" ] && [ ! -e /.vireo-rootfs ]; then
          mkdir -p /newroot
          if mount -t ext4 "$ROOT" /newroot; then
            echo "VIREO-GUEST: switching to the root filesystem on $ROOT"
            umount /dev/pts /tmp /run /sys /proc 2>/dev/null
            umount /dev 2>/dev/null
            exec switch_root /newroot /sbin/init
          fi
          echo "VIREO-GUEST: cannot mount $ROOT"
        fi
        [ -e /.vireo-rootfs ] && echo "VIREO-GUEST: running from the root filesystem $ROOT"
        echo "VIREO-GUEST: init reached (uptime $(cut -d' ' -f1 /proc/uptime)s)"
        sh /guest-init.sh
        echo "VIREO-GUEST: guest-init.sh exited with status $?"
        poweroff -f
        """
    }

    /// Guest script used when a scenario has no `guest-init.sh`, and by `vireo lab up --guest`: a shell.
    public static let interactiveGuest = """
        echo "Vireo L2 guest: $(nproc) CPU(s), $(grep MemTotal /proc/meminfo). exit or poweroff ends the VMM."
        setsid cttyhack sh -l
        """
}

extension InitScripts {
    /// `/vireo/bin/vmm-run SECONDS COMMAND…` in L1: runs a VMM (any command) and waits for it at most SECONDS
    /// of L1 time, with its exit status as its own. On time-out it shows where each of the VMM's threads is
    /// (state, kernel wait channel and stack: a vCPU thread in `kvm_vcpu_block` waits for an interrupt, one in
    /// `futex_wait` for a lock), sends SIGTERM, and says so if that has not ended the VMM within 10 s (a stop
    /// that hangs) before SIGKILL; it then exits 124 like `timeout`. A hung guest is diagnosable from the
    /// lab console instead of ending as a bare scenario time-out.
    public static let vmmRun = """
        #!/bin/sh
        limit=$1; shift
        "$@" &
        pid=$!
        running() { [ -e /proc/$pid/stat ] && [ "$(cut -d' ' -f3 /proc/$pid/stat)" != Z ]; }
        threads() {
          for task in /proc/$pid/task/*; do
            [ -e "$task/stat" ] || continue
            echo "VIREO-LAB: vmm-run: thread $(cat $task/comm 2>/dev/null) state $(cut -d' ' -f3 $task/stat 2>/dev/null) wchan $(cat $task/wchan 2>/dev/null)"
            sed 's/^/VIREO-LAB: vmm-run:     /' "$task/stack" 2>/dev/null | head -12
          done
        }
        # Waits up to $1 seconds for the VMM to end; false if it is still running.
        ended_within() {
          deadline=$(( $(date +%s) + $1 ))
          while running; do
            [ "$(date +%s)" -ge "$deadline" ] && return 1
            sleep 0.2
          done
        }
        if ended_within "$limit"; then
          wait $pid
          exit $?
        fi
        echo "VIREO-LAB: vmm-run: $1 still running after ${limit}s of L1 time; its threads:"
        threads
        kill -TERM $pid
        if ! ended_within 10; then
          echo "VIREO-LAB: vmm-run: $1 did not end within 10 s of SIGTERM; its threads:"
          threads
          kill -KILL $pid
        fi
        wait $pid
        exit 124
        """

    /// /etc/profile for interactive shells: busybox poweroff/reboot without -f only signal PID 1 (a script here).
    public static let profile = """
        alias poweroff='poweroff -f'
        alias reboot='reboot -f'
        export PS1='\\h:\\w# '

        """
}
