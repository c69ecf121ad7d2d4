import Foundation
import Hummingbird

/// `/access`: tickets, users, API tokens, roles and ACLs (PVE's pve-access-control shapes).
struct AccessRoutes {
    let services: Services
    /// Realms: `pam` (root@pam and local accounts) and `pve`; both keep their passwords here.
    static let realms: Set<String> = ["pam", "pve"]

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.get("") { _, _ in envelope(["acl", "password", "roles", "ticket", "users"].map { ["subdir": $0] }) }
        routes.post("ticket") { _, context in try ticket(context) }
        routes.get("ticket") { _, _ in envelope(nil) }
        routes.put("password") { _, context in try changePassword(context) }
        routes.get("users") { _, context in try users(context) }
        routes.post("users") { _, context in try createUser(context) }
        routes.get("users/:userid") { _, context in try user(context) }
        routes.put("users/:userid") { _, context in try updateUser(context) }
        routes.delete("users/:userid") { _, context in try deleteUser(context) }
        routes.get("users/:userid/token") { _, context in try tokens(context) }
        routes.get("users/:userid/token/:tokenid") { _, context in try tokenInfo(context) }
        routes.post("users/:userid/token/:tokenid") { _, context in try createToken(context) }
        routes.delete("users/:userid/token/:tokenid") { _, context in try deleteToken(context) }
        routes.get("roles") { _, _ in
            envelope(Privileges.roles.keys.sorted().map { id in
                ["roleid": id, "privs": (Privileges.roles[id] ?? []).sorted().joined(separator: ","), "special": 1] as [String: Any]
            })
        }
        routes.get("roles/:roleid") { _, context in
            let id = try context.parameters.require("roleid")
            guard let privileges = Privileges.roles[id] else { throw APIError(500, "role '\(id)' does not exist") }
            return envelope(Dictionary(uniqueKeysWithValues: privileges.map { ($0, 1) }))
        }
        routes.get("acl") { _, context in try acl(context) }
        routes.put("acl") { _, context in try updateACL(context) }
        return routes
    }

    // MARK: Tickets

    /// `username` + `password` (or a still-valid ticket as the password, to renew). No Set-Cookie:
    /// proxmoxer drops its ticket once its jar holds any cookie.
    func ticket(_ context: APIContext) throws -> Response {
        guard let username = context.params["username"], let password = context.params["password"] else {
            var errors: [String: String] = [:]
            if context.params["username"] == nil { errors["username"] = "property is missing and it is not optional" }
            if context.params["password"] == nil { errors["password"] = "property is missing and it is not optional" }
            throw APIError.parameters(errors)
        }
        guard let user = try services.store.user(username), user.isActive(now: Int(Date().timeIntervalSince1970)) else {
            throw APIError.authenticationFailure
        }
        let renewed = services.signer.verifyTicket(password) == username
        guard renewed || (!user.passwordHash.isEmpty && PasswordHash.verify(password, against: user.passwordHash)) else {
            throw APIError.authenticationFailure
        }
        return envelope([
            "username": username,
            "ticket": services.signer.ticket(for: username),
            "CSRFPreventionToken": services.signer.csrfToken(for: username),
            "cap": [:] as [String: Any],
        ])
    }

    // MARK: Users

    /// `name@realm` with a known realm.
    static func checkUserid(_ userid: String, field: String = "userid") throws -> String {
        let parts = userid.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].count <= 60, realms.contains(String(parts[1])),
              parts[0].allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
            throw APIError.parameters([field: "value '\(userid)' does not look like a valid user name (name@pam or name@pve)"])
        }
        return String(parts[1])
    }

    /// User administration as PVE checks it: `User.Modify` on /access/groups, or the user itself.
    func requireUserAdmin(_ context: APIContext, orSelf userid: String?) throws {
        if let userid, context.principal?.userid == userid, context.principal?.tokenid == nil { return }
        try context.require("User.Modify", on: "/access/groups")
    }

    func userObject(_ user: UserRecord, tokens: [TokenRecord]?) -> [String: Any] {
        var object: [String: Any] = [
            "userid": user.userid, "enable": user.enable ? 1 : 0, "expire": user.expire,
            "realm-type": String(user.userid.split(separator: "@").last ?? ""),
        ]
        for (key, value) in [("firstname", user.firstname), ("lastname", user.lastname), ("email", user.email), ("comment", user.comment)]
        where !value.isEmpty { object[key] = value }
        if let tokens { object["tokens"] = tokens.map(tokenObject) }
        return object
    }

    func tokenObject(_ token: TokenRecord) -> [String: Any] {
        ["tokenid": token.tokenid, "privsep": token.privsep ? 1 : 0, "expire": 0, "comment": token.comment]
    }

    func users(_ context: APIContext) throws -> Response {
        let seesAll = context.principal?.may("User.Modify", on: "/access/groups") == true
            || context.principal?.may("Sys.Audit", on: "/access/groups") == true
        let full = context.params["full"] == "1"
        let enabledOnly = context.params["enabled"] == "1"
        let users = try services.store.users().filter { seesAll || $0.userid == context.principal?.userid }
            .filter { !enabledOnly || $0.enable }
        return envelope(try users.map { userObject($0, tokens: full ? try services.store.tokens(userid: $0.userid) : nil) })
    }

    /// Applies `enable`, `expire`, `firstname`, `lastname`, `email`, `comment` from the request.
    func applyFields(_ context: APIContext, to user: inout UserRecord) throws {
        var errors: [String: String] = [:]
        if let text = context.params["enable"] {
            if let value = parseBool(text) { user.enable = value } else { errors["enable"] = "type check ('boolean') failed - got '\(text)'" }
        }
        if let text = context.params["expire"] {
            if let value = Int(text), value >= 0 { user.expire = value } else { errors["expire"] = "type check ('integer') failed - got '\(text)'" }
        }
        for key in ["firstname", "lastname", "email", "comment"] {
            guard let value = context.params[key] else { continue }
            if value.count > 255 || value.contains("\n") { errors[key] = "value must be a single line of at most 255 characters"; continue }
            switch key {
            case "firstname": user.firstname = value
            case "lastname": user.lastname = value
            case "email": user.email = value
            default: user.comment = value
            }
        }
        if let groups = context.params["groups"], !groups.isEmpty { errors["groups"] = "groups are not supported by vireod" }
        if !errors.isEmpty { throw APIError.parameters(errors) }
    }

    /// `POST /access/users` `userid` [`password`, `enable`, `expire`, `firstname`, `lastname`, `email`, `comment`].
    func createUser(_ context: APIContext) throws -> Response {
        guard let userid = context.params["userid"] else { throw APIError.parameters(["userid": "property is missing and it is not optional"]) }
        let realm = try Self.checkUserid(userid)
        try context.require("Realm.AllocateUser", on: "/access/realm/\(realm)")
        try context.require("User.Modify", on: "/access/groups")
        var user = UserRecord(userid: userid, passwordHash: "")
        try applyFields(context, to: &user)
        if let password = context.params["password"] {
            guard (5...64).contains(password.count) else { throw APIError.parameters(["password": "value must be 5 to 64 characters long"]) }
            user.passwordHash = PasswordHash.make(password)
        }
        guard try services.store.user(userid) == nil else { throw APIError(500, "create user failed: user '\(userid)' already exists") }
        try services.store.putUser(user)
        return envelope(nil)
    }

    func existingUser(_ context: APIContext) throws -> UserRecord {
        let userid = try context.parameters.require("userid")
        _ = try Self.checkUserid(userid)
        guard let user = try services.store.user(userid) else { throw APIError(500, "no such user ('\(userid)')") }
        return user
    }

    func user(_ context: APIContext) throws -> Response {
        let user = try existingUser(context)
        if context.principal?.userid != user.userid, context.principal?.may("Sys.Audit", on: "/access/groups") != true {
            try context.require("User.Modify", on: "/access/groups")
        }
        var object = userObject(user, tokens: nil)
        object["tokens"] = Dictionary(uniqueKeysWithValues: try services.store.tokens(userid: user.userid).map { token in
            (token.tokenid, ["privsep": token.privsep ? 1 : 0, "expire": 0, "comment": token.comment] as [String: Any])
        })
        return envelope(object)
    }

    func updateUser(_ context: APIContext) throws -> Response {
        var user = try existingUser(context)
        try context.require("User.Modify", on: "/access/groups")
        try applyFields(context, to: &user)
        try services.store.putUser(user)
        return envelope(nil)
    }

    func deleteUser(_ context: APIContext) throws -> Response {
        let user = try existingUser(context)
        let realm = try Self.checkUserid(user.userid)
        try context.require("Realm.AllocateUser", on: "/access/realm/\(realm)")
        try context.require("User.Modify", on: "/access/groups")
        if user.userid == "root@pam" { throw APIError(500, "delete user failed: cannot delete root@pam") }
        _ = try services.store.deleteUser(user.userid)
        return envelope(nil)
    }

    /// `PUT /access/password` `userid`, `password`: one's own, or anyone's with `User.Modify`.
    func changePassword(_ context: APIContext) throws -> Response {
        guard let userid = context.params["userid"], let password = context.params["password"] else {
            throw APIError.parameters(["userid": "property is missing and it is not optional"])
        }
        _ = try Self.checkUserid(userid)
        try requireUserAdmin(context, orSelf: userid)
        guard (5...64).contains(password.count) else { throw APIError.parameters(["password": "value must be 5 to 64 characters long"]) }
        guard var user = try services.store.user(userid) else { throw APIError(500, "no such user ('\(userid)')") }
        user.passwordHash = PasswordHash.make(password)
        try services.store.putUser(user)
        return envelope(nil)
    }

    // MARK: Tokens

    func tokens(_ context: APIContext) throws -> Response {
        let user = try existingUser(context)
        try requireUserAdmin(context, orSelf: user.userid)
        return envelope(try services.store.tokens(userid: user.userid).map(tokenObject))
    }

    func existingToken(_ context: APIContext) throws -> TokenRecord {
        let user = try existingUser(context)
        let tokenid = try context.parameters.require("tokenid")
        try requireUserAdmin(context, orSelf: user.userid)
        guard let token = try services.store.token(userid: user.userid, tokenid: tokenid) else {
            throw APIError(500, "no such token '\(tokenid)' for user '\(user.userid)'")
        }
        return token
    }

    func tokenInfo(_ context: APIContext) throws -> Response {
        let token = try existingToken(context)
        return envelope(["privsep": token.privsep ? 1 : 0, "expire": 0, "comment": token.comment] as [String: Any])
    }

    func deleteToken(_ context: APIContext) throws -> Response {
        let token = try existingToken(context)
        _ = try services.store.deleteToken(userid: token.userid, tokenid: token.tokenid)
        return envelope(nil)
    }

    /// `POST /access/users/{userid}/token/{tokenid}` [`privsep=0|1` (default 1), `comment`]: the secret is shown once.
    func createToken(_ context: APIContext) throws -> Response {
        let user = try existingUser(context)
        let userid = user.userid, tokenid = try context.parameters.require("tokenid")
        try requireUserAdmin(context, orSelf: userid)
        var errors: [String: String] = [:]
        let validID = !tokenid.isEmpty && tokenid.count <= 64 && tokenid.first?.isLetter == true
            && tokenid.allSatisfy { $0.isLetter || $0.isNumber || "-_.".contains($0) }
        if !validID { errors["tokenid"] = "invalid format - token id is a letter, then letters, digits, - _ ." }
        let privsep = parseBool(context.params["privsep"] ?? "1")
        if privsep == nil { errors["privsep"] = "type check ('boolean') failed - got '\(context.params["privsep"] ?? "")'" }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        if try services.store.token(userid: userid, tokenid: tokenid) != nil {
            throw APIError(500, "Token already exists.")
        }
        let secret = UUID().uuidString.lowercased()
        let comment = context.params["comment"] ?? ""
        try services.store.putToken(TokenRecord(userid: userid, tokenid: tokenid, secretHash: sha256Hex(secret),
                                                privsep: privsep ?? true, comment: comment))
        return envelope([
            "full-tokenid": "\(userid)!\(tokenid)",
            "info": ["privsep": privsep == true ? 1 : 0, "comment": comment] as [String: Any],
            "value": secret,
        ])
    }

    // MARK: ACLs

    /// `GET /access/acl`: the entries on paths where the caller may audit or change permissions.
    func acl(_ context: APIContext) throws -> Response {
        let entries = try services.store.acl(ugids: nil).filter { entry in
            context.principal?.may("Sys.Audit", on: entry.path) == true || context.principal?.may("Permissions.Modify", on: entry.path) == true
        }
        return envelope(entries.map { entry in
            ["path": entry.path, "type": entry.kind.rawValue, "ugid": entry.ugid, "roleid": entry.roleid,
             "propagate": entry.propagate ? 1 : 0] as [String: Any]
        })
    }

    /// `PUT /access/acl` `path`, `roles` [`users`, `tokens`, `propagate` (default 1), `delete`]:
    /// lists are comma-separated. Needs `Permissions.Modify` on the path.
    func updateACL(_ context: APIContext) throws -> Response {
        func list(_ key: String) -> [String] {
            (context.params[key] ?? "").split(whereSeparator: { ", ;".contains($0) }).map(String.init)
        }
        var errors: [String: String] = [:]
        let path = context.params["path"] ?? ""
        if !Privileges.validPath(path) { errors["path"] = path.isEmpty ? "property is missing and it is not optional" : "invalid ACL path '\(path)'" }
        let roles = list("roles")
        if roles.isEmpty { errors["roles"] = "property is missing and it is not optional" }
        for role in roles where Privileges.roles[role] == nil { errors["roles"] = "role '\(role)' does not exist" }
        let propagate = parseBool(context.params["propagate"] ?? "1")
        if propagate == nil { errors["propagate"] = "type check ('boolean') failed - got '\(context.params["propagate"] ?? "")'" }
        let delete = parseBool(context.params["delete"] ?? "0")
        if delete == nil { errors["delete"] = "type check ('boolean') failed - got '\(context.params["delete"] ?? "")'" }
        if !list("groups").isEmpty { errors["groups"] = "groups are not supported by vireod" }
        let users = list("users"), tokens = list("tokens")
        if users.isEmpty && tokens.isEmpty { errors["users"] = "either 'users' or 'tokens' is required" }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        try context.require("Permissions.Modify", on: path)

        var entries: [ACLEntry] = []
        for userid in users {
            guard try services.store.user(userid) != nil else { throw APIError(500, "user '\(userid)' does not exist") }
            entries += roles.map { ACLEntry(path: path, kind: .user, ugid: userid, roleid: $0, propagate: propagate!) }
        }
        for full in tokens {
            guard let bang = full.firstIndex(of: "!"),
                  try services.store.token(userid: String(full[..<bang]), tokenid: String(full[full.index(after: bang)...])) != nil else {
                throw APIError(500, "token '\(full)' does not exist")
            }
            entries += roles.map { ACLEntry(path: path, kind: .token, ugid: full, roleid: $0, propagate: propagate!) }
        }
        try services.store.updateACL(entries, delete: delete!)
        return envelope(nil)
    }
}
