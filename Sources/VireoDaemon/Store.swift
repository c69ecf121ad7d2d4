import Foundation
import VireoEngines

/// A user: `name@realm`, with a slow salted password hash (see ``PasswordHash``).
public struct UserRecord: Sendable, Equatable {
    public var userid: String
    /// Empty: no password login (token-only users).
    public var passwordHash: String
    public var enable = true
    /// Account expiry, epoch seconds; 0 = never.
    public var expire = 0
    public var firstname = ""
    public var lastname = ""
    public var email = ""
    public var comment = ""
    public init(userid: String, passwordHash: String) { self.userid = userid; self.passwordHash = passwordHash }

    /// Enabled and not expired.
    func isActive(now: Int) -> Bool { enable && (expire == 0 || now < expire) }
}

/// An API token `userid!tokenid`; only a SHA-256 of the secret is kept.
public struct TokenRecord: Sendable, Equatable {
    public var userid: String
    public var tokenid: String
    public var secretHash: String
    /// Privilege separation: 1 = the token has only the ACLs granted to it (none yet), 0 = the user's.
    public var privsep: Bool
    public var comment: String
}

/// A VM: its Proxmox-shaped config, and the process that runs it (nil when stopped).
public struct VMRecord: Sendable, Equatable {
    public var vmid: Int
    public var config: [String: String]
    public var process: VMProcess?
    /// How the last run ended (`exit code 4`, `killed`, …), for the task log and status.
    public var lastExit: String?
}

public struct TaskRecord: Sendable, Equatable {
    public var upid: String
    public var node: String
    public var type: String
    public var id: String
    public var user: String
    public var startTime: Int
    public var endTime: Int?
    /// nil while running.
    public var exitStatus: String?
}

public enum StoreError: Error, Equatable, CustomStringConvertible {
    case duplicateVM(Int)
    case noSuchVM(Int)
    case digestMismatch
    case noSuchTask(String)

    public var description: String {
        switch self {
        case .duplicateVM(let vmid): "unable to create VM \(vmid) - VM \(vmid) already exists"
        case .noSuchVM(let vmid): "Configuration file 'nodes/qemu-server/\(vmid).conf' does not exist"
        case .digestMismatch: "detected modified configuration - file changed by other user? Try again."
        case .noSuchTask(let upid): "no such task '\(upid)'"
        }
    }
}

/// The control plane's state. SQLite now (``SQLiteStore``); a replicated store (etcd/Raft) later.
/// Every method is one atomic transaction.
public protocol Store: Sendable {
    func user(_ userid: String) throws -> UserRecord?
    func putUser(_ user: UserRecord) throws
    func users() throws -> [UserRecord]
    /// Deletes the user with its tokens and ACL entries; false when there was none.
    func deleteUser(_ userid: String) throws -> Bool
    func token(userid: String, tokenid: String) throws -> TokenRecord?
    func tokens(userid: String) throws -> [TokenRecord]
    func putToken(_ token: TokenRecord) throws
    /// Deletes the token with its ACL entries; false when there was none.
    func deleteToken(userid: String, tokenid: String) throws -> Bool

    /// Every ACL entry, or those for the given users/tokens.
    func acl(ugids: [String]?) throws -> [ACLEntry]
    /// Adds the entries (replacing equal ones) or, with `delete`, removes them, in one transaction.
    func updateACL(_ entries: [ACLEntry], delete: Bool) throws
    /// Removes every entry on `path` (Proxmox's `purge` on VM destruction); returns how many.
    func removeACLs(path: String) throws -> Int

    func vm(_ vmid: Int) throws -> VMRecord?
    func vms() throws -> [VMRecord]
    /// Throws ``StoreError/duplicateVM(_:)`` when the vmid exists.
    func createVM(vmid: Int, config: [String: String]) throws
    /// Replaces the config if its current digest equals `expectedDigest` (when given).
    func updateVM(vmid: Int, expectedDigest: String?, _ change: (inout [String: String]) throws -> Void) throws
    func setProcess(vmid: Int, process: VMProcess?, lastExit: String?) throws
    func deleteVM(vmid: Int) throws

    func createTask(_ task: TaskRecord) throws
    func appendTaskLog(upid: String, line: String) throws
    func finishTask(upid: String, exitStatus: String, endTime: Int) throws
    func task(_ upid: String) throws -> TaskRecord?
    func tasks(limit: Int) throws -> [TaskRecord]
    /// Lines `start..<start+limit` (0-based) and the total count.
    func taskLog(upid: String, start: Int, limit: Int) throws -> (lines: [String], total: Int)
    /// Marks tasks left running by a previous daemon as ended with `unexpected status`.
    func abandonRunningTasks(endTime: Int) throws
}

/// Proxmox's config digest: SHA-1 over the config file's text (keys sorted), hex.
public func configDigest(_ config: [String: String]) -> String {
    let text = config.keys.sorted().map { "\($0): \(config[$0]!)\n" }.joined()
    return sha1Hex(Array(text.utf8))
}
