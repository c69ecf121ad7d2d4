import ArgumentParser
import VireoSystem
import VireoQCOW2

#if canImport(Glibc)
import Glibc
#endif

/// `vireo img`: disk image tools with qemu-img's argument order, flags and exit codes.
struct ImgCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "img",
        abstract: "Create, inspect, check and convert disk images (qcow2, raw).",
        subcommands: [ImgCreate.self, ImgInfo.self, ImgCheck.self, ImgConvert.self, ImgSnapshot.self, ImgCommit.self,
                      ImgRebase.self, ImgResize.self, ImgMap.self, ImgBench.self, ImgIOScript.self])
}

/// Prints an image error the way the tools report failures, and exits 1.
func imgFail(_ error: any Error) -> ExitCode {
    let text = "vireo img: \(error)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    return ExitCode(1)
}

/// Sizes as qemu-img accepts them: bytes, or a number with k/M/G/T/P/E (powers of 1024).
func parseImageSize(_ text: String) -> UInt64? {
    var digits = Substring(text)
    var shift: UInt64 = 0
    if let last = digits.last, !last.isNumber {
        guard let index = "BKMGTPE".firstIndex(of: Character(last.uppercased())) else { return nil }
        shift = 10 * UInt64("BKMGTPE".distance(from: "BKMGTPE".startIndex, to: index))
        digits = digits.dropLast()
    }
    guard let value = UInt64(digits), value <= UInt64.max >> shift else { return nil }
    return value << shift
}

/// qemu-img's human sizes: "64 MiB", "1.5 GiB", "196 KiB".
func humanSize(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var unit = 0
    var value = Double(bytes)
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let rounded = (value * 100).rounded() / 100
    var text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    if text.hasSuffix(".0") { text.removeLast(2) }
    return "\(text) \(units[unit])"
}

func jsonString(_ text: String) -> String { jsonQuoted(text) }

func parseFormat(_ text: String?) throws -> ImageFormat? {
    guard let text else { return nil }
    guard let format = ImageFormat(rawValue: text) else {
        throw ValidationError("unknown image format '\(text)' (qcow2 or raw)")
    }
    return format
}

/// The `-o` options qemu-img understands that apply to qcow2 and raw.
struct CreationOptions {
    var clusterSize = 65536
    var refcountBits = 16
    var version: UInt32 = 3
    var lazyRefcounts = false
    var backingFile: String?
    var backingFormat: String?
    var size: UInt64?
    var preallocation = Preallocation.off

    init(_ lists: [String]) throws {
        for list in lists {
            for item in list.split(separator: ",") where !item.isEmpty {
                let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
                let key = parts[0]
                let value = parts.count > 1 ? parts[1] : ""
                switch key {
                case "cluster_size":
                    guard let size = parseImageSize(value), size <= 2 << 20 else { throw ValidationError("invalid cluster_size '\(value)'") }
                    clusterSize = Int(size)
                case "refcount_bits":
                    guard let bits = Int(value) else { throw ValidationError("invalid refcount_bits '\(value)'") }
                    refcountBits = bits
                case "compat":
                    switch value {
                    case "0.10", "v2": version = 2
                    case "1.1", "v3": version = 3
                    default: throw ValidationError("invalid compat '\(value)' (0.10 or 1.1)")
                    }
                case "lazy_refcounts":
                    lazyRefcounts = value == "on" || value == "true"
                case "preallocation":
                    guard let mode = Preallocation(rawValue: value) else { throw ValidationError("invalid preallocation '\(value)' (off, metadata, full)") }
                    preallocation = mode
                case "backing_file": backingFile = value
                case "backing_fmt": backingFormat = value
                case "size":
                    guard let size = parseImageSize(value) else { throw ValidationError("invalid size '\(value)'") }
                    self.size = size
                default:
                    throw ValidationError("unsupported option '\(key)'")
                }
            }
        }
    }
}

struct ImgCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create", abstract: "Create an image: create [-f fmt] [-o options] [-b backing -F fmt] FILE [SIZE]")

    @Option(name: .customShort("f"), help: "Image format: qcow2 (default) or raw.") var format: String = "qcow2"
    @Option(name: .customShort("o"), help: "Options: cluster_size, refcount_bits, compat, lazy_refcounts, backing_file, backing_fmt, size.")
    var options: [String] = []
    @Option(name: .customShort("b"), help: "Backing file (relative names are relative to FILE's directory).") var backing: String?
    @Option(name: .customShort("F"), help: "Backing file format.") var backingFormat: String?
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "The image to create.") var file: String
    @Argument(help: "Virtual size: bytes or with k, M, G, T suffix; defaults to the backing file's size.") var size: String?

    func run() throws {
        let creation = try CreationOptions(options)
        guard let format = try parseFormat(format) else { return }
        var bytes = creation.size
        if let size {
            guard let parsed = parseImageSize(size) else { throw ValidationError("invalid image size '\(size)'") }
            bytes = parsed
        }
        let backingFile = backing ?? creation.backingFile
        let backingFormat = try parseFormat(self.backingFormat ?? creation.backingFormat)
        do {
            switch format {
            case .qcow2:
                try QCOW2Image.create(file, size: bytes, clusterSize: creation.clusterSize, backing: backingFile,
                                      backingFormat: backingFormat, refcountBits: creation.refcountBits,
                                      version: creation.version, lazyRefcounts: creation.lazyRefcounts,
                                      preallocation: creation.preallocation)
            case .raw:
                try createImage(file, format: .raw, size: bytes, backing: backingFile)
            }
            if !quiet {
                let image = try openImage(file, options: ImageOptions(format: format))
                var line = "Formatting '\(file)', fmt=\(format.rawValue)"
                if format == .qcow2 { line += " cluster_size=\(creation.clusterSize)" }
                if let backingFile { line += " backing_file=\(backingFile)" }
                print(line + " size=\(image.size)")
                try image.close()
            }
        } catch {
            throw imgFail(error)
        }
    }
}

struct ImgInfo: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "info", abstract: "Show information about an image.")

    @Option(name: .customShort("f"), help: "Image format (probed when omitted).") var format: String?
    @Option(name: .long, help: "human (default) or json.") var output: String = "human"
    @Flag(name: .customShort("U"), help: "Force share (accepted for compatibility).") var forceShare = false
    @Argument(help: "The image.") var file: String

    func run() throws {
        let format = try parseFormat(self.format)
        do {
            let image = try openImage(file, options: ImageOptions(format: format))
            let status = try PosixHostFile(path: file, writable: false).status()
            let qcow = image as? QCOW2Image
            if output == "json" {
                var fields: [String] = [
                    "\"virtual-size\": \(image.size)",
                    "\"filename\": \(jsonString(file))",
                    "\"format\": \(jsonString(image.format.rawValue))",
                    "\"actual-size\": \(status.allocatedBytes)",
                ]
                if let qcow {
                    let header = qcow.header
                    fields.insert("\"cluster-size\": \(header.clusterSize)", at: 2)
                    if let name = header.backingFile {
                        fields.append("\"backing-filename\": \(jsonString(name))")
                        fields.append("\"full-backing-filename\": \(jsonString(qcow.backingPath ?? name))")
                        if let backingFormat = header.backingFormat {
                            fields.append("\"backing-filename-format\": \(jsonString(backingFormat))")
                        }
                    }
                    var data = ["\"compat\": \(jsonString(header.version == 3 ? "1.1" : "0.10"))"]
                    if header.version == 3 {
                        data += [
                            "\"compression-type\": \(jsonString(header.compressionType == 1 ? "zstd" : "zlib"))",
                            "\"lazy-refcounts\": \(header.lazyRefcounts)",
                            "\"refcount-bits\": \(header.refcountBits)",
                            "\"corrupt\": \(header.isCorrupt)",
                            "\"extended-l2\": false",
                        ]
                    }
                    fields.append("\"format-specific\": {\n        \"type\": \"qcow2\",\n        \"data\": {\n            "
                        + data.joined(separator: ",\n            ") + "\n        }\n    }")
                    fields.append("\"dirty-flag\": \(header.isDirty)")
                }
                print("{\n    " + fields.joined(separator: ",\n    ") + "\n}")
            } else {
                print("image: \(file)")
                print("file format: \(image.format.rawValue)")
                print("virtual size: \(humanSize(image.size)) (\(image.size) bytes)")
                print("disk size: \(humanSize(status.allocatedBytes))")
                if let qcow {
                    let header = qcow.header
                    print("cluster_size: \(header.clusterSize)")
                    if let name = header.backingFile {
                        let full = qcow.backingPath ?? name
                        print("backing file: \(name)" + (full != name ? " (actual path: \(full))" : ""))
                        if let backingFormat = header.backingFormat { print("backing file format: \(backingFormat)") }
                    }
                    print("Format specific information:")
                    print("    compat: \(header.version == 3 ? "1.1" : "0.10")")
                    if header.version == 3 {
                        print("    compression type: \(header.compressionType == 1 ? "zstd" : "zlib")")
                        print("    lazy refcounts: \(header.lazyRefcounts)")
                        print("    refcount bits: \(header.refcountBits)")
                        print("    corrupt: \(header.isCorrupt)")
                        print("    extended l2: false")
                    }
                }
            }
            try image.close()
        } catch {
            throw imgFail(error)
        }
    }
}

struct ImgCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Check a qcow2 image's consistency. Exit status: 0 clean, 1 check failed, 2 corruptions, 3 leaks only.")

    @Option(name: .customShort("f"), help: "Image format (probed when omitted).") var format: String?
    @Option(name: .long, help: "human (default) or json.") var output: String = "human"
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Flag(name: .customShort("U"), help: "Force share (accepted for compatibility).") var forceShare = false
    @Option(name: [.customShort("r"), .customLong("repair")], help: "Repair: leaks (leaked clusters), or all (also refcount corruptions, rebuilding the refcounts).") var repair: String?
    @Argument(help: "The image.") var file: String

    func run() throws {
        let format = try parseFormat(self.format)
        let mode = try repair.map { text throws -> RepairMode in
            guard let mode = RepairMode(rawValue: text) else { throw ValidationError("invalid repair mode '\(text)' (leaks or all)") }
            return mode
        }
        var report: CheckReport
        do {
            let image = try openImage(file, options: ImageOptions(writable: mode != nil, format: format))
            guard let qcow = image as? QCOW2Image else {
                print("This image format does not support checks")
                throw ExitCode(63)
            }
            if let mode {
                let result = try qcow.repair(mode)
                report = try qcow.check()
                if result.leaksFixed + result.corruptionsFixed > 0 && !quiet && output != "json" {
                    for line in result.before.messages {
                        if line.hasPrefix("Leaked ") {
                            print(line)
                            print("Repairing " + line.dropFirst("Leaked ".count))
                        } else if result.corruptionsFixed > 0, line.hasPrefix("ERROR ") {
                            print("Repairing " + line.dropFirst("ERROR ".count))
                        }
                    }
                    print("The following inconsistencies were found and repaired:\n\n    \(result.leaksFixed) leaked clusters\n    \(result.corruptionsFixed) corruptions\n")
                    print("Double checking the fixed image now...")
                }
            } else {
                report = try qcow.check()
            }
            try image.close()
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw imgFail(error)
        }
        if output == "json" {
            print("""
                {
                    "image-end-offset": \(report.imageEndOffset),
                    "total-clusters": \(report.totalClusters),
                    "check-errors": 0,
                    "leaks": \(report.leaks),
                    "corruptions": \(report.corruptions),
                    "allocated-clusters": \(report.allocatedClusters),
                    "filename": \(jsonString(file)),
                    "format": "qcow2",
                    "fragmented-clusters": \(report.fragmentedClusters),
                    "compressed-clusters": \(report.compressedClusters)
                }
                """)
        } else if !quiet {
            print(report.summary)
        }
        if report.exitCode != 0 { throw ExitCode(report.exitCode) }
    }
}

struct ImgConvert: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert", abstract: "Copy an image (with its backing chain flattened): convert [-f fmt] [-O fmt] [-o options] IN OUT")

    @Option(name: .customShort("f"), help: "Input format (probed when omitted).") var format: String?
    @Option(name: .customShort("O"), help: "Output format: raw (default) or qcow2.") var outputFormat: String = "raw"
    @Option(name: .customShort("o"), help: "Creation options for the output (cluster_size, refcount_bits, compat).") var options: [String] = []
    @Flag(name: .customShort("c"), help: "Compress the output (qcow2 only).") var compress = false
    @Flag(name: .customShort("p"), help: "Show progress.") var progress = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Option(name: .customShort("t"), help: "Output cache mode: unsafe (default, as qemu-img: no flushes), writeback, or none (O_DIRECT).") var cache: String = "unsafe"
    @Option(name: .customShort("T"), help: "Input cache mode: writeback (default) or none (O_DIRECT).") var sourceCache: String = "writeback"
    @Argument(help: "Input image.") var input: String
    @Argument(help: "Output image (replaced).") var output: String

    func run() throws {
        let creation = try CreationOptions(options)
        guard let outFormat = try parseFormat(outputFormat) else { return }
        for mode in [cache, sourceCache] where !["none", "directsync", "writeback", "writethrough", "unsafe"].contains(mode) {
            throw ValidationError("invalid cache mode '\(mode)'")
        }
        do {
            if compress && outFormat != .qcow2 { throw ValidationError("compression needs -O qcow2") }
            let source = try openImage(input, options: ImageOptions(format: try parseFormat(format), directIO: sourceCache == "none" || sourceCache == "directsync"))
            switch outFormat {
            case .raw: try createImage(output, format: .raw, size: source.size)
            case .qcow2:
                try QCOW2Image.create(output, size: source.size, clusterSize: creation.clusterSize,
                                      refcountBits: creation.refcountBits, version: creation.version)
            }
            var targetOptions = ImageOptions(writable: true, format: outFormat, directIO: cache == "none" || cache == "directsync")
            targetOptions.ignoreFlushes = cache == "unsafe"
            let target = try openImage(output, options: targetOptions)
            let chunk: UInt64 = 2 << 20
            let report = progressPrinter(progress && !quiet)
            // Zero ranges stay unallocated (sparse) in either format: like qemu-img's default `-S 4k`, runs
            // of 4 KiB blocks holding data are written, all-zero blocks skipped. Compression goes by cluster.
            let granule = compress ? creation.clusterSize : 4096
            var offset: UInt64 = 0
            while offset < source.size {
                let count = Int(min(chunk, source.size - offset))
                let bytes = try source.read(at: offset, count: count)
                var runStart: Int? = nil
                // Block starts, then `count` itself to end the last run.
                for start in Array(stride(from: 0, to: count, by: granule)) + [count] {
                    let end = min(count, start + granule)
                    let data = start < count && !isAllZero(bytes[start..<end])
                    if compress {
                        guard data else { continue }
                        if let qcow = target as? QCOW2Image, end - start == granule {
                            try qcow.writeCompressed(Array(bytes[start..<end]), cluster: (offset + UInt64(start)) / UInt64(granule))
                        } else {
                            try target.write(Array(bytes[start..<end]), at: offset + UInt64(start))
                        }
                    } else if data {
                        if runStart == nil { runStart = start }
                    } else if let first = runStart {
                        // A run covering the whole chunk goes out without a copy.
                        try target.write(first == 0 && start == count ? bytes : Array(bytes[first..<start]), at: offset + UInt64(first))
                        runStart = nil
                    }
                }
                offset += UInt64(count)
                report?(Double(offset) / Double(max(source.size, 1)))
            }
            try target.close()
            try source.close()
        } catch {
            throw imgFail(error)
        }
    }
}

/// Whether `bytes` holds only zeros. A block of data usually shows it in its first byte; otherwise
/// every byte is ORed together without an early exit, a loop the compiler vectorises (zero blocks are
/// read in full, and byte-by-byte `contains(where:)` made that most of a sparse convert's time).
func isAllZero(_ bytes: ArraySlice<UInt8>) -> Bool {
    guard bytes.first ?? 0 == 0 else { return false }
    var any: UInt8 = 0
    for byte in bytes { any |= byte }
    return any == 0
}

extension ParsableCommand {
    /// Runs the command line like `main()`, but with qemu-img's exit status for usage errors: 1,
    /// where ArgumentParser uses 64 (scripts written for qemu-img test for 1).
    static func mainExitingLikeQemuImg() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            guard exitCode(for: error).rawValue == 64 else { exit(withError: error) }
            let message = fullMessage(for: error) + "\n"
            _ = message.withCString { write(2, $0, strlen($0)) }
            Glibc.exit(1)
        }
    }
}
