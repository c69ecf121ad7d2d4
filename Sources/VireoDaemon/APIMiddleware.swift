import Foundation
import Hummingbird
import Logging

/// Authenticates a request: a ticket cookie (plus the CSRF header on writes) or an API token.
struct Authenticator: Sendable {
    let store: any Store
    let signer: TicketSigner

    func authenticate(_ request: Request) throws -> Principal {
        // `PVEAPIToken=…` (PVE) or `PVEAPIToken …` (what Prometheus sends for an authorization type).
        if let header = request.headers[.authorization], header.hasPrefix("PVEAPIToken=") || header.hasPrefix("PVEAPIToken ") {
            return try authenticateToken(String(header.dropFirst("PVEAPIToken=".count)))
        }
        guard let ticket = Self.cookie("PVEAuthCookie", in: request.headers[values: .cookie]) else { throw APIError.noTicket }
        guard let userid = signer.verifyTicket(ticket), let user = try store.user(userid),
              user.isActive(now: Int(Date().timeIntervalSince1970)) else { throw APIError.authenticationFailure }
        if request.method != .get && request.method != .head {
            guard let csrf = request.headers.first(where: { $0.name.canonicalName == "csrfpreventiontoken" })?.value, signer.verifyCSRF(csrf, userid: userid) else {
                throw APIError.invalidCSRF
            }
        }
        return Principal(userid: userid, tokenid: nil, privsep: false, acl: try store.acl(ugids: [userid]))
    }

    /// `user@realm!tokenid=SECRET`, split at the last `=`.
    private func authenticateToken(_ value: String) throws -> Principal {
        guard let equals = value.lastIndex(of: "="), let bang = value[..<equals].firstIndex(of: "!") else {
            throw APIError.authenticationFailure
        }
        let userid = String(value[..<bang]), tokenid = String(value[value.index(after: bang)..<equals])
        let secret = String(value[value.index(after: equals)...])
        guard let token = try store.token(userid: userid, tokenid: tokenid),
              constantTimeEqual(Array(sha256Hex(secret).utf8), Array(token.secretHash.utf8)),
              try store.user(userid)?.isActive(now: Int(Date().timeIntervalSince1970)) == true else {
            throw APIError.authenticationFailure
        }
        return Principal(userid: userid, tokenid: tokenid, privsep: token.privsep, acl: try store.acl(ugids: [userid, "\(userid)!\(tokenid)"]))
    }

    /// The raw value of cookie `name` (tickets contain `+/=` and are sent unescaped).
    static func cookie(_ name: String, in headers: [String]) -> String? {
        for header in headers {
            for part in header.split(separator: ";") {
                let trimmed = part.trimmingCharacters(in: .whitespaces)
                if trimmed.hasPrefix(name + "=") {
                    let value = String(trimmed.dropFirst(name.count + 1))
                    return value.removingPercentEncoding ?? value
                }
            }
        }
        return nil
    }
}

/// The edge of the API: collects and merges parameters, authenticates, and turns every error into
/// Proxmox's error shape (unknown paths 501, oversized bodies 413, anything unexpected 500).
struct APIMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let authenticator: Authenticator
    let logger: Logger

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response) async throws -> Response {
        do {
            var context = context
            var request = request
            // Uploads (`…/storage/{storage}/upload`, multipart) stream their body to the route.
            let isUpload = request.method == .post && request.uri.path.hasSuffix("/upload")
                && (request.headers[.contentType] ?? "").lowercased().hasPrefix("multipart/form-data")
            var buffer = ByteBuffer()
            if !isUpload {
                do {
                    buffer = try await request.collectBody(upTo: context.maxUploadSize)
                } catch {
                    throw APIError(413, "request entity too large")
                }
            }
            var params: [String: String] = [:]
            let body = String(buffer: buffer)
            if !body.isEmpty {
                let type = request.headers[.contentType] ?? ""
                if type.hasPrefix("application/json") {
                    guard let object = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] else {
                        throw APIError(400, "unable to parse JSON body")
                    }
                    for (key, value) in object { params[key] = (value as? String) ?? "\(value)" }
                } else {
                    params = decodeForm(Substring(body))
                }
            }
            if let query = request.uri.query { params.merge(decodeForm(Substring(query))) { _, query in query } }
            context.params = params

            let isTicketRequest = request.method == .post && request.uri.path.hasSuffix("/access/ticket")
            if !isTicketRequest { context.principal = try authenticator.authenticate(request) }
            return try await next(request, context)
        } catch let error as APIError {
            return error.response()
        } catch let error as HTTPError where error.status == .notFound {
            return APIError(501, "Method '\(request.method) \(request.uri.path)' not implemented").response()
        } catch let error as StoreError {
            if case .digestMismatch = error { return APIError(500, error.description).response() }
            return APIError(500, error.description).response()
        } catch {
            logger.error("\(request.method) \(request.uri.path): \(error)")
            return APIError(500, "\(error)").response()
        }
    }
}
