import Foundation
import GRDB
import VireoEngines

/// ``Store`` on SQLite (GRDB), one file in the data directory, schema by migrations.
public final class SQLiteStore: Store, @unchecked Sendable {
    // SAFETY (@unchecked): `cachedVMs` is only touched while holding `cacheLock`.
    private let queue: DatabaseQueue
    /// Decoded VM records, kept in step with every VM write this store makes (vireod is the
    /// database's only writer): VM lists then cost no JSON decoding. nil until first loaded.
    private var cachedVMs: [Int: VMRecord]?
    private let cacheLock = NSLock()

    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        queue = try DatabaseQueue(path: path, configuration: configuration)
        try Self.migrator.migrate(queue)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE user (userid TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL);
                CREATE TABLE token (userid TEXT NOT NULL REFERENCES user(userid) ON DELETE CASCADE, tokenid TEXT NOT NULL,
                    secret_hash TEXT NOT NULL, privsep INTEGER NOT NULL, comment TEXT NOT NULL DEFAULT '',
                    PRIMARY KEY (userid, tokenid));
                CREATE TABLE vm (vmid INTEGER PRIMARY KEY NOT NULL, config TEXT NOT NULL, process TEXT, last_exit TEXT);
                CREATE TABLE task (upid TEXT PRIMARY KEY NOT NULL, node TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
                    user TEXT NOT NULL, start_time INTEGER NOT NULL, end_time INTEGER, exit_status TEXT);
                CREATE INDEX task_start ON task(start_time);
                CREATE TABLE task_log (upid TEXT NOT NULL REFERENCES task(upid) ON DELETE CASCADE, n INTEGER NOT NULL,
                    text TEXT NOT NULL, PRIMARY KEY (upid, n));
                """)
        }
        migrator.registerMigration("v2-access") { db in
            try db.execute(sql: """
                ALTER TABLE user ADD COLUMN enable INTEGER NOT NULL DEFAULT 1;
                ALTER TABLE user ADD COLUMN expire INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE user ADD COLUMN firstname TEXT NOT NULL DEFAULT '';
                ALTER TABLE user ADD COLUMN lastname TEXT NOT NULL DEFAULT '';
                ALTER TABLE user ADD COLUMN email TEXT NOT NULL DEFAULT '';
                ALTER TABLE user ADD COLUMN comment TEXT NOT NULL DEFAULT '';
                CREATE TABLE acl (path TEXT NOT NULL, kind TEXT NOT NULL, ugid TEXT NOT NULL, roleid TEXT NOT NULL,
                    propagate INTEGER NOT NULL, PRIMARY KEY (path, kind, ugid, roleid));
                CREATE INDEX acl_ugid ON acl(ugid);
                """)
        }
        return migrator
    }

    private static func encode<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    private static func decode<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }

    private static func userRecord(_ row: Row) -> UserRecord {
        var user = UserRecord(userid: row["userid"], passwordHash: row["password_hash"])
        user.enable = row["enable"]
        user.expire = row["expire"]
        user.firstname = row["firstname"]
        user.lastname = row["lastname"]
        user.email = row["email"]
        user.comment = row["comment"]
        return user
    }

    public func user(_ userid: String) throws -> UserRecord? {
        try queue.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM user WHERE userid = ?", arguments: [userid]).map(Self.userRecord)
        }
    }

    public func users() throws -> [UserRecord] {
        try queue.read { db in try Row.fetchAll(db, sql: "SELECT * FROM user ORDER BY userid").map(Self.userRecord) }
    }

    public func putUser(_ user: UserRecord) throws {
        try queue.write { db in
            try db.execute(sql: """
                INSERT INTO user (userid, password_hash, enable, expire, firstname, lastname, email, comment) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(userid) DO UPDATE SET password_hash = excluded.password_hash, enable = excluded.enable,
                    expire = excluded.expire, firstname = excluded.firstname, lastname = excluded.lastname,
                    email = excluded.email, comment = excluded.comment
                """,
                arguments: [user.userid, user.passwordHash, user.enable, user.expire, user.firstname, user.lastname, user.email, user.comment])
        }
    }

    public func deleteUser(_ userid: String) throws -> Bool {
        try queue.write { db in
            let prefix = userid + "!"
            try db.execute(sql: "DELETE FROM acl WHERE ugid = ? OR (kind = 'token' AND substr(ugid, 1, ?) = ?)",
                           arguments: [userid, prefix.unicodeScalars.count, prefix])
            try db.execute(sql: "DELETE FROM token WHERE userid = ?", arguments: [userid])
            try db.execute(sql: "DELETE FROM user WHERE userid = ?", arguments: [userid])
            return db.changesCount == 1
        }
    }

    public func tokens(userid: String) throws -> [TokenRecord] {
        try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM token WHERE userid = ? ORDER BY tokenid", arguments: [userid]).map {
                TokenRecord(userid: $0["userid"], tokenid: $0["tokenid"], secretHash: $0["secret_hash"],
                            privsep: $0["privsep"], comment: $0["comment"])
            }
        }
    }

    public func deleteToken(userid: String, tokenid: String) throws -> Bool {
        try queue.write { db in
            try db.execute(sql: "DELETE FROM acl WHERE kind = 'token' AND ugid = ?", arguments: ["\(userid)!\(tokenid)"])
            try db.execute(sql: "DELETE FROM token WHERE userid = ? AND tokenid = ?", arguments: [userid, tokenid])
            return db.changesCount == 1
        }
    }

    private static func aclEntry(_ row: Row) -> ACLEntry {
        ACLEntry(path: row["path"], kind: ACLEntry.Kind(rawValue: row["kind"]) ?? .user, ugid: row["ugid"],
                 roleid: row["roleid"], propagate: row["propagate"])
    }

    public func acl(ugids: [String]?) throws -> [ACLEntry] {
        try queue.read { db in
            guard let ugids else {
                return try Row.fetchAll(db, sql: "SELECT * FROM acl ORDER BY path, kind, ugid, roleid").map(Self.aclEntry)
            }
            guard !ugids.isEmpty else { return [] }
            let marks = ugids.map { _ in "?" }.joined(separator: ", ")
            return try Row.fetchAll(db, sql: "SELECT * FROM acl WHERE ugid IN (\(marks)) ORDER BY path",
                                    arguments: StatementArguments(ugids)).map(Self.aclEntry)
        }
    }

    public func updateACL(_ entries: [ACLEntry], delete: Bool) throws {
        try queue.write { db in
            for entry in entries {
                if delete {
                    try db.execute(sql: "DELETE FROM acl WHERE path = ? AND kind = ? AND ugid = ? AND roleid = ?",
                                   arguments: [entry.path, entry.kind.rawValue, entry.ugid, entry.roleid])
                } else {
                    try db.execute(sql: "INSERT OR REPLACE INTO acl (path, kind, ugid, roleid, propagate) VALUES (?, ?, ?, ?, ?)",
                                   arguments: [entry.path, entry.kind.rawValue, entry.ugid, entry.roleid, entry.propagate])
                }
            }
        }
    }

    public func removeACLs(path: String) throws -> Int {
        try queue.write { db in
            try db.execute(sql: "DELETE FROM acl WHERE path = ?", arguments: [path])
            return db.changesCount
        }
    }

    public func token(userid: String, tokenid: String) throws -> TokenRecord? {
        try queue.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM token WHERE userid = ? AND tokenid = ?", arguments: [userid, tokenid]).map {
                TokenRecord(userid: $0["userid"], tokenid: $0["tokenid"], secretHash: $0["secret_hash"],
                            privsep: $0["privsep"], comment: $0["comment"])
            }
        }
    }

    public func putToken(_ token: TokenRecord) throws {
        try queue.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO token (userid, tokenid, secret_hash, privsep, comment) VALUES (?, ?, ?, ?, ?)",
                           arguments: [token.userid, token.tokenid, token.secretHash, token.privsep, token.comment])
        }
    }

    private static func vmRecord(_ row: Row) throws -> VMRecord {
        let process: String? = row["process"]
        return VMRecord(vmid: row["vmid"], config: try decode([String: String].self, row["config"]),
                        process: try process.map { try decode(VMProcess.self, $0) }, lastExit: row["last_exit"])
    }

    public func vm(_ vmid: Int) throws -> VMRecord? {
        if let cached = cacheLock.withLock({ cachedVMs }) { return cached[vmid] }
        return try queue.read { db in try Row.fetchOne(db, sql: "SELECT * FROM vm WHERE vmid = ?", arguments: [vmid]).map(Self.vmRecord) }
    }

    public func vms() throws -> [VMRecord] {
        if let cached = cacheLock.withLock({ cachedVMs }) { return cached.values.sorted { $0.vmid < $1.vmid } }
        // Loaded under the write lock, so no write can slip between the read and the cache fill.
        return try queue.write { db in
            let records = try Row.fetchAll(db, sql: "SELECT * FROM vm ORDER BY vmid").map(Self.vmRecord)
            cacheLock.withLock { cachedVMs = Dictionary(uniqueKeysWithValues: records.map { ($0.vmid, $0) }) }
            return records
        }
    }

    /// Applies a committed change to the cache (inside the write transaction's closure, so writes
    /// reach the cache in commit order).
    private func updateCache(_ vmid: Int, _ change: (inout VMRecord?) -> Void) {
        cacheLock.withLock {
            guard cachedVMs != nil else { return }
            var record = cachedVMs?[vmid]
            change(&record)
            cachedVMs?[vmid] = record
        }
    }

    public func createVM(vmid: Int, config: [String: String]) throws {
        try queue.write { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM vm WHERE vmid = ?", arguments: [vmid]) == nil else {
                throw StoreError.duplicateVM(vmid)
            }
            try db.execute(sql: "INSERT INTO vm (vmid, config) VALUES (?, ?)", arguments: [vmid, try Self.encode(config)])
            updateCache(vmid) { $0 = VMRecord(vmid: vmid, config: config, process: nil, lastExit: nil) }
        }
    }

    public func updateVM(vmid: Int, expectedDigest: String?, _ change: (inout [String: String]) throws -> Void) throws {
        try queue.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT config FROM vm WHERE vmid = ?", arguments: [vmid]) else {
                throw StoreError.noSuchVM(vmid)
            }
            var config = try Self.decode([String: String].self, row["config"])
            if let expectedDigest, !expectedDigest.isEmpty, expectedDigest != configDigest(config) { throw StoreError.digestMismatch }
            try change(&config)
            try db.execute(sql: "UPDATE vm SET config = ? WHERE vmid = ?", arguments: [try Self.encode(config), vmid])
            updateCache(vmid) { $0?.config = config }
        }
    }

    public func setProcess(vmid: Int, process: VMProcess?, lastExit: String?) throws {
        try queue.write { db in
            try db.execute(sql: "UPDATE vm SET process = ?, last_exit = ? WHERE vmid = ?",
                           arguments: [try process.map(Self.encode), lastExit, vmid])
            guard db.changesCount == 1 else { throw StoreError.noSuchVM(vmid) }
            updateCache(vmid) { record in
                record?.process = process
                record?.lastExit = lastExit
            }
        }
    }

    public func deleteVM(vmid: Int) throws {
        try queue.write { db in
            try db.execute(sql: "DELETE FROM vm WHERE vmid = ?", arguments: [vmid])
            guard db.changesCount == 1 else { throw StoreError.noSuchVM(vmid) }
            updateCache(vmid) { $0 = nil }
        }
    }

    public func createTask(_ task: TaskRecord) throws {
        try queue.write { db in
            try db.execute(sql: "INSERT INTO task (upid, node, type, id, user, start_time) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [task.upid, task.node, task.type, task.id, task.user, task.startTime])
        }
    }

    public func appendTaskLog(upid: String, line: String) throws {
        try queue.write { db in
            let next = try Int.fetchOne(db, sql: "SELECT COALESCE(MAX(n), 0) + 1 FROM task_log WHERE upid = ?", arguments: [upid]) ?? 1
            try db.execute(sql: "INSERT INTO task_log (upid, n, text) VALUES (?, ?, ?)", arguments: [upid, next, line])
        }
    }

    public func finishTask(upid: String, exitStatus: String, endTime: Int) throws {
        try queue.write { db in
            try db.execute(sql: "UPDATE task SET exit_status = ?, end_time = ? WHERE upid = ?", arguments: [exitStatus, endTime, upid])
        }
    }

    private static func taskRecord(_ row: Row) -> TaskRecord {
        TaskRecord(upid: row["upid"], node: row["node"], type: row["type"], id: row["id"], user: row["user"],
                   startTime: row["start_time"], endTime: row["end_time"], exitStatus: row["exit_status"])
    }

    public func task(_ upid: String) throws -> TaskRecord? {
        try queue.read { db in try Row.fetchOne(db, sql: "SELECT * FROM task WHERE upid = ?", arguments: [upid]).map(Self.taskRecord) }
    }

    public func tasks(limit: Int) throws -> [TaskRecord] {
        try queue.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM task ORDER BY start_time DESC, rowid DESC LIMIT ?", arguments: [limit]).map(Self.taskRecord)
        }
    }

    public func taskLog(upid: String, start: Int, limit: Int) throws -> (lines: [String], total: Int) {
        try queue.read { db in
            let total = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM task_log WHERE upid = ?", arguments: [upid]) ?? 0
            let lines = try String.fetchAll(db, sql: "SELECT text FROM task_log WHERE upid = ? ORDER BY n LIMIT ? OFFSET ?",
                                            arguments: [upid, limit, start])
            return (lines, total)
        }
    }

    public func abandonRunningTasks(endTime: Int) throws {
        try queue.write { db in
            try db.execute(sql: "UPDATE task SET exit_status = 'unexpected status', end_time = ? WHERE exit_status IS NULL",
                           arguments: [endTime])
        }
    }
}
