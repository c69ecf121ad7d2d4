import Foundation
import Testing
import VireoAPI

/// Against a real vireod process: auth, parameter checks, config digests, tasks.
@Suite(.serialized) struct APITests {
    @Test func authentication() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }

        // No ticket at all.
        #expect(try await daemon.request("GET", "/version").status == 401)
        // Wrong password.
        let bad = try await daemon.request("POST", "/access/ticket", ["username": "root@pam", "password": "nope"])
        #expect(bad.status == 401)
        #expect(bad.body["data"] is NSNull)

        try await daemon.login()
        let ticket = try #require(daemon.ticket)
        #expect(ticket.hasPrefix("PVE:root@pam:"))
        #expect(try #require(daemon.csrf).split(separator: ":").first?.count == 8)
        let version = try await daemon.request("GET", "/version")
        #expect(version.status == 200)
        #expect((version.data as? [String: Any])?["version"] as? String == "8.2.4")

        // A write without the CSRF token is refused; with it, it goes through.
        let noCSRF = try await daemon.request("POST", "/access/users/root@pam/token/ci", ["privsep": "1"], csrf: false)
        #expect(noCSRF.status == 401)
        // A tampered ticket is refused.
        daemon.ticket = ticket.replacingOccurrences(of: "root@pam", with: "admin@pam")
        #expect(try await daemon.request("GET", "/version").status == 401)
        daemon.ticket = ticket

        // Renewal: the ticket as password.
        let renewed = try await daemon.request("POST", "/access/ticket", ["username": "root@pam", "password": ticket])
        #expect(renewed.status == 200)

        let separated = try await daemon.request("POST", "/access/users/root@pam/token/ci", ["privsep": "1"])
        #expect(separated.status == 200)
        let secret = try #require((separated.data as? [String: Any])?["value"] as? String)
        let full = try await daemon.request("POST", "/access/users/root@pam/token/full", ["privsep": "0"])
        let fullSecret = try #require((full.data as? [String: Any])?["value"] as? String)

        // A privilege-separated token with no ACL may not create VMs.
        daemon.token = "root@pam!ci=\(secret)"
        let denied = try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "100", "memory": "64"])
        #expect(denied.status == 403)
        #expect((denied.body["message"] as? String)?.hasPrefix("Permission check failed") == true)
        #expect((try await daemon.request("GET", "/nodes/testnode/qemu").data as? [Any])?.isEmpty == true)
        daemon.token = "root@pam!ci=wrong"
        #expect(try await daemon.request("GET", "/version").status == 401)

        // A token without privilege separation acts as root, with no CSRF token needed.
        daemon.token = "root@pam!full=\(fullSecret)"
        let created = try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "100", "memory": "64"])
        #expect(created.status == 200)
        _ = try await daemon.waitTask(created.data)
    }

    @Test func parameterVerificationLeavesTheStoreUnchanged() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()

        let bad = try await daemon.request("POST", "/nodes/testnode/qemu",
                                           ["vmid": "101", "memory": "lots", "cores": "0", "net0": "bogus", "frobnicate": "1", "onboot": "True"])
        #expect(bad.status == 400)
        #expect(bad.body["message"] as? String == "Parameter verification failed.\n")
        #expect(Set(bad.errors.keys) == ["memory", "cores", "net0", "frobnicate", "onboot"])
        #expect((try await daemon.request("GET", "/nodes/testnode/qemu").data as? [Any])?.isEmpty == true)
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu/101/config").status == 500)
        #expect(try await daemon.request("POST", "/nodes/testnode/qemu", ["memory": "64"]).errors.keys.contains("vmid"))

        // Unknown paths and methods: 501. Oversized bodies: 413.
        #expect(try await daemon.request("GET", "/nodes/testnode/lxc/nothing/here").status == 501)
        #expect(try await daemon.request("PATCH", "/nodes/testnode/qemu").status == 501)
        let huge = try await daemon.request("POST", "/nodes/testnode/qemu", rawBody: Data(repeating: UInt8(ascii: "a"), count: 1_000_000))
        #expect(huge.status == 413)

        // nextid, then a create whose config exists before the task finishes; a duplicate is a 500.
        #expect(try await daemon.request("GET", "/cluster/nextid").data as? String == "100")
        let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                              ["vmid": "100", "name": "vm100", "memory": "2048", "cores": "2", "net0": "virtio,bridge=vmbr0",
                                               "scsi0": "local:8", "scsihw": "virtio-scsi-pci", "ostype": "l26", "onboot": "1"])
        #expect(create.status == 200)
        let upid = try #require(create.data as? String)
        let parsed = try #require(UPID(upid))
        #expect(parsed.type == "qmcreate" && parsed.id == "100" && parsed.user == "root@pam" && parsed.node == "testnode")
        #expect(upid.hasSuffix(":") && upid.split(separator: ":", omittingEmptySubsequences: false).count == 9)
        #expect(upid.split(separator: ":")[2].count == 8 && upid.split(separator: ":")[4].count == 8)
        let config = try #require(try await daemon.request("GET", "/nodes/testnode/qemu/100/config").data as? [String: Any])
        #expect(config["memory"] as? Int == 2048)
        let net0 = try #require(config["net0"] as? String)
        #expect(net0.hasPrefix("virtio=BC:24:11:") && net0.hasSuffix(",bridge=vmbr0"))
        let task = try await daemon.waitTask(upid)
        #expect(task["exitstatus"] as? String == "OK")
        #expect(try await daemon.taskLog(upid).last == "TASK OK")
        #expect(try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "100", "memory": "64"]).status == 500)
        #expect(try await daemon.request("GET", "/cluster/nextid").data as? String == "101")

        let resources = try #require(try await daemon.request("GET", "/cluster/resources", ["type": "vm"]).data as? [[String: Any]])
        #expect(resources.count == 1)
        #expect(resources.first?["id"] as? String == "qemu/100" && resources.first?["vmid"] as? Int == 100)
        #expect(resources.first?["maxmem"] as? Int == 2048 * 1_048_576 && resources.first?["status"] as? String == "stopped")
        let cluster = try #require(try await daemon.request("GET", "/cluster/status").data as? [[String: Any]])
        #expect(cluster.first?["type"] as? String == "node" && cluster.first?["local"] as? Int == 1)
        #expect((try await daemon.request("GET", "/nodes").data as? [[String: Any]])?.first?["node"] as? String == "testnode")
        #expect(try await daemon.request("GET", "/nodes/testnode/status").status == 200)
        let tasks = try #require(try await daemon.request("GET", "/nodes/testnode/tasks").data as? [[String: Any]])
        #expect(tasks.contains { $0["upid"] as? String == upid })
    }

    @Test func configDigestDetectsConcurrentChanges() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let create = try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "200", "memory": "128", "tags": "a;b"])
        _ = try await daemon.waitTask(create.data)
        let before = try #require(try await daemon.request("GET", "/nodes/testnode/qemu/200/config").data as? [String: Any])
        let digest = try #require(before["digest"] as? String)
        #expect(digest.count == 40)

        let first = try await daemon.request("PUT", "/nodes/testnode/qemu/200/config", ["memory": "256", "digest": digest])
        #expect(first.status == 200 && first.body["data"] is NSNull)
        let stale = try await daemon.request("PUT", "/nodes/testnode/qemu/200/config", ["memory": "512", "digest": digest])
        #expect(stale.status == 500)
        #expect((stale.body["message"] as? String)?.contains("detected modified configuration") == true)
        let after = try #require(try await daemon.request("GET", "/nodes/testnode/qemu/200/config").data as? [String: Any])
        #expect(after["memory"] as? Int == 256)
        #expect(after["digest"] as? String != digest)

        // A bad value changes nothing; delete removes keys; POST config runs as a task.
        #expect(try await daemon.request("PUT", "/nodes/testnode/qemu/200/config", ["memory": "1", "cores": "2"]).status == 400)
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu/200/config").data.flatMap { ($0 as? [String: Any])?["cores"] } == nil)
        let post = try await daemon.request("POST", "/nodes/testnode/qemu/200/config", ["delete": "tags", "cores": "2"])
        #expect(try await daemon.waitTask(post.data)["exitstatus"] as? String == "OK")
        let final = try #require(try await daemon.request("GET", "/nodes/testnode/qemu/200/config").data as? [String: Any])
        #expect(final["tags"] == nil && final["cores"] as? Int == 2)
    }

    /// The list and cluster/resources report each VM's summary with PVE's fields and JSON types, and
    /// follow config changes (the summaries are encoded once per config and cached).
    @Test func listSummariesFollowConfigChanges() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                              ["vmid": "300", "name": "first", "memory": "128", "cores": "2", "tags": "a;b",
                                               "ide2": "none,media=cdrom", "virtio1": "/tmp/vireo-no-disk-1.raw,size=2G",
                                               "virtio0": "/tmp/vireo-no-disk-0.raw,size=1G"])
        try #require(create.status == 200, "\(create.body)")
        _ = try await daemon.waitTask(create.data)
        let fields: Set<String> = ["vmid", "name", "status", "cpus", "maxcpu", "maxmem", "mem", "cpu", "maxdisk", "disk",
                                   "netin", "netout", "diskread", "diskwrite", "uptime", "template", "tags"]
        func list() async throws -> [String: Any] {
            let vms = try #require(try await daemon.request("GET", "/nodes/testnode/qemu").data as? [[String: Any]])
            let resources = try #require(try await daemon.request("GET", "/cluster/resources").data as? [[String: Any]])
            let vm = try #require(vms.first)
            let resource = try #require(resources.first { $0["type"] as? String == "qemu" })
            #expect(vms.count == 1 && resources.contains { $0["type"] as? String == "node" } && resources.contains { $0["type"] as? String == "storage" })
            #expect(resource["id"] as? String == "qemu/300" && resource["node"] as? String == "testnode")
            #expect(Set(resource.keys) == Set(vm.keys).union(["id", "type", "node"]))
            for key in Set(vm.keys).subtracting(["name", "status", "tags"]) { #expect(vm[key] is NSNumber && resource[key] is NSNumber, "\(key)") }
            return vm
        }
        let before = try await list()
        #expect(Set(before.keys) == fields)
        #expect(before["name"] as? String == "first" && before["status"] as? String == "stopped" && before["tags"] as? String == "a;b")
        #expect(before["vmid"] as? Int == 300 && before["cpus"] as? Int == 2 && before["maxcpu"] as? Int == 2)
        #expect(before["maxmem"] as? Int == 128 * 1_048_576 && before["maxdisk"] as? Int == 1 << 30 && before["uptime"] as? Int == 0)

        let change = try await daemon.request("PUT", "/nodes/testnode/qemu/300/config", ["name": "second", "memory": "256", "delete": "tags,virtio0"])
        #expect(change.status == 200)
        let after = try await list()
        #expect(Set(after.keys) == fields.subtracting(["tags"]))
        #expect(after["name"] as? String == "second" && after["maxmem"] as? Int == 256 * 1_048_576 && after["maxdisk"] as? Int == 2 << 30)
    }
}
