import Crypto
import Foundation
import NIOSSL
import SwiftASN1
import X509

/// The node's TLS identity: `DIR/pki/vireod.pem` (certificate chain, leaf first) and `DIR/pki/vireod.key`.
///
/// Like Proxmox's `pve-ssl.pem`, a self-signed certificate (ECDSA P-256, SHA-256, 10 years) is made
/// on first start for the host name, `localhost`, 127.0.0.1 and ::1. Replacing both files (any PEM
/// chain and key NIOSSL reads) and restarting vireod serves the replacement; nothing overwrites them.
public enum NodeCertificate {
    public static func certificatePath(dataDirectory: String) -> String { dataDirectory + "/pki/vireod.pem" }
    public static func keyPath(dataDirectory: String) -> String { dataDirectory + "/pki/vireod.key" }

    /// Loads the node's certificate and key, creating a self-signed pair when neither exists.
    static func serverConfiguration(dataDirectory: String, node: String) throws -> (TLSConfiguration, fingerprint: String, created: Bool) {
        let certificatePath = certificatePath(dataDirectory: dataDirectory), keyPath = keyPath(dataDirectory: dataDirectory)
        let fileManager = FileManager.default
        var created = false
        if !fileManager.fileExists(atPath: certificatePath) && !fileManager.fileExists(atPath: keyPath) {
            try fileManager.createDirectory(atPath: dataDirectory + "/pki", withIntermediateDirectories: true,
                                            attributes: [.posixPermissions: 0o700])
            let (certificate, key) = try makeSelfSigned(node: node)
            guard fileManager.createFile(atPath: keyPath, contents: Data(key.utf8), attributes: [.posixPermissions: 0o600]),
                  fileManager.createFile(atPath: certificatePath, contents: Data(certificate.utf8), attributes: [.posixPermissions: 0o644]) else {
                throw APIError(500, "cannot write \(certificatePath) and \(keyPath)")
            }
            created = true
        }
        let chain: [NIOSSLCertificate], key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw APIError(500, "cannot load the TLS certificate \(certificatePath) and key \(keyPath): \(error)")
        }
        guard let leaf = chain.first else { throw APIError(500, "\(certificatePath) holds no certificate") }
        let configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        return (configuration, try fingerprint(der: leaf.toDERBytes()), created)
    }

    /// A self-signed server certificate and its key, both PEM.
    static func makeSelfSigned(node: String, now: Date = Date()) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("Vireo")
            CommonName(node)
        }
        var names: [GeneralName] = [.dnsName(node), .dnsName("localhost"),
                                    .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                                    .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1])))]
        let fqdn = ProcessInfo.processInfo.hostName
        if fqdn != node, !fqdn.isEmpty { names.append(.dnsName(fqdn)) }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: Certificate.PrivateKey(key))
        return (try certificate.serializeAsPEM().pemString + "\n", key.pemRepresentation + "\n")
    }

    /// SHA-256 over the DER certificate as colon-separated uppercase hex, the form Proxmox and
    /// `openssl x509 -noout -fingerprint -sha256` print (and `vireo --fingerprint` takes).
    public static func fingerprint(der: [UInt8]) -> String {
        SHA256.hash(data: der).map { String(format: "%02X", $0) }.joined(separator: ":")
    }

    /// The fingerprint of the first certificate in a PEM file.
    public static func fingerprint(pemFile: String) throws -> String {
        guard let leaf = try NIOSSLCertificate.fromPEMFile(pemFile).first else { throw APIError(500, "\(pemFile) holds no certificate") }
        return fingerprint(der: try leaf.toDERBytes())
    }
}
