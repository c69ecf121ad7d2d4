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

/// A JSON response from Swift values (`[String: Any]`, `[Any]`, String, Int, Double, Bool, nil).
func jsonResponse(_ object: Any, status: HTTPResponse.Status = .ok) -> Response {
    var buffer = ByteBuffer()
    buffer.reserveCapacity(256)
    JSONText.write(object, to: &buffer)
    return Response(status: status, headers: [.contentType: "application/json;charset=UTF-8"], body: ResponseBody(byteBuffer: buffer))
}

/// Writes JSON text (RFC 8259) straight from the Swift values the routes build. Foundation's
/// JSONSerialization bridges every dictionary to NSDictionary first, which made a 1,000-VM list
/// spend most of its time converting (and `.sortedKeys` compared keys through ICU collation).
/// Key order is unspecified, as in PVE.
enum JSONText {
    static func write(_ value: Any?, to buffer: inout ByteBuffer) {
        switch value {
        case nil: buffer.writeStaticString("null")
        case let text as String: writeString(text, to: &buffer)
        case let number as Int: buffer.writeString(String(number))
        case let flag as Bool: buffer.writeStaticString(flag ? "true" : "false")
        case let number as Double: writeNumber(number, to: &buffer)
        case let object as [String: Any]:
            buffer.writeInteger(UInt8(ascii: "{"))
            var first = true
            for (key, element) in object {
                if !first { buffer.writeInteger(UInt8(ascii: ",")) }
                first = false
                writeString(key, to: &buffer)
                buffer.writeInteger(UInt8(ascii: ":"))
                write(element, to: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "}"))
        case let array as [Any]:
            buffer.writeInteger(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
                write(element, to: &buffer)
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        // Class casts last: testing a Swift dictionary against NSNull bridges it to NSDictionary first.
        case is NSNull: buffer.writeStaticString("null")
        case let number as UInt64: buffer.writeString(String(number))
        case let number as Int32: buffer.writeString(String(number))
        case let number as NSNumber: buffer.writeString(number.stringValue)
        default:
            // An Optional boxed in Any: write what it wraps, or null.
            let mirror = Mirror(reflecting: value!)
            if mirror.displayStyle == .optional {
                write(mirror.children.first?.value, to: &buffer)
            } else {
                writeString("\(value!)", to: &buffer)
            }
        }
    }

    /// A whole number is written without a fraction (`0`, not `0.0`); a non-finite one as 0.
    static func writeNumber(_ number: Double, to buffer: inout ByteBuffer) {
        buffer.writeString(number.isFinite ? (number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : String(number)) : "0")
    }

    /// `,"key":value` for each entry: members after those a typed writer wrote.
    static func writeMoreMembers(_ object: [String: Any], to buffer: inout ByteBuffer) {
        for (key, value) in object {
            buffer.writeInteger(UInt8(ascii: ","))
            writeString(key, to: &buffer)
            buffer.writeInteger(UInt8(ascii: ":"))
            write(value, to: &buffer)
        }
    }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// A string with `"`, `\\` and control characters escaped (RFC 8259 §7); other UTF-8 as is.
    static func writeString(_ text: String, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        defer { buffer.writeInteger(UInt8(ascii: "\"")) }
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            buffer.writeString(text)
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case 0x0A: buffer.writeStaticString("\\n")
            case 0x0D: buffer.writeStaticString("\\r")
            case 0x09: buffer.writeStaticString("\\t")
            case 0..<0x20: buffer.writeBytes([UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 15)]])
            default: buffer.writeInteger(byte)
            }
        }
    }
}

/// `{"data": value}`: every 2xx body.
func envelope(_ value: Any?) -> Response {
    jsonResponse(["data": value ?? NSNull()])
}

/// `{"data": …}` with the value written by `writeData` (typed writers, for large lists).
func envelope(reserving capacity: Int = 256, _ writeData: (inout ByteBuffer) -> Void) -> Response {
    var buffer = ByteBuffer()
    buffer.reserveCapacity(capacity)
    buffer.writeStaticString("{\"data\":")
    writeData(&buffer)
    buffer.writeInteger(UInt8(ascii: "}"))
    return Response(status: .ok, headers: [.contentType: "application/json;charset=UTF-8"], body: ResponseBody(byteBuffer: buffer))
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
