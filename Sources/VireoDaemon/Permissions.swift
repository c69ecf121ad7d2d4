/// Proxmox VE's privilege model (pve-access-control: `PVE::AccessControl`): built-in roles grant
/// privileges, ACL entries grant roles to users and API tokens on paths (`/`, `/vms/100`,
/// `/storage/local`, `/nodes/NODE`, `/access/…`), inherited by sub-paths when `propagate` is set.
enum Privileges {
    static let all: [String] = [
        "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
        "Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use", "Permissions.Modify", "Pool.Allocate", "Pool.Audit",
        "Realm.Allocate", "Realm.AllocateUser", "SDN.Allocate", "SDN.Audit", "SDN.Use", "Sys.AccessNetwork", "Sys.Audit",
        "Sys.Console", "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog", "User.Modify",
        "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit",
        "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options", "VM.Console",
        "VM.Migrate", "VM.Monitor", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback",
    ]

    static let allSet = Set(all)
    static let vmAll = all.filter { $0.hasPrefix("VM.") }

    /// The built-in roles (PVE 8), by id.
    static let roles: [String: Set<String>] = [
        "Administrator": allSet,
        "NoAccess": [],
        "PVEAdmin": Set(all).subtracting(["Permissions.Modify", "Realm.Allocate", "Sys.Modify", "Sys.PowerMgmt"]),
        "PVEAuditor": ["Datastore.Audit", "Mapping.Audit", "Pool.Audit", "SDN.Audit", "Sys.Audit", "VM.Audit"],
        "PVEDatastoreAdmin": ["Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit"],
        "PVEDatastoreUser": ["Datastore.AllocateSpace", "Datastore.Audit"],
        "PVEMappingAdmin": ["Mapping.Audit", "Mapping.Modify", "Mapping.Use"],
        "PVEMappingUser": ["Mapping.Audit", "Mapping.Use"],
        "PVEPoolAdmin": ["Pool.Allocate", "Pool.Audit"],
        "PVEPoolUser": ["Pool.Audit"],
        "PVESDNAdmin": ["SDN.Allocate", "SDN.Audit", "SDN.Use"],
        "PVESDNUser": ["SDN.Audit", "SDN.Use"],
        "PVESysAdmin": ["Permissions.Modify", "Sys.Audit", "Sys.Console", "Sys.Syslog"],
        "PVETemplateUser": ["VM.Audit", "VM.Clone"],
        "PVEUserAdmin": ["Group.Allocate", "Realm.AllocateUser", "User.Modify"],
        "PVEVMAdmin": Set(vmAll).union(["Mapping.Use", "SDN.Use"]),
        "PVEVMUser": ["VM.Audit", "VM.Backup", "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.PowerMgmt"],
    ]

    /// Valid ACL paths: `/`, or slash-separated segments of letters, digits and `-_.@!`.
    static func validPath(_ path: String) -> Bool {
        guard path.hasPrefix("/"), path.count <= 256 else { return false }
        if path == "/" { return true }
        let segments = path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        return segments.allSatisfy { !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || "-_.@!:".contains($0) } }
    }

    /// `/a/b/c` → `/`, `/a`, `/a/b`, `/a/b/c`.
    static func prefixes(of path: String) -> [String] {
        var result = ["/"]
        var current = ""
        for segment in path.split(separator: "/") {
            current += "/" + segment
            result.append(current)
        }
        return result
    }

    /// The roles `entries` (one user's or one token's) grant on `path`: the most specific level with
    /// entries wins, an ancestor's entries count only with `propagate` (PVE's `roles()` walk).
    static func roles(_ entries: [ACLEntry], on path: String) -> Set<String> {
        var roles: Set<String> = []
        let levels = prefixes(of: path)
        for (index, level) in levels.enumerated() {
            let here = entries.filter { $0.path == level && ($0.propagate || index == levels.count - 1) }
            if !here.isEmpty { roles = Set(here.map(\.roleid)) }
        }
        return roles
    }

    static func privileges(ofRoles roles: Set<String>) -> Set<String> {
        if roles.contains("NoAccess") { return [] }
        return roles.reduce(into: Set<String>()) { $0.formUnion(Self.roles[$1] ?? []) }
    }
}

/// One ACL entry: `roleid` for `ugid` (`user@realm` or `user@realm!token`) on `path`.
public struct ACLEntry: Sendable, Equatable, Hashable {
    public enum Kind: String, Sendable { case user, token }
    public var path: String
    public var kind: Kind
    public var ugid: String
    public var roleid: String
    public var propagate: Bool

    public init(path: String, kind: Kind, ugid: String, roleid: String, propagate: Bool) {
        self.path = path; self.kind = kind; self.ugid = ugid; self.roleid = roleid; self.propagate = propagate
    }
}
