import Foundation
import Testing

/// The directory pool `local` through a real vireod: content listing, allocation through VireoQCOW2
/// (checked with qemu-img), disks allocated from `local:SIZE`, CD-ROM ISOs, and destruction.
@Suite(.serialized) struct StorageTests {
    static let qemuImg = "/usr/bin/qemu-img"

    /// `qemu-img info` of a file: format and virtual size.
    func imageInfo(_ path: String) throws -> (format: String, size: Int)? {
        guard FileManager.default.isExecutableFile(atPath: Self.qemuImg) else { return nil }
        let (status, output) = try runProgram(Self.qemuImg, ["info", "--output=json", path])
        guard status == 0, let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] else {
            throw HarnessError("qemu-img info \(path): \(output)")
        }
        return (json["format"] as? String ?? "", json["virtual-size"] as? Int ?? 0)
    }

    @Test func poolsContentAndDiskAllocation() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let pool = daemon.dataDirectory + "/storage/local"

        let storages = try #require(try await daemon.request("GET", "/nodes/testnode/storage").data as? [[String: Any]])
        let local = try #require(storages.first { $0["storage"] as? String == "local" })
        #expect(local["type"] as? String == "dir" && local["active"] as? Int == 1 && local["enabled"] as? Int == 1)
        #expect((local["total"] as? Int ?? 0) > 0 && (local["avail"] as? Int ?? 0) > 0 && local["used"] is Int)
        #expect((local["content"] as? String ?? "").split(separator: ",").contains("iso"))
        let resources = try #require(try await daemon.request("GET", "/cluster/resources", ["type": "storage"]).data as? [[String: Any]])
        #expect(resources.first?["id"] as? String == "storage/testnode/local" && resources.first?["status"] as? String == "available")

        // Allocation: PVE's POST …/content (size without a unit is KiB).
        let made = try await daemon.request("POST", "/nodes/testnode/storage/local/content",
                                            ["vmid": "100", "filename": "vm-100-disk-9.qcow2", "size": "1G"])
        #expect(made.status == 200 && made.data as? String == "local:100/vm-100-disk-9.qcow2", "\(made.body)")
        if let info = try imageInfo(pool + "/images/100/vm-100-disk-9.qcow2") { #expect(info == ("qcow2", 1 << 30)) }
        #expect(try await daemon.request("POST", "/nodes/testnode/storage/local/content",
                                         ["vmid": "100", "filename": "../escape.qcow2", "size": "1G"]).status == 400)
        #expect(try await daemon.request("POST", "/nodes/testnode/storage/local/content",
                                         ["vmid": "100", "filename": "vm-100-disk-3.qcow2", "size": "lots"]).errors.keys.contains("size"))
        #expect(try await daemon.request("GET", "/nodes/testnode/storage/nosuch/content").status == 500)

        // An ISO in the pool, then a VM with a new 2 GiB disk and that ISO as CD-ROM.
        _ = FileManager.default.createFile(atPath: pool + "/template/iso/test.iso", contents: Data(count: 2048 * 16))
        let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                              ["vmid": "100", "memory": "64", "virtio0": "local:2,cache=none", "ide2": "local:iso/test.iso,media=cdrom"])
        #expect(create.status == 200, "\(create.body)")
        #expect(try await daemon.waitTask(create.data)["exitstatus"] as? String == "OK")
        var config = try #require(try await daemon.request("GET", "/nodes/testnode/qemu/100/config").data as? [String: Any])
        #expect(config["virtio0"] as? String == "local:100/vm-100-disk-0.qcow2,cache=none,size=2G")
        if let info = try imageInfo(pool + "/images/100/vm-100-disk-0.qcow2") { #expect(info == ("qcow2", 2 << 30)) }

        let content = try #require(try await daemon.request("GET", "/nodes/testnode/storage/local/content").data as? [[String: Any]])
        let disk = try #require(content.first { $0["volid"] as? String == "local:100/vm-100-disk-0.qcow2" })
        #expect(disk["format"] as? String == "qcow2" && disk["size"] as? Int == 2 << 30 && disk["vmid"] as? Int == 100 && disk["content"] as? String == "images")
        #expect(content.contains { $0["volid"] as? String == "local:iso/test.iso" && $0["content"] as? String == "iso" })
        let isos = try #require(try await daemon.request("GET", "/nodes/testnode/storage/local/content", ["content": "iso"]).data as? [[String: Any]])
        #expect(isos.map { $0["volid"] as? String } == ["local:iso/test.iso"])

        // Bad disks: unknown storage, missing ISO, a cdrom that is not an ISO → 400, nothing created or allocated.
        let bad = try await daemon.request("POST", "/nodes/testnode/qemu",
                                           ["vmid": "101", "memory": "64", "scsi0": "nosuch:1", "ide2": "local:iso/missing.iso,media=cdrom", "virtio0": "local:1"])
        #expect(bad.status == 400 && Set(bad.errors.keys) == ["scsi0", "ide2"], "\(bad.body)")
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu/101/config").status == 500)
        #expect(!FileManager.default.fileExists(atPath: pool + "/images/101"))

        // A disk added by a config update: the next free index.
        let added = try await daemon.request("PUT", "/nodes/testnode/qemu/100/config", ["scsi1": "local:0.5"])
        #expect(added.status == 200, "\(added.body)")
        config = try #require(try await daemon.request("GET", "/nodes/testnode/qemu/100/config").data as? [String: Any])
        #expect(config["scsi1"] as? String == "local:100/vm-100-disk-1.qcow2,size=512M")

        // Referenced images cannot be deleted; unreferenced ones can (an imgdel task).
        #expect(try await daemon.request("DELETE", "/nodes/testnode/storage/local/content/local:100%2Fvm-100-disk-0.qcow2").status == 500)
        let removed = try await daemon.request("DELETE", "/nodes/testnode/storage/local/content/local:100/vm-100-disk-9.qcow2")
        #expect(try await daemon.waitTask(removed.data)["exitstatus"] as? String == "OK")
        #expect(!FileManager.default.fileExists(atPath: pool + "/images/100/vm-100-disk-9.qcow2"))

        // The CD-ROM and the allocated disk reach QEMU's command line.
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64") {
            let start = try await daemon.request("POST", "/nodes/testnode/qemu/100/status/start")
            let started = try await daemon.waitTask(start.data)
            let log = try await daemon.taskLog(start.data)
            #expect(started["exitstatus"] as? String == "OK", "\(log)")
            let exec = try #require(log.first { $0.hasPrefix("exec:") })
            #expect(exec.contains("file=\(pool)/template/iso/test.iso,if=ide,index=2,media=cdrom,readonly=on"))
            #expect(exec.contains("file=\(pool)/images/100/vm-100-disk-0.qcow2,format=qcow2,id=drive-virtio0,if=virtio"))
            #expect(exec.contains("scsi-hd,bus=scsihw0.0,scsi-id=1,drive=drive-scsi1"))
            _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu/100/status/stop").data)
        }

        // Destroy removes the VM's own volumes, not the ISO.
        let destroy = try await daemon.request("DELETE", "/nodes/testnode/qemu/100")
        #expect(try await daemon.waitTask(destroy.data)["exitstatus"] as? String == "OK")
        #expect(try await daemon.taskLog(destroy.data).contains("removed volume 'local:100/vm-100-disk-0.qcow2'"))
        #expect(!FileManager.default.fileExists(atPath: pool + "/images/100/vm-100-disk-0.qcow2"))
        #expect(!FileManager.default.fileExists(atPath: pool + "/images/100/vm-100-disk-1.qcow2"))
        #expect(FileManager.default.fileExists(atPath: pool + "/template/iso/test.iso"))
    }

    @Test func destroyUnreferencedDisksAndKernelVolumes() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let pool = daemon.dataDirectory + "/storage/local"
        _ = FileManager.default.createFile(atPath: pool + "/kernel/vmlinuz-test", contents: Data([0x4d, 0x5a]))

        #expect(try await daemon.request("POST", "/nodes/testnode/qemu",
                                         ["vmid": "102", "memory": "64", "engine": "vireo", "kernel": "local:kernel/missing"]).errors.keys.contains("kernel"))
        let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                              ["vmid": "102", "memory": "64", "engine": "vireo", "kernel": "local:kernel/vmlinuz-test", "scsi0": "local:1"])
        #expect(try await daemon.waitTask(create.data)["exitstatus"] as? String == "OK")
        let spare = try await daemon.request("POST", "/nodes/testnode/storage/local/content",
                                             ["vmid": "102", "filename": "vm-102-disk-7", "size": "1024"])
        #expect(spare.data as? String == "local:102/vm-102-disk-7.qcow2")

        // Without destroy-unreferenced-disks the spare disk stays; with it, it goes.
        let keep = try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "103", "memory": "64"])
        _ = try await daemon.waitTask(keep.data)
        let spare103 = try await daemon.request("POST", "/nodes/testnode/storage/local/content",
                                                ["vmid": "103", "filename": "vm-103-disk-0.qcow2", "size": "1M"])
        #expect(spare103.status == 200)
        _ = try await daemon.waitTask(try await daemon.request("DELETE", "/nodes/testnode/qemu/103").data)
        #expect(FileManager.default.fileExists(atPath: pool + "/images/103/vm-103-disk-0.qcow2"))

        let destroy = try await daemon.request("DELETE", "/nodes/testnode/qemu/102", ["destroy-unreferenced-disks": "1", "purge": "1"])
        #expect(try await daemon.waitTask(destroy.data)["exitstatus"] as? String == "OK")
        #expect(!FileManager.default.fileExists(atPath: pool + "/images/102"))
        #expect(FileManager.default.fileExists(atPath: pool + "/kernel/vmlinuz-test"))
    }
}

/// `POST …/storage/local/upload` (multipart, streamed) from curl, as PVE's docs show it.
@Suite(.serialized) struct StorageUploadTests {
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")))
    func uploadsIsosAndKernelsWithChecksums() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let token = try await daemon.request("POST", "/access/users/root@pam/token/upload", ["privsep": "0"])
        let secret = try #require((token.data as? [String: Any])?["value"] as? String)
        let pool = daemon.dataDirectory + "/storage/local"
        let url = daemon.base + "/nodes/testnode/storage/local/upload"

        // 768 KiB of patterned bytes: several body chunks, with the boundary possibly split across them.
        let iso = daemon.dataDirectory + "/boot.iso"
        let payload = Data((0..<(768 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 11) })
        _ = FileManager.default.createFile(atPath: iso, contents: payload)
        let sha256 = try runProgram("/usr/bin/sha256sum", [iso]).output.split(separator: " ").first.map(String.init) ?? ""
        func curl(_ fields: [String]) throws -> (status: Int32, output: String) {
            try runProgram("/usr/bin/curl", ["-sS", "-H", "Authorization: PVEAPIToken=root@pam!upload=\(secret)"]
                           + fields.flatMap { ["-F", $0] } + [url])
        }
        let uploaded = try curl(["content=iso", "checksum=\(sha256)", "checksum-algorithm=sha256", "filename=@\(iso)"])
        let reply = try JSONSerialization.jsonObject(with: Data(uploaded.output.utf8)) as? [String: Any]
        let upid = try #require(reply?["data"] as? String, "\(uploaded.output)")
        #expect(try await daemon.waitTask(upid)["exitstatus"] as? String == "OK")
        #expect(FileManager.default.contents(atPath: pool + "/template/iso/boot.iso") == payload)
        let isos = try #require(try await daemon.request("GET", "/nodes/testnode/storage/local/content", ["content": "iso"]).data as? [[String: Any]])
        #expect(isos.map { $0["volid"] as? String } == ["local:iso/boot.iso"] && isos.first?["size"] as? Int == 768 << 10)

        // Refusals leave nothing behind: bad checksum, wrong extension, unknown content, existing file.
        #expect(try curl(["content=iso", "checksum=00", "checksum-algorithm=sha256", "filename=@\(iso);filename=other.iso"]).output.contains("checksum mismatch"))
        #expect(try curl(["content=vztmpl", "filename=@\(iso)"]).output.contains("wrong file extension"))
        #expect(try curl(["content=images", "filename=@\(iso);filename=x.iso"]).output.contains("enumeration"))
        #expect(try curl(["content=iso", "filename=@\(iso)"]).output.contains("already exists"))
        #expect(!FileManager.default.fileExists(atPath: pool + "/template/iso/other.iso"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: pool).allSatisfy { !$0.hasPrefix(".upload-") })

        // Vireo's kernel content: then a VM boots from the volume id.
        let kernel = try curl(["content=kernel", "filename=@\(iso);filename=vmlinuz-test"])
        let kernelTask = try JSONSerialization.jsonObject(with: Data(kernel.output.utf8)) as? [String: Any]
        #expect(try await daemon.waitTask(kernelTask?["data"])["exitstatus"] as? String == "OK")
        let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                              ["vmid": "100", "memory": "64", "engine": "vireo", "kernel": "local:kernel/vmlinuz-test"])
        #expect(create.status == 200, "\(create.body)")
    }
}
