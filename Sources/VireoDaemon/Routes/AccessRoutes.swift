import Foundation
import Hummingbird

/// `/access`: tickets and API tokens.
struct AccessRoutes {
    let services: Services

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.post("ticket") { _, context in try ticket(context) }
        routes.post("users/:userid/token/:tokenid") { _, context in try createToken(context) }
        return routes
    }

    /// `username` + `password` (or a still-valid ticket as the password, to renew). No Set-Cookie:
    /// proxmoxer drops its ticket once its jar holds any cookie.
    func ticket(_ context: APIContext) throws -> Response {
        guard let username = context.params["username"], let password = context.params["password"] else {
            var errors: [String: String] = [:]
            if context.params["username"] == nil { errors["username"] = "property is missing and it is not optional" }
            if context.params["password"] == nil { errors["password"] = "property is missing and it is not optional" }
            throw APIError.parameters(errors)
        }
        guard let user = try services.store.user(username) else { throw APIError.authenticationFailure }
        let renewed = services.signer.verifyTicket(password) == username
        guard renewed || PasswordHash.verify(password, against: user.passwordHash) else { throw APIError.authenticationFailure }
        return envelope([
            "username": username,
            "ticket": services.signer.ticket(for: username),
            "CSRFPreventionToken": services.signer.csrfToken(for: username),
            "cap": [:] as [String: Any],
        ])
    }

    /// `POST /access/users/{userid}/token/{tokenid}` [`privsep=0|1` (default 1), `comment`]: the secret is shown once.
    func createToken(_ context: APIContext) throws -> Response {
        let userid = try context.parameters.require("userid"), tokenid = try context.parameters.require("tokenid")
        try context.require("User.Modify", on: "/access/users/\(userid)")
        var errors: [String: String] = [:]
        let validID = !tokenid.isEmpty && tokenid.count <= 64 && tokenid.allSatisfy { $0.isLetter || $0.isNumber || "-_.".contains($0) }
        if !validID { errors["tokenid"] = "invalid format - token id is letters, digits, - _ ." }
        let privsep = parseBool(context.params["privsep"] ?? "1")
        if privsep == nil { errors["privsep"] = "type check ('boolean') failed - got '\(context.params["privsep"] ?? "")'" }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        guard try services.store.user(userid) != nil else { throw APIError(500, "no such user ('\(userid)')") }
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
}
