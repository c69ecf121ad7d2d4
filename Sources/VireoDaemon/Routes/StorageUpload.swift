import Crypto
import Foundation
import Hummingbird
import MultipartKit

/// `POST /nodes/{node}/storage/{storage}/upload`, PVE's multipart upload: form fields `content`
/// (`iso`, `vztmpl`, `import`, or Vireo's `kernel` for kernels and initrds), optional `filename`,
/// `checksum` + `checksum-algorithm` (md5, sha1, sha256, sha384, sha512), and the file
/// part (any field with a `filename=` in its Content-Disposition; PVE clients name it `filename`).
/// The body streams into a hidden temporary file in the pool (MultipartKit's streaming parser), is
/// checked, then renamed into place. Returns an `imgcopy` UPID. Needs `Datastore.AllocateTemplate`.
struct StorageUpload {
    let services: Services

    /// One streaming hash over the upload, for the algorithms PVE accepts.
    enum Digest {
        case md5(Insecure.MD5), sha1(Insecure.SHA1), sha256(SHA256), sha384(SHA384), sha512(SHA512)

        init?(_ name: String) {
            switch name {
            case "md5": self = .md5(Insecure.MD5())
            case "sha1": self = .sha1(Insecure.SHA1())
            case "sha256": self = .sha256(SHA256())
            case "sha384": self = .sha384(SHA384())
            case "sha512": self = .sha512(SHA512())
            default: return nil
            }
        }

        mutating func update(_ bytes: UnsafeRawBufferPointer) {
            switch self {
            case .md5(var hash): hash.update(bufferPointer: bytes); self = .md5(hash)
            case .sha1(var hash): hash.update(bufferPointer: bytes); self = .sha1(hash)
            case .sha256(var hash): hash.update(bufferPointer: bytes); self = .sha256(hash)
            case .sha384(var hash): hash.update(bufferPointer: bytes); self = .sha384(hash)
            case .sha512(var hash): hash.update(bufferPointer: bytes); self = .sha512(hash)
            }
        }

        var hex: String {
            let bytes: [UInt8] = switch self {
            case .md5(let hash): Array(hash.finalize())
            case .sha1(let hash): Array(hash.finalize())
            case .sha256(let hash): Array(hash.finalize())
            case .sha384(let hash): Array(hash.finalize())
            case .sha512(let hash): Array(hash.finalize())
            }
            return bytes.map { String(format: "%02x", $0) }.joined()
        }
    }

    /// The state of one streamed multipart body.
    final class Receiver {
        var fields: [String: String] = [:]
        var fileName: String?
        var fileBytes = 0
        var partName = ""
        var partFileName: String?
        var partText = ""
        var failure: APIError?
        let output: FileHandle

        init(output: FileHandle) { self.output = output }

        func header(_ name: String, _ value: String) {
            guard name.lowercased() == "content-disposition" else { return }
            for item in value.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                guard let equals = item.firstIndex(of: "=") else { continue }
                let key = item[..<equals].lowercased()
                var text = String(item[item.index(after: equals)...])
                if text.hasPrefix("\""), text.hasSuffix("\""), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
                if key == "name" { partName = text }
                if key == "filename" { partFileName = (text as NSString).lastPathComponent }
            }
        }

        func body(_ buffer: inout ByteBuffer) {
            guard failure == nil else { return }
            if partFileName != nil {
                buffer.withUnsafeReadableBytes { output.write(Data($0)) }
                fileBytes += buffer.readableBytes
            } else {
                partText += buffer.readString(length: buffer.readableBytes) ?? ""
                if partText.utf8.count > 4096 { failure = APIError(400, "form field '\(partName)' is too long") }
            }
        }

        func partComplete() {
            if let name = partFileName {
                if fileName != nil { failure = APIError(400, "only one file per upload") }
                fileName = name
            } else {
                fields[partName] = partText
            }
            partName = ""
            partFileName = nil
            partText = ""
        }
    }

    /// Hashes a file in 1 MiB reads.
    static func hash(_ path: String, into digest: inout Digest) throws -> String {
        guard let input = FileHandle(forReadingAtPath: path) else { throw APIError(500, "cannot read \(path)") }
        defer { try? input.close() }
        while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
            chunk.withUnsafeBytes { digest.update($0) }
        }
        return digest.hex
    }

    func upload(_ request: Request, _ context: APIContext) async throws -> Response {
        _ = try services.checkNode(context)
        let pool = try services.storage.pool(try context.parameters.require("storage"))
        try context.require("Datastore.AllocateTemplate", on: "/storage/\(pool.id)")
        let type = request.headers[.contentType] ?? ""
        guard let boundaryRange = type.range(of: "boundary=") else { throw APIError(400, "multipart/form-data without a boundary") }
        var boundary = String(type[boundaryRange.upperBound...].prefix { $0 != ";" })
        if boundary.hasPrefix("\""), boundary.hasSuffix("\""), boundary.count >= 2 { boundary = String(boundary.dropFirst().dropLast()) }

        let temporary = "\(pool.path)/.upload-\(UUID().uuidString)"
        guard FileManager.default.createFile(atPath: temporary, contents: nil, attributes: [.posixPermissions: 0o644]),
              let output = FileHandle(forWritingAtPath: temporary) else { throw APIError(500, "cannot create \(temporary)") }
        var keep = false
        defer {
            try? output.close()
            if !keep { try? FileManager.default.removeItem(atPath: temporary) }
        }
        let receiver = Receiver(output: output)
        let parser = MultipartParser(boundary: boundary)
        parser.onHeader = { receiver.header($0, $1) }
        parser.onBody = { receiver.body(&$0) }
        parser.onPartComplete = { receiver.partComplete() }
        do {
            for try await buffer in request.body {
                try parser.execute(buffer)
                if let failure = receiver.failure { throw failure }
            }
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError(400, "malformed multipart body: \(error)")
        }
        try output.synchronize()

        var fields = receiver.fields
        for (key, value) in context.params where fields[key] == nil { fields[key] = value }
        var errors: [String: String] = [:]
        let allowed: [ContentType] = [.iso, .vztmpl, .import, .kernel]
        let content = fields["content"].flatMap(ContentType.init(rawValue:))
        if content == nil || !allowed.contains(content!) {
            errors["content"] = "value '\(fields["content"] ?? "")' does not have a value in the enumeration 'iso, vztmpl, import, kernel'"
        }
        guard let original = receiver.fileName else { throw APIError.parameters(["filename": "no file part in the upload"]) }
        // PVE's `filename` field (when a text field) names the file; else the part's file name.
        let name = fields["filename"].flatMap { $0.isEmpty ? nil : $0 } ?? original
        if !VolumeID.validName(name) { errors["filename"] = "invalid file name '\(name)'" }
        if let content, !content.suffixes.isEmpty, !content.suffixes.contains(where: { name.lowercased().hasSuffix($0) }) {
            errors["filename"] = "wrong file extension for content '\(content.rawValue)' (\(content.suffixes.joined(separator: ", ")))"
        }
        if let expected = fields["checksum"] {
            let algorithm = fields["checksum-algorithm"] ?? ""
            if var digest = Digest(algorithm) {
                let actual = try Self.hash(temporary, into: &digest)
                if actual != expected.lowercased() { errors["checksum"] = "checksum mismatch: got '\(actual)' != expected '\(expected)'" }
            } else {
                errors["checksum-algorithm"] = "value '\(algorithm)' does not have a value in the enumeration 'md5, sha1, sha256, sha384, sha512'"
            }
        }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        let volume = VolumeID(storage: pool.id, content: content!, name: name)
        let destination = pool.path(of: volume)
        guard !FileManager.default.fileExists(atPath: destination) else { throw APIError(500, "volume '\(volume)' already exists") }
        guard rename(temporary, destination) == 0 else { throw APIError(500, "cannot move the upload to \(destination): errno \(errno)") }
        keep = true
        let bytes = receiver.fileBytes
        let upid = try services.tasks.start(type: "imgcopy", id: "", user: context.user) { log in
            log("starting file import from: \(original)")
            log("target file: \(destination)")
            log("file size is: \(bytes)")
            log("stored '\(volume)'")
        }
        return envelope(upid)
    }
}
