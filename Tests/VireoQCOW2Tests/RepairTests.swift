import Foundation
import Testing
@testable import VireoQCOW2

/// `vireo img check [-r leaks|all]` against `qemu-img check` on twin copies of deliberately damaged
/// images: same exit codes before and after the repair, a clean image afterwards, same guest data.
@Suite struct RepairTests {
    enum Damage: String, CaseIterable {
        /// A data cluster's refcount set to 0 (a later allocation could overwrite it): corruption.
        case refcountTooLow
        /// A data cluster's refcount set to 2: a leak, and its COPIED flag is now wrong (corruption).
        case refcountTooHigh
        /// The L1 table's cluster refcount raised to 3: a leak only.
        case leakOnly
        /// The first refcount table entry points past the end of the file: every refcount is lost.
        case refcountBlockBeyondEnd
    }

    /// Offsets in the file of header fields and refcount entries (qcow2 spec, header and refcounts).
    struct Layout {
        let bytes: [UInt8]
        var clusterBits: Int { Int(bytes.be32(20)) }
        var refcountTableOffset: Int { Int(bytes.be64(48)) }
        var l1TableOffset: Int { Int(bytes.be64(40)) }
        var refcountBits: Int { 1 << Int(bytes.be32(96)) }
        /// The byte offset of `cluster`'s 16-bit refcount (block 0 only).
        func refcountEntry(_ cluster: Int) -> Int {
            let block = Int(bytes.be64(refcountTableOffset))
            return block + cluster * 2
        }
    }

    static func firstDataOffset(_ image: String) throws -> Int {
        let map = try qemuImg("map", "--output", "json", image)
        let entries = try JSONSerialization.jsonObject(with: Data(map.output.utf8)) as? [[String: Any]] ?? []
        let data = entries.first { ($0["data"] as? Bool) == true && $0["offset"] != nil }
        return (data?["offset"] as? NSNumber)?.intValue ?? 0
    }

    @Test(arguments: Damage.allCases, [RepairMode.leaks, .all])
    func repairMatchesQemu(damage: Damage, mode: RepairMode) throws {
        let dir = Scratch()
        let original = dir.file("orig.qcow2")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", original, "8M").status == 0)
        try qemuIO(original, "write -P 0x61 0 64k", "write -P 0x62 1M 12k", "write -P 0x63 7M 4k")
        var bytes = readFile(original)
        let layout = Layout(bytes: bytes)
        #expect(layout.refcountBits == 16 && layout.clusterBits == 12)
        let cs = 1 << layout.clusterBits
        switch damage {
        case .refcountTooLow:
            let cluster = try Self.firstDataOffset(original) / cs
            #expect(cluster > 0)
            bytes.setBE16(0, at: layout.refcountEntry(cluster))
        case .refcountTooHigh:
            bytes.setBE16(2, at: layout.refcountEntry(try Self.firstDataOffset(original) / cs))
        case .leakOnly:
            bytes.setBE16(3, at: layout.refcountEntry(layout.l1TableOffset / cs))
        case .refcountBlockBeyondEnd:
            bytes.setBE64(UInt64(bytes.count + 100 * cs) / UInt64(cs) * UInt64(cs), at: layout.refcountTableOffset)
        }
        let q = dir.file("q.qcow2")
        let v = dir.file("v.qcow2")
        writeFile(q, bytes)
        writeFile(v, bytes)

        let qemuBefore = try qemuImg("check", q)
        let vireoBefore = try vireoImg(["check", v])
        #expect(vireoBefore.status == qemuBefore.status, "before: qemu \(qemuBefore.output)\nvireo \(vireoBefore.output)")
        #expect(qemuBefore.status == (damage == .leakOnly ? 3 : 2))

        let qemuRepair = try qemuImg("check", "-r", mode.rawValue, q)
        let vireoRepair = try vireoImg(["check", "-r", mode.rawValue, v])
        #expect(vireoRepair.status == qemuRepair.status, "repair: qemu \(qemuRepair.output)\nvireo \(vireoRepair.output)")
        if mode == .all || damage == .leakOnly {
            #expect(vireoRepair.status == 0, "\(vireoRepair.output)")
        }
        if vireoRepair.status == 0 {
            try expectQemuCheckClean(v)
            let compare = try qemuImg("compare", "-f", "qcow2", "-F", "qcow2", q, v)
            #expect(compare.status == 0, "\(compare.output)")
            let reference = dir.file("ref.qcow2")
            writeFile(reference, readFile(original))
            #expect(try qemuImg("compare", reference, v).status == 0)
            // The repaired image takes new allocations without touching old data.
            try qemuIO(v, "write -P 0x71 2M 256k")
            try expectQemuCheckClean(v)
            #expect(try qemuImg("compare", reference, v).status == 1)
        }
    }
}
