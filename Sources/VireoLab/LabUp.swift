import Foundation

extension LabRunner {
    /// Boots one lab host with the serial console on this terminal (`-serial mon:stdio`, Ctrl-a x quits)
    /// and QEMU user networking forwarding 127.0.0.1:8006 to the host's port 8006.
    /// With `guest`, the host's init boots the L2 guest under vireo-vmm right away.
    public func up(guest: Bool, memory: String = "2048M", cpus: Int = 1, hostForward: String = "tcp:127.0.0.1:8006-:8006") throws -> Int32 {
        ChildProcess.installInterruptHandlers()
        let runToken = "vireo-lab-up-\(getpid())"
        let runDirectory = host.cacheDirectory + "/runs/" + runToken
        var request = ArtifactBuilder.Request(needs: guest ? [.vireoVMM, .l2Initramfs] : [.l2Initramfs, .qemu])
        if !guest { request.optional = [.vireoVMM] }
        let images = try builder.build(request, outputDirectory: runDirectory)
        defer { try? FileManager.default.removeItem(atPath: runDirectory) }
        let spec = ScenarioSpec(l1: .init(memory: memory, cpus: cpus))
        let arguments = qemuArguments(
            spec: spec, index: 0, images: images, disk: nil, linkPort: nil, runToken: runToken,
            mode: guest ? .guest : .shell, interactive: true, hostForward: hostForward)
        builder.log("booting the lab host (QEMU TCG, -cpu EPYC,+svm); Ctrl-a x quits QEMU")
        // Interactive: QEMU keeps the terminal and our process group, so the terminal's signals reach it.
        let child = try ChildProcess.spawn(host.qemu, arguments, captureOutput: false, newProcessGroup: false)
        defer { child.terminate() }
        switch child.wait() {
        case .exited(let code): return code
        case .signaled(let signal): return 128 + signal
        }
    }
}
