import Foundation

/// Writes and reads "newc" (SVR4, magic 070701) cpio archives, the format the Linux kernel unpacks as initramfs.
///
/// Layout per entry: the 6-byte magic, 13 fields of 8 hex digits (ino, mode, uid, gid, nlink, mtime, filesize,
/// devmajor, devminor, rdevmajor, rdevminor, namesize, check), the name and a NUL padded to a multiple of 4,
/// then the data padded to a multiple of 4. The archive ends with an entry named `TRAILER!!!`.
public struct CpioArchive: Sendable {
    public enum Content: Sendable, Equatable {
        case directory
        case bytes([UInt8])
        /// A file on the host, read (following symlinks) when the archive is written.
        case hostFile(String)
        case symlink(String)
        case characterDevice(major: UInt32, minor: UInt32)
    }

    public struct Entry: Sendable, Equatable {
        public var path: String
        public var mode: UInt32  // permission bits only
        public var content: Content
    }

    public private(set) var entries: [Entry] = []
    private var index: [String: Int] = [:]

    public init() {}

    /// Archive paths are relative ("bin/busybox"); a leading "/" is dropped.
    public static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") where part != "." && !part.isEmpty { parts.append(part) }
        return parts.joined(separator: "/")
    }

    public func contains(_ path: String) -> Bool { index[Self.normalize(path)] != nil }

    public mutating func addDirectory(_ path: String, mode: UInt32 = 0o755) {
        add(Entry(path: Self.normalize(path), mode: mode, content: .directory))
    }

    public mutating func addFile(_ path: String, bytes: [UInt8], mode: UInt32 = 0o644) {
        add(Entry(path: Self.normalize(path), mode: mode, content: .bytes(bytes)))
    }

    public mutating func addFile(_ path: String, text: String, mode: UInt32 = 0o644) {
        addFile(path, bytes: Array(text.utf8), mode: mode)
    }

    /// Adds a host file; `mode` defaults to the host file's permission bits.
    public mutating func addFile(_ path: String, from hostPath: String, mode: UInt32? = nil) throws {
        let attributes = try FileManager.default.attributesOfItem(atPath: hostPath)
        let hostMode = (attributes[.posixPermissions] as? NSNumber)?.uint32Value ?? 0o644
        add(Entry(path: Self.normalize(path), mode: mode ?? hostMode, content: .hostFile(hostPath)))
    }

    public mutating func addSymlink(_ path: String, target: String) {
        add(Entry(path: Self.normalize(path), mode: 0o777, content: .symlink(target)))
    }

    public mutating func addCharacterDevice(_ path: String, major: UInt32, minor: UInt32, mode: UInt32 = 0o600) {
        add(Entry(path: Self.normalize(path), mode: mode, content: .characterDevice(major: major, minor: minor)))
    }

    /// Adds every file and directory below `hostDirectory` under `path`.
    public mutating func addTree(_ path: String, from hostDirectory: String) throws {
        addDirectory(path)
        let fm = FileManager.default
        for name in try fm.contentsOfDirectory(atPath: hostDirectory).sorted() {
            let host = hostDirectory + "/" + name
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: host, isDirectory: &isDirectory) else { continue }
            if isDirectory.boolValue {
                try addTree(path + "/" + name, from: host)
            } else {
                try addFile(path + "/" + name, from: host)
            }
        }
    }

    /// Adding a path twice replaces the earlier entry; missing parent directories are created.
    private mutating func add(_ entry: Entry) {
        guard !entry.path.isEmpty else { return }
        let components = entry.path.split(separator: "/")
        if components.count > 1 {
            var parent = ""
            for component in components.dropLast() {
                parent = parent.isEmpty ? String(component) : parent + "/" + component
                if index[parent] == nil {
                    index[parent] = entries.count
                    entries.append(Entry(path: parent, mode: 0o755, content: .directory))
                }
            }
        }
        if let existing = index[entry.path] {
            if entry.content == .directory, entries[existing].content == .directory { return }
            entries[existing] = entry
        } else {
            index[entry.path] = entries.count
            entries.append(entry)
        }
    }

    // MARK: Writing

    public func write(to path: String) throws {
        FileManager.default.createFile(atPath: path, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: path) else { throw LabError.io("cannot write \(path)") }
        defer { try? handle.close() }
        var inode: UInt32 = 1
        for entry in entries {
            let data: [UInt8]
            var typeBits: UInt32
            var rdev: (UInt32, UInt32) = (0, 0)
            switch entry.content {
            case .directory:
                data = []; typeBits = 0o040000
            case .bytes(let bytes):
                data = bytes; typeBits = 0o100000
            case .hostFile(let host):
                guard let contents = FileManager.default.contents(atPath: host) else {
                    throw LabError.io("cannot read \(host)")
                }
                data = [UInt8](contents); typeBits = 0o100000
            case .symlink(let target):
                data = Array(target.utf8); typeBits = 0o120000
            case .characterDevice(let major, let minor):
                data = []; typeBits = 0o020000; rdev = (major, minor)
            }
            let header = Self.header(
                name: entry.path, inode: inode, mode: typeBits | (entry.mode & 0o7777),
                nlink: entry.content == .directory ? 2 : 1, size: UInt32(data.count), rdev: rdev)
            try handle.write(contentsOf: header)
            try handle.write(contentsOf: data)
            try handle.write(contentsOf: [UInt8](repeating: 0, count: Self.pad(data.count)))
            inode += 1
        }
        let trailer = Self.header(name: "TRAILER!!!", inode: 0, mode: 0, nlink: 1, size: 0, rdev: (0, 0))
        try handle.write(contentsOf: trailer)
    }

    static func pad(_ count: Int) -> Int { (4 - count % 4) % 4 }

    static func header(name: String, inode: UInt32, mode: UInt32, nlink: UInt32, size: UInt32, rdev: (UInt32, UInt32)) -> [UInt8] {
        let nameBytes = Array(name.utf8) + [0]
        let fields: [UInt32] = [inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev.0, rdev.1, UInt32(nameBytes.count), 0]
        var out = Array("070701".utf8)
        for field in fields {
            var hex = String(field, radix: 16, uppercase: true)
            hex = String(repeating: "0", count: 8 - hex.count) + hex
            out += Array(hex.utf8)
        }
        out += nameBytes
        out += [UInt8](repeating: 0, count: pad(out.count))
        return out
    }

    // MARK: Reading (tests and inspection)

    public struct ParsedEntry: Sendable, Equatable {
        public var name: String
        public var mode: UInt32
        public var rdevMajor: UInt32
        public var rdevMinor: UInt32
        public var data: [UInt8]
    }

    /// Parses one or more concatenated newc archives (as the kernel accepts them).
    public static func parse(_ bytes: [UInt8]) throws -> [ParsedEntry] {
        var entries: [ParsedEntry] = []
        var offset = 0
        while offset + 110 <= bytes.count {
            if bytes[offset] == 0 { offset += 1; continue }  // padding between concatenated archives
            guard String(decoding: bytes[offset..<offset + 6], as: UTF8.self) == "070701" else {
                throw LabError.format("bad cpio magic at offset \(offset)")
            }
            var fields: [UInt32] = []
            for i in 0..<13 {
                let start = offset + 6 + i * 8
                guard let value = UInt32(String(decoding: bytes[start..<start + 8], as: UTF8.self), radix: 16) else {
                    throw LabError.format("bad cpio header field at offset \(start)")
                }
                fields.append(value)
            }
            let nameSize = Int(fields[11]), fileSize = Int(fields[6])
            let nameStart = offset + 110
            guard nameStart + nameSize <= bytes.count else { throw LabError.format("truncated cpio name") }
            let name = String(decoding: bytes[nameStart..<nameStart + nameSize - 1], as: UTF8.self)
            let dataStart = nameStart + nameSize + pad(110 + nameSize)
            guard dataStart + fileSize <= bytes.count else { throw LabError.format("truncated cpio data for \(name)") }
            offset = dataStart + fileSize + pad(fileSize)
            if name == "TRAILER!!!" { continue }
            entries.append(ParsedEntry(
                name: name, mode: fields[1], rdevMajor: fields[9], rdevMinor: fields[10],
                data: Array(bytes[dataStart..<dataStart + fileSize])))
        }
        return entries
    }
}
