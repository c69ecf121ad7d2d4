import ArgumentParser
import VireoQCOW2

#if canImport(Glibc)
import Glibc
#endif

/// A progress line on stderr-less terminals the way qemu-img -p prints it: "    (42.00/100%)".
func progressPrinter(_ enabled: Bool) -> ProgressHandler? {
    guard enabled else { return nil }
    var last = -1
    return { fraction in
        let percent = Int(fraction * 10000)
        guard percent / 100 != last / 100 || fraction >= 1 else { return }
        last = percent
        let text = "    (\(percent / 100).\(percent % 100 < 10 ? "0" : "")\(percent % 100)/100%)\r"
        _ = text.withCString { write(1, $0, strlen($0)) }
        if fraction >= 1 { print("") }
    }
}

func openQCOW2(_ file: String, format: String?, writable: Bool) throws -> QCOW2Image {
    if let format, format != "qcow2" { throw ValidationError("this operation needs a qcow2 image") }
    do {
        return try QCOW2Image.open(file, options: ImageOptions(writable: writable))
    } catch {
        throw imgFail(error)
    }
}

struct ImgSnapshot: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot", abstract: "Internal snapshots: snapshot [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] [-q] FILE")

    @Flag(name: .customShort("l"), help: "List snapshots.") var list = false
    @Option(name: .customShort("a"), help: "Apply (revert to) a snapshot.") var apply: String?
    @Option(name: .customShort("c"), help: "Create a snapshot.") var create: String?
    @Option(name: .customShort("d"), help: "Delete a snapshot.") var delete: String?
    @Option(name: .customShort("f"), help: "Image format (qcow2).") var format: String?
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Flag(name: .customShort("U"), help: "Force share (accepted for compatibility).") var forceShare = false
    @Argument(help: "The image.") var file: String

    func run() throws {
        let actions = [list, apply != nil, create != nil, delete != nil].filter { $0 }.count
        guard actions <= 1 else { throw ValidationError("only one of -l, -a, -c, -d may be given") }
        let image = try openQCOW2(file, format: format, writable: !(list || actions == 0))
        do {
            if let name = create {
                try image.createSnapshot(name: name)
            } else if let name = apply {
                try image.applySnapshot(name)
            } else if let name = delete {
                try image.deleteSnapshot(name)
            } else {
                let snapshots = try image.snapshots()
                if !snapshots.isEmpty {
                    print("Snapshot list:")
                    print("ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT")
                    for s in snapshots {
                        print(pad(s.id, 10) + pad(s.name, 18) + leftPad(humanSize(s.vmStateSize), 7) + " " + formatDate(s.dateSeconds)
                            + " " + formatClock(s.vmClockNanoseconds) + leftPad(s.icount.map(String.init) ?? "", 11))
                    }
                }
            }
            try image.close()
        } catch {
            throw imgFail(error)
        }
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    func leftPad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
    func two(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

    func formatDate(_ seconds: UInt32) -> String {
        var t = time_t(seconds)
        var parts = tm()
        localtime_r(&t, &parts)
        return "\(parts.tm_year + 1900)-\(two(Int(parts.tm_mon) + 1))-\(two(Int(parts.tm_mday))) \(two(Int(parts.tm_hour))):\(two(Int(parts.tm_min))):\(two(Int(parts.tm_sec)))"
    }

    func formatClock(_ ns: UInt64) -> String {
        let ms = ns / 1_000_000
        let secs = ms / 1000
        let millis = Int(ms % 1000)
        return "\(two(Int(secs / 3600))):\(two(Int(secs / 60 % 60))):\(two(Int(secs % 60))).\(millis < 100 ? "0" : "")\(millis < 10 ? "0" : "")\(millis)"
    }
}

struct ImgCommit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "commit", abstract: "Copy an overlay's data into its backing file: commit [-q] [-f fmt] [-t cache] [-d] [-p] FILE")

    @Option(name: .customShort("f"), help: "Image format (qcow2).") var format: String?
    @Option(name: .customShort("t"), help: "Cache mode (accepted; writeback).") var cache: String?
    @Flag(name: .customShort("d"), help: "Do not empty the overlay after the commit.") var keep = false
    @Flag(name: .customShort("p"), help: "Show progress.") var progress = false
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "The overlay.") var file: String

    func run() throws {
        if let format, format != "qcow2" { throw ValidationError("commit needs a qcow2 overlay") }
        do {
            try commitImage(file, keepOverlay: keep, progress: progressPrinter(progress && !quiet))
        } catch {
            throw imgFail(error)
        }
        if !quiet { print("Image committed.") }
    }
}

struct ImgRebase: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebase", abstract: "Change the backing file: rebase [-f fmt] [-t cache] [-p] [-u] -b BACKING [-F fmt] FILE")

    @Option(name: .customShort("f"), help: "Image format (qcow2).") var format: String?
    @Option(name: .customShort("t"), help: "Cache mode (accepted; writeback).") var cache: String?
    @Flag(name: .customShort("p"), help: "Show progress.") var progress = false
    @Flag(name: .customShort("u"), help: "Unsafe: only rewrite the backing file name.") var unsafeMode = false
    @Option(name: .customShort("b"), help: "New backing file (\"\" for none).") var backing: String
    @Option(name: .customShort("F"), help: "New backing file format.") var backingFormat: String?
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "The image.") var file: String

    func run() throws {
        if let format, format != "qcow2" { throw ValidationError("rebase needs a qcow2 image") }
        let backingFormat = try parseFormat(self.backingFormat)
        do {
            try rebaseImage(file, backing: backing.isEmpty ? nil : backing, backingFormat: backingFormat,
                            unsafe: unsafeMode, progress: progressPrinter(progress && !quiet))
        } catch {
            throw imgFail(error)
        }
    }
}

struct ImgResize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resize", abstract: "Change the virtual size: resize [--shrink] [-f fmt] [-q] FILE [+|-]SIZE")

    @Flag(name: .long, help: "Allow shrinking.") var shrink = false
    @Option(name: .customShort("f"), help: "Image format (probed when omitted).") var format: String?
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Argument(help: "The image.") var file: String
    @Argument(help: "New size, or +SIZE / -SIZE relative to the current one.") var size: String

    func run() throws {
        var text = Substring(size)
        var sign: Character? = nil
        if let first = text.first, first == "+" || first == "-" {
            sign = first
            text = text.dropFirst()
        }
        guard let amount = parseImageSize(String(text)) else { throw ValidationError("invalid size '\(size)'") }
        do {
            let current = try openImage(file, options: ImageOptions(format: try parseFormat(format)))
            let old = current.size
            try current.close()
            var target = amount
            if sign == "+" { target = old + amount }
            if sign == "-" {
                guard amount <= old else { throw ImageError(file, .invalidArgument, "new size would be negative") }
                target = old - amount
            }
            try resizeImage(file, to: target, shrink: shrink)
        } catch {
            throw imgFail(error)
        }
        if !quiet { print("Image resized.") }
    }
}

struct ImgMap: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "map", abstract: "Show the allocation map: map [--output=human|json] [-f fmt] FILE")

    @Option(name: .long, help: "human (default) or json.") var output: String = "human"
    @Option(name: .customShort("f"), help: "Image format (probed when omitted).") var format: String?
    @Flag(name: .customShort("U"), help: "Force share (accepted for compatibility).") var forceShare = false
    @Argument(help: "The image.") var file: String

    func run() throws {
        do {
            let image = try openImage(file, options: ImageOptions(format: try parseFormat(format)))
            let map = try allocationMap(image)
            if output == "json" {
                print("[" + map.map(\.json).joined(separator: ",\n") + "]")
            } else {
                var files: [Int: String] = [0: file]
                var link: (any BlockImage)? = image
                var depth = 0
                while let qcow = link as? QCOW2Image, let backing = qcow.backing {
                    depth += 1
                    files[depth] = qcow.backingPath ?? backing.path
                    link = backing
                }
                print(pad("Offset", 16) + pad("Length", 16) + pad("Mapped to", 16) + "File")
                for entry in map where entry.data {
                    guard let offset = entry.offset else { continue }
                    print(pad(hexString(entry.start), 16) + pad(hexString(entry.length), 16) + pad(hexString(offset), 16) + (files[entry.depth] ?? ""))
                }
            }
            try image.close()
        } catch {
            throw imgFail(error)
        }
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    func hexString(_ v: UInt64) -> String { v == 0 ? "0" : "0x" + String(v, radix: 16) }
}
