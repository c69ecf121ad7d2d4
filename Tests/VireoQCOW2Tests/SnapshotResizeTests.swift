import Foundation
import Testing
@testable import VireoQCOW2

/// The virtual size `qemu-img info` reports.
func qemuVirtualSize(_ image: String) throws -> UInt64? {
    let info = try qemuImg("info", "--output", "json", "-U", image)
    let object = try JSONSerialization.jsonObject(with: Data(info.output.utf8)) as? [String: Any]
    return (object?["virtual-size"] as? NSNumber)?.uint64Value
}

@Suite struct SnapshotResizeTests {
    /// Apply after the disk was resized restores the snapshot's size, as qemu does: Vireo and qemu-img
    /// run the same steps on twin images, which end up with the same size and contents.
    @Test(arguments: [true, false])
    func applyRestoresSnapshotSize(grow: Bool) throws {
        let dir = Scratch()
        let twins = [dir.file("vireo.qcow2"), dir.file("qemu.qcow2")]
        let before: UInt64 = grow ? 1 << 20 : 3 << 20
        let after: UInt64 = grow ? 5 << 20 : 1 << 20
        for image in twins {
            #expect(try qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", image, String(before)).status == 0)
            try qemuIO(image, "write -P 0x21 0 512k", "write -P 0x22 \(before - 4096) 4096")
        }
        let vireo = try QCOW2Image.open(twins[0], options: ImageOptions(writable: true))
        try vireo.createSnapshot(name: "s1")
        if grow {
            try vireo.resize(to: after)
            try vireo.write([UInt8](repeating: 0x33, count: 8192), at: after - 8192)
        } else {
            try vireo.discard(at: after, length: before - after)
            try vireo.resize(to: after)
        }
        try vireo.write([UInt8](repeating: 0x44, count: 4096), at: 0)
        try vireo.applySnapshot("s1")
        #expect(vireo.size == before)
        #expect(try vireo.check().isClean)
        try vireo.close()

        let qemu = twins[1]
        #expect(try qemuImg("snapshot", "-c", "s1", qemu).status == 0)
        #expect(try qemuImg("resize", "--shrink", "-f", "qcow2", qemu, String(after)).status == 0)
        try qemuIO(qemu, grow ? "write -P 0x33 \(after - 8192) 8192" : "write -P 0x44 0 4096", "write -P 0x44 0 4096")
        #expect(try qemuImg("snapshot", "-a", "s1", qemu).status == 0)

        try expectQemuCheckClean(twins[0])
        #expect(try qemuVirtualSize(twins[0]) == before)
        #expect(try qemuVirtualSize(qemu) == before)
        let compare = try qemuImg("compare", twins[0], qemu)
        #expect(compare.status == 0, "\(compare.output)")
        // And the image still takes writes over the whole restored size.
        try qemuIO(twins[0], "write -P 0x55 \(before - 512) 512")
        try expectQemuCheckClean(twins[0])
    }

    /// A snapshot entry's VM-state size survives other snapshots being created, applied and deleted, and
    /// qemu-img lists it.
    @Test func vmStateSizeIsPreserved() throws {
        let dir = Scratch()
        let image = dir.file("vm.qcow2")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", image, "4M").status == 0)
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        try disk.write(pattern(70_000, seed: 9), at: 0)
        try disk.createSnapshot(name: "with-vm", vmStateSize: 3 << 20, vmClockNanoseconds: 1_500_000_000)
        try disk.createSnapshot(name: "disk-only")
        try disk.applySnapshot("disk-only")
        try disk.deleteSnapshot("disk-only")
        try disk.createSnapshot(name: "later")
        try disk.applySnapshot("with-vm")
        let listed = try disk.snapshots()
        try disk.close()
        #expect(listed.map(\.name) == ["with-vm", "later"])
        #expect(listed.first?.vmStateSize == 3 << 20)
        #expect(listed.first?.vmClockNanoseconds == 1_500_000_000)
        try expectQemuCheckClean(image)

        let qemuList = try qemuImg("snapshot", "-l", image)
        #expect(qemuList.status == 0)
        let row = qemuList.output.split(separator: "\n").first { $0.contains("with-vm") }.map(String.init) ?? ""
        #expect(row.contains("3 MiB"), "qemu-img snapshot -l: \(qemuList.output)")
        #expect(row.contains("00:00:01.500"), "qemu-img snapshot -l: \(qemuList.output)")
        // qemu-img rewrites the table when it deletes a snapshot; the VM-state size must survive that too.
        #expect(try qemuImg("snapshot", "-d", "later", image).status == 0)
        let reopened = try QCOW2Image.open(image)
        #expect(try reopened.snapshots().first?.vmStateSize == 3 << 20)
        try reopened.close()
    }
}
