import Foundation
import Hummingbird

/// An API failure in Proxmox's shape: the status code, a one-line message that is also the HTTP
/// reason phrase, and per-parameter `errors` (for 400). Mapped to HTTP only here, at the edge.
struct APIError: Error, CustomStringConvertible {
    var status: Int
    var message: String
    var errors: [String: String]?

    init(_ status: Int, _ message: String, errors: [String: String]? = nil) {
        self.status = status; self.message = message; self.errors = errors
    }

    static func parameters(_ errors: [String: String]) -> APIError {
        APIError(400, "Parameter verification failed.", errors: errors)
    }

    static let noTicket = APIError(401, "No ticket")
    static let authenticationFailure = APIError(401, "authentication failure")
    static let invalidCSRF = APIError(401, "Permission denied - invalid csrf token")

    static func permission(_ path: String, _ privilege: String) -> APIError {
        APIError(403, "Permission check failed (\(path), \(privilege))")
    }

    var description: String { message }

    func response() -> Response {
        var body: [String: Any] = ["data": NSNull(), "message": message + "\n"]
        if let errors { body["errors"] = errors }
        let phrase = message.replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
        return jsonResponse(body, status: HTTPResponse.Status(code: status, reasonPhrase: phrase))
    }
}

/// A JSON response from Foundation values.
func jsonResponse(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .fragmentsAllowed])) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json;charset=UTF-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}

/// `{"data": value}`: every 2xx body.
func envelope(_ value: Any?) -> Response {
    jsonResponse(["data": value ?? NSNull()])
}

/// The request context: merged parameters (query over body) and the authenticated principal.
struct APIContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var params: [String: String] = [:]
    var principal: Principal?

    init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }

    /// Bodies are small forms; anything larger is refused with 413.
    var maxUploadSize: Int { 256 * 1024 }

    func require(_ privilege: String, on path: String) throws {
        guard let principal, principal.may(privilege, on: path) else { throw APIError.permission(path, privilege) }
    }

    var user: String {
        guard let principal else { return "nobody@pve" }
        return principal.tokenid.map { "\(principal.userid)!\($0)" } ?? principal.userid
    }
}

/// Decodes `application/x-www-form-urlencoded` (also used for query strings): `+` is a space,
/// `%XX` escapes; a repeated key keeps its last value.
func decodeForm(_ text: Substring) -> [String: String] {
    var result: [String: String] = [:]
    for pair in text.split(separator: "&") where !pair.isEmpty {
        let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        func decode(_ part: Substring) -> String {
            let spaced = part.replacingOccurrences(of: "+", with: " ")
            return spaced.removingPercentEncoding ?? spaced
        }
        result[decode(parts[0])] = parts.count > 1 ? decode(parts[1]) : ""
    }
    return result
}

/// Proxmox booleans: only `0` and `1`, as PVE (clients must convert Python's True/False).
func parseBool(_ text: String) -> Bool? {
    switch text {
    case "1": true
    case "0": false
    default: nil
    }
}
