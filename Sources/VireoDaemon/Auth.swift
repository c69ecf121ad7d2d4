import Crypto
import Foundation

func sha1Hex(_ bytes: [UInt8]) -> String {
    Insecure.SHA1.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

func sha256Hex(_ text: String) -> String {
    SHA256.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
}

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

/// Compares without an early exit, so timing does not reveal how much of a secret matched.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
}

/// Slow salted password hashes: PBKDF2-HMAC-SHA256 (RFC 8018 §5.2), stored as
/// `pbkdf2-sha256$ITERATIONS$SALT_B64$KEY_B64`.
enum PasswordHash {
    /// 100 000 rounds; `$VIREO_PASSWORD_ROUNDS` lowers it for test daemons (debug builds are slow).
    /// Verification always uses the rounds stored in the hash.
    static var iterations: Int {
        ProcessInfo.processInfo.environment["VIREO_PASSWORD_ROUNDS"].flatMap { Int($0) }.map { max(1, $0) } ?? 100_000
    }

    static func make(_ password: String, iterations: Int = iterations) -> String {
        let salt = randomBytes(16)
        let key = pbkdf2(password: Array(password.utf8), salt: salt, iterations: iterations)
        return "pbkdf2-sha256$\(iterations)$\(Data(salt).base64EncodedString())$\(Data(key).base64EncodedString())"
    }

    static func verify(_ password: String, against stored: String) -> Bool {
        let parts = stored.split(separator: "$").map(String.init)
        guard parts.count == 4, parts[0] == "pbkdf2-sha256", let iterations = Int(parts[1]), iterations > 0,
              let salt = Data(base64Encoded: parts[2]), let expected = Data(base64Encoded: parts[3]) else { return false }
        let key = pbkdf2(password: Array(password.utf8), salt: Array(salt), iterations: iterations)
        return constantTimeEqual(key, Array(expected))
    }

    /// One 32-byte block of PBKDF2 (dkLen = hLen): U1 = PRF(P, S || INT(1)), Ui = PRF(P, Ui-1), T = U1 ^ … ^ Uc.
    static func pbkdf2(password: [UInt8], salt: [UInt8], iterations: Int) -> [UInt8] {
        let key = SymmetricKey(data: password)
        var block = Array(HMAC<SHA256>.authenticationCode(for: salt + [0, 0, 0, 1], using: key))
        var result = block
        for _ in 1..<iterations {
            block = Array(HMAC<SHA256>.authenticationCode(for: block, using: key))
            for index in 0..<result.count { result[index] ^= block[index] }
        }
        return result
    }
}

/// Who is calling: a user with a ticket, or an API token, with the ACL entries naming either.
struct Principal: Sendable, Equatable {
    var userid: String
    var tokenid: String?
    var privsep: Bool
    /// The user's entries and, for a token, the token's.
    var acl: [ACLEntry] = []

    /// As PVE: root@pam holds every privilege everywhere; a user has what its ACL roles grant on the
    /// path; a token without privilege separation acts as its user, one with it gets the
    /// intersection of its user's privileges and its own ACL roles.
    func privileges(on path: String) -> Set<String> {
        var privileges = userid == "root@pam"
            ? Privileges.allSet
            : Privileges.privileges(ofRoles: Privileges.roles(acl.filter { $0.kind == .user && $0.ugid == userid }, on: path))
        if let tokenid, privsep {
            let own = acl.filter { $0.kind == .token && $0.ugid == "\(userid)!\(tokenid)" }
            privileges.formIntersection(Privileges.privileges(ofRoles: Privileges.roles(own, on: path)))
        }
        return privileges
    }

    func may(_ privilege: String, on path: String) -> Bool {
        privileges(on: path).contains(privilege)
    }
}

/// Signs and checks tickets and CSRF tokens with an HMAC key kept in the data directory.
///
/// Ticket: `PVE:<userid>:<8HEX time>::<base64 HMAC-SHA256>`; CSRF token: `<8HEX time>:<base64 HMAC>` over
/// `<8HEX>:<userid>`. Tickets live 2 hours (clients renew after 1).
struct TicketSigner: Sendable {
    private let keyBytes: Data
    private var key: SymmetricKey { SymmetricKey(data: keyBytes) }
    static let lifetime = 7200

    init(keyFile: String) throws {
        if let data = FileManager.default.contents(atPath: keyFile), data.count == 32 {
            keyBytes = data
        } else {
            let bytes = Data(randomBytes(32))
            _ = FileManager.default.createFile(atPath: keyFile, contents: bytes, attributes: [.posixPermissions: 0o600])
            keyBytes = bytes
        }
    }

    private func sign(_ text: String) -> String {
        Data(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: key)).base64EncodedString()
    }

    private static func hex8(_ value: Int) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    func ticket(for userid: String, now: Int = Int(Date().timeIntervalSince1970)) -> String {
        let plain = "PVE:\(userid):\(Self.hex8(now))"
        return plain + "::" + sign(plain)
    }

    func csrfToken(for userid: String, now: Int = Int(Date().timeIntervalSince1970)) -> String {
        let stamp = Self.hex8(now)
        return stamp + ":" + sign("\(stamp):\(userid)")
    }

    /// The user a valid, unexpired ticket names; nil otherwise.
    func verifyTicket(_ ticket: String, now: Int = Int(Date().timeIntervalSince1970)) -> String? {
        guard let separator = ticket.range(of: "::") else { return nil }
        let plain = String(ticket[..<separator.lowerBound]), signature = String(ticket[separator.upperBound...])
        let parts = plain.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "PVE", let time = Int(parts[2], radix: 16),
              constantTimeEqual(Array(sign(plain).utf8), Array(signature.utf8)),
              time <= now + 300, now - time < Self.lifetime else { return nil }
        return String(parts[1])
    }

    func verifyCSRF(_ token: String, userid: String, now: Int = Int(Date().timeIntervalSince1970)) -> Bool {
        let parts = token.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, let time = Int(parts[0], radix: 16), now - time < Self.lifetime, time <= now + 300 else { return false }
        return constantTimeEqual(Array(sign("\(parts[0]):\(userid)").utf8), Array(parts[1].utf8))
    }
}
