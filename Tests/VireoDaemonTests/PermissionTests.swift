import Foundation
import Testing

/// Users, roles, ACLs and API tokens through a real vireod: every endpoint checks the privilege
/// Proxmox requires on the matching path.
@Suite(.serialized) struct PermissionTests {
    @Test func auditorTokenReadsButCannotStart() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()

        #expect(try await daemon.request("POST", "/access/users", ["userid": "alice@pve", "password": "alice-secret", "email": "a@example.org"]).status == 200)
        #expect(try await daemon.request("POST", "/access/users", ["userid": "alice@pve"]).status == 500)  // duplicate
        #expect(try await daemon.request("POST", "/access/users", ["userid": "bob@nowhere"]).errors.keys.contains("userid"))
        let token = try await daemon.request("POST", "/access/users/alice@pve/token/ro", ["privsep": "1"])
        let secret = try #require((token.data as? [String: Any])?["value"] as? String)
        for vmid in ["100", "101"] {
            _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": vmid, "memory": "64"]).data)
        }

        let roles = try #require(try await daemon.request("GET", "/access/roles").data as? [[String: Any]])
        let vmUser = try #require(roles.first { $0["roleid"] as? String == "PVEVMUser" })
        #expect((vmUser["privs"] as? String ?? "").split(separator: ",").contains("VM.PowerMgmt"))
        #expect(Set(roles.compactMap { $0["roleid"] as? String }).isSuperset(of: ["Administrator", "PVEAdmin", "PVEVMAdmin", "PVEAuditor", "NoAccess", "PVEDatastoreUser"]))

        // PVEAuditor on /vms/100 for the user and the token; PVEVMUser for the user only.
        #expect(try await daemon.request("PUT", "/access/acl", ["path": "/vms/100", "roles": "PVEAuditor", "users": "alice@pve", "tokens": "alice@pve!ro"]).status == 200)
        #expect(try await daemon.request("PUT", "/access/acl", ["path": "/vms/100", "roles": "PVEVMUser", "users": "alice@pve"]).status == 200)
        #expect(try await daemon.request("PUT", "/access/acl", ["path": "/vms/100", "roles": "NoSuchRole", "users": "alice@pve"]).errors.keys.contains("roles"))
        #expect(try await daemon.request("PUT", "/access/acl", ["path": "../x", "roles": "PVEAuditor", "users": "alice@pve"]).errors.keys.contains("path"))
        let acl = try #require(try await daemon.request("GET", "/access/acl").data as? [[String: Any]])
        #expect(acl.contains { $0["ugid"] as? String == "alice@pve!ro" && $0["type"] as? String == "token" && $0["roleid"] as? String == "PVEAuditor" })

        // The token: reads VM 100 only; cannot start it (its own roles lack VM.PowerMgmt).
        daemon.token = "alice@pve!ro=\(secret)"
        let visible = try #require(try await daemon.request("GET", "/nodes/testnode/qemu").data as? [[String: Any]])
        #expect(visible.map { $0["vmid"] as? Int } == [100])
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu/100/config").status == 200)
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu/100/status/current").status == 200)
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu/101/config").status == 403)
        let start = try await daemon.request("POST", "/nodes/testnode/qemu/100/status/start")
        #expect(start.status == 403)
        #expect(start.body["message"] as? String == "Permission check failed (/vms/100, VM.PowerMgmt)\n")
        #expect(try await daemon.request("PUT", "/nodes/testnode/qemu/100/config", ["memory": "128"]).status == 403)
        #expect(try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "102", "memory": "64"]).status == 403)
        #expect((try await daemon.request("GET", "/nodes/testnode/storage").data as? [Any])?.isEmpty == true)
        #expect(try await daemon.request("GET", "/nodes/testnode/storage/local/content").status == 403)
        // Sys.Audit (PVEAuditor) on /vms/100 shows the entries there, and only those.
        let seen = try #require(try await daemon.request("GET", "/access/acl").data as? [[String: Any]])
        #expect(!seen.isEmpty && seen.allSatisfy { $0["path"] as? String == "/vms/100" })

        // The user (ticket): PVEVMUser lets it ask for power operations on 100 (this one fails in the
        // task: the VM is stopped), but not change memory (VM.Config.Memory) or grant itself more.
        daemon.token = nil
        let owner = (daemon.ticket, daemon.csrf)
        let login = try await daemon.request("POST", "/access/ticket", ["username": "alice@pve", "password": "alice-secret"])
        let ticket = try #require(login.data as? [String: Any])
        daemon.ticket = ticket["ticket"] as? String
        daemon.csrf = ticket["CSRFPreventionToken"] as? String
        #expect(try await daemon.request("POST", "/nodes/testnode/qemu/100/status/suspend").status == 200)
        #expect(try await daemon.request("POST", "/nodes/testnode/qemu/100/status/suspend", csrf: false).status == 401)
        let memory = try await daemon.request("PUT", "/nodes/testnode/qemu/100/config", ["memory": "128"])
        #expect(memory.status == 403 && (memory.body["message"] as? String ?? "").contains("VM.Config.Memory"))
        let grant = try await daemon.request("PUT", "/access/acl", ["path": "/", "roles": "Administrator", "users": "alice@pve"])
        #expect(grant.status == 403 && (grant.body["message"] as? String ?? "").contains("Permissions.Modify"))
        let users = try #require(try await daemon.request("GET", "/access/users").data as? [[String: Any]])
        #expect(users.map { $0["userid"] as? String } == ["alice@pve"])  // only itself

        // No credentials at all: 401.
        daemon.ticket = nil
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu").status == 401)

        // root: purge removes the VM's ACL entries; deleting the user removes its token and entries.
        (daemon.ticket, daemon.csrf) = owner
        #expect(try await daemon.request("PUT", "/access/acl", ["path": "/vms/101", "roles": "PVEAuditor", "users": "alice@pve"]).status == 200)
        _ = try await daemon.waitTask(try await daemon.request("DELETE", "/nodes/testnode/qemu/101", ["purge": "1"]).data)
        #expect(!((try await daemon.request("GET", "/access/acl").data as? [[String: Any]]) ?? []).contains { $0["path"] as? String == "/vms/101" })
        #expect(try await daemon.request("DELETE", "/access/users/alice@pve").status == 200)
        #expect(((try await daemon.request("GET", "/access/acl").data as? [[String: Any]]) ?? []).isEmpty)
        daemon.token = "alice@pve!ro=\(secret)"
        #expect(try await daemon.request("GET", "/version").status == 401)
    }

    @Test func disabledUsersAndTokenManagement() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        #expect(try await daemon.request("POST", "/access/users", ["userid": "carol@pve", "password": "carol-secret", "comment": "ops"]).status == 200)
        let info = try #require(try await daemon.request("GET", "/access/users/carol@pve").data as? [String: Any])
        #expect(info["comment"] as? String == "ops" && info["enable"] as? Int == 1)
        let made = try await daemon.request("POST", "/access/users/carol@pve/token/ci", ["privsep": "0", "comment": "pipeline"])
        let secret = try #require((made.data as? [String: Any])?["value"] as? String)
        let tokens = try #require(try await daemon.request("GET", "/access/users/carol@pve/token").data as? [[String: Any]])
        #expect(tokens.first?["tokenid"] as? String == "ci" && tokens.first?["privsep"] as? Int == 0)

        // carol has no ACL entries: her unseparated token sees nothing and may create nothing.
        daemon.token = "carol@pve!ci=\(secret)"
        #expect(try await daemon.request("GET", "/version").status == 200)
        #expect((try await daemon.request("GET", "/cluster/resources").data as? [Any])?.isEmpty == true)
        #expect(try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "100", "memory": "64"]).status == 403)

        // PVEVMAdmin on / (propagated) + PVEDatastoreUser on /storage: creation with a disk works.
        daemon.token = nil
        #expect(try await daemon.request("PUT", "/access/acl", ["path": "/vms", "roles": "PVEVMAdmin", "users": "carol@pve"]).status == 200)
        #expect(try await daemon.request("PUT", "/access/acl", ["path": "/storage", "roles": "PVEDatastoreUser", "users": "carol@pve"]).status == 200)
        daemon.token = "carol@pve!ci=\(secret)"
        let create = try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "100", "memory": "64", "scsi0": "local:1"])
        #expect(create.status == 200, "\(create.body)")
        #expect(try await daemon.waitTask(create.data)["exitstatus"] as? String == "OK")

        // Disabling the user locks out its token and its password.
        daemon.token = nil
        #expect(try await daemon.request("PUT", "/access/users/carol@pve", ["enable": "0"]).status == 200)
        daemon.token = "carol@pve!ci=\(secret)"
        #expect(try await daemon.request("GET", "/version").status == 401)
        daemon.token = nil
        #expect(try await daemon.request("POST", "/access/ticket", ["username": "carol@pve", "password": "carol-secret"]).status == 401)
        #expect(try await daemon.request("DELETE", "/access/users/carol@pve/token/ci").status == 200)
        #expect((try await daemon.request("GET", "/access/users/carol@pve/token").data as? [Any])?.isEmpty == true)
        #expect(try await daemon.request("DELETE", "/access/users/root@pam").status == 500)
    }
}
