import Foundation
import Testing
import VireoDaemon

/// vireod serves HTTPS by default with a self-signed certificate it makes on first start; the
/// `vireo` CLI pins it by fingerprint (or skips the check with --insecure); the files are replaceable.
@Suite(.serialized) struct TLSTests {
    func vireo(_ daemon: DaemonHarness, _ arguments: [String]) throws -> (status: Int32, output: String) {
        try runProgram(DaemonHarness.vireo, ["api", "get", "/version", "--url", "https://\(daemon.hostPort)",
                                             "--password", DaemonHarness.password, "--output", "json"] + arguments)
    }

    @Test func selfSignedCertificatePinnedByFingerprint() async throws {
        let daemon = try DaemonHarness(tls: true)
        try await daemon.start()
        defer { daemon.shutdown() }
        let certificate = NodeCertificate.certificatePath(dataDirectory: daemon.dataDirectory)
        let key = NodeCertificate.keyPath(dataDirectory: daemon.dataDirectory)
        let keyMode = try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
        let fingerprint = try NodeCertificate.fingerprint(pemFile: certificate)
        #expect(daemon.daemonLog().contains("SHA-256 fingerprint \(fingerprint)"))

        let pinned = try vireo(daemon, ["--fingerprint", fingerprint])
        #expect(pinned.status == 0 && pinned.output.contains("\"version\" : \"8.2.4\""), "\(pinned.output)")
        // Lowercase without colons is the same fingerprint.
        let compact = try vireo(daemon, ["--fingerprint", fingerprint.replacingOccurrences(of: ":", with: "").lowercased()])
        #expect(compact.status == 0, "\(compact.output)")
        let insecure = try vireo(daemon, ["--insecure"])
        #expect(insecure.status == 0, "\(insecure.output)")

        // The system trust store does not know the node: the error says what to do.
        let untrusted = try vireo(daemon, [])
        #expect(untrusted.status != 0)
        #expect(untrusted.output.contains("--fingerprint") && untrusted.output.contains("--insecure"), "\(untrusted.output)")
        let wrong = try vireo(daemon, ["--fingerprint", String(repeating: "AB:", count: 31) + "AB"])
        #expect(wrong.status != 0 && wrong.output.contains("fingerprint"), "\(wrong.output)")
        #expect(try vireo(daemon, ["--fingerprint", "12:34"]).status != 0)

        // curl trusts the certificate as its own CA for 127.0.0.1 (the SAN covers it).
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") {
            let curl = try runProgram("/usr/bin/curl", ["-sS", "--cacert", certificate, "https://\(daemon.hostPort)/api2/json/version"])
            #expect(curl.status == 0 && curl.output.contains("No ticket"), "\(curl.output)")
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")))
    func aReplacedCertificateIsServedAfterRestart() async throws {
        let daemon = try DaemonHarness(tls: true)
        try await daemon.start()
        defer { daemon.shutdown() }
        let certificate = NodeCertificate.certificatePath(dataDirectory: daemon.dataDirectory)
        let key = NodeCertificate.keyPath(dataDirectory: daemon.dataDirectory)
        let original = try NodeCertificate.fingerprint(pemFile: certificate)
        try await daemon.kill9()

        let made = try runProgram("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=replaced",
                                                       "-keyout", key, "-out", certificate])
        try #require(made.status == 0, "\(made.output)")
        let replaced = try NodeCertificate.fingerprint(pemFile: certificate)
        #expect(replaced != original)
        try await daemon.start()
        #expect(try vireo(daemon, ["--fingerprint", replaced]).status == 0)
        #expect(try vireo(daemon, ["--fingerprint", original]).status != 0)
        #expect(try NodeCertificate.fingerprint(pemFile: certificate) == replaced)  // not overwritten
    }
}
