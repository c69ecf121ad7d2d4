import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A directory of build outputs keyed by a hash of their inputs: `<root>/<kind>-<key>/`.
/// An entry is built in a temporary folder and renamed into place, so a crash never leaves half an entry.
public struct ArtifactCache: Sendable {
    /// Bump when the layout of any artifact changes, so old cache entries are not reused.
    public static let formatVersion = "vireo-lab-format-4"

    public let root: String

    public init(root: String) { self.root = root }

    public struct Entry: Sendable {
        public var kind: String
        public var directory: String
        public var reused: Bool
        public var seconds: Double
    }

    /// Returns the entry for `kind` and `manifest`, building it with `build(tempDirectory)` if missing.
    public func entry(kind: String, manifest: CacheManifest, build: (String) throws -> Void) throws -> Entry {
        let key = manifest.key
        let final = "\(root)/\(kind)-\(key.prefix(24))"
        let fm = FileManager.default
        if fm.fileExists(atPath: final + "/.complete") {
            // Mark it as recently used, for `prune`.
            try? fm.setAttributes([.modificationDate: Date()], ofItemAtPath: final + "/.complete")
            return Entry(kind: kind, directory: final, reused: true, seconds: 0)
        }
        let start = Date()
        try fm.createDirectory(atPath: root, withIntermediateDirectories: true)
        let temp = "\(final).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? fm.removeItem(atPath: temp)
        try fm.createDirectory(atPath: temp, withIntermediateDirectories: true)
        do {
            try build(temp)
            try manifest.text.write(toFile: temp + "/.manifest", atomically: true, encoding: .utf8)
            try "".write(toFile: temp + "/.complete", atomically: true, encoding: .utf8)
            // rename(2) refuses to replace a non-empty directory: if another process finished the same
            // entry first, keep theirs (identical inputs) and drop ours. Never delete a published entry.
            if rename(temp, final) != 0 {
                guard fm.fileExists(atPath: final + "/.complete") else {
                    throw LabError.io("cannot publish cache entry \(final): errno \(errno)")
                }
                try? fm.removeItem(atPath: temp)
            }
        } catch {
            try? fm.removeItem(atPath: temp)
            throw error
        }
        prune(kind: kind, keeping: keepPerKind)
        return Entry(kind: kind, directory: final, reused: false, seconds: Date().timeIntervalSince(start))
    }

    /// How many entries of one kind survive a new build (the most recently used ones).
    public var keepPerKind = 6

    /// Removes all but the `keeping` most recently used entries of `kind`.
    public func prune(kind: String, keeping: Int) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: root) else { return }
        let entries = names.filter { $0.hasPrefix(kind + "-") && !$0.contains(".tmp-") }.map { name -> (String, Date) in
            let used = (try? fm.attributesOfItem(atPath: "\(root)/\(name)/.complete"))?[.modificationDate] as? Date
            return (name, used ?? .distantPast)
        }.sorted { $0.1 > $1.1 }
        for (name, _) in entries.dropFirst(keeping) { try? fm.removeItem(atPath: "\(root)/\(name)") }
    }
}

/// The inputs of one artifact, as text lines; the cache key is their SHA-256.
/// Big host files (kernel, QEMU, libraries) are identified by path, size and mtime; small files
/// (scenario scripts, assembly) by their content.
public struct CacheManifest: Sendable {
    public private(set) var lines: [String] = ["format \(ArtifactCache.formatVersion)"]

    public init() {}

    public mutating func add(_ label: String, _ value: String) { lines.append("\(label) \(value)") }

    public mutating func addFileStat(_ path: String) {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
        let mtime = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        lines.append("stat \(path) \(size) \(mtime)")
    }

    public mutating func addFileContent(_ path: String, label: String? = nil) {
        let bytes = FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []
        lines.append("content \(label ?? path) \(SHA256.hex(bytes))")
    }

    public var text: String { lines.joined(separator: "\n") + "\n" }
    public var key: String { SHA256.hex(text) }
}
