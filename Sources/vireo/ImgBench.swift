import ArgumentParser
import VireoQCOW2
import VireoSystem

#if canImport(Glibc)
import Glibc
#endif

/// `vireo img bench`: qemu-img bench's flags and output; request n goes to `offset + n * step` modulo
/// the image size. `depth` requests are in flight at once: issued to a pool of worker threads doing
/// synchronous I/O on the (thread-safe) image, like qemu's thread-pool AIO. With O_DIRECT every request
/// in flight gets a worker, as it waits on the device; through the page cache requests are CPU-bound,
/// so the pool has as many workers as CPUs and further requests in flight queue for them.
struct ImgBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Simple I/O benchmark: bench [-c count] [-d depth] [-f fmt] [--flush-interval N] [-n] [--no-drain] [-o offset] [--pattern P] [-q] [-s size] [-S step] [-t cache] [-w] FILE")

    @Option(name: .customShort("c"), help: "Number of requests.") var count: Int = 75000
    @Option(name: .customShort("d"), help: "Requests in flight at once.") var depth: Int = 64
    @Option(name: .customShort("f"), help: "Image format (probed when omitted).") var format: String?
    @Option(name: .customLong("flush-interval"), help: "Flush after this many write requests.") var flushInterval: Int?
    @Option(name: .customShort("i"), help: "AIO mode (accepted; threads are used).") var aio: String?
    @Flag(name: .customShort("n"), help: "Native AIO (accepted; threads are used).") var native = false
    @Flag(name: .customLong("no-drain"), help: "Do not drain before flushes (accepted).") var noDrain = false
    @Option(name: .customShort("o"), help: "Offset of the first request.") var offset: String = "0"
    @Option(name: .customLong("pattern"), help: "Byte written by write requests.") var pattern: Int = 0
    @Flag(name: .customShort("q"), help: "Quiet.") var quiet = false
    @Option(name: .customShort("s"), help: "Request size.") var size: String = "4096"
    @Option(name: .customShort("S"), help: "Step between requests (default: the request size).") var step: String?
    @Option(name: .customShort("t"), help: "Cache mode: none or directsync (O_DIRECT), writeback (default), writethrough, unsafe.") var cache: String = "writeback"
    @Flag(name: .customShort("w"), help: "Write instead of read.") var writeMode = false
    @Flag(name: .customShort("U"), help: "Force share (accepted).") var forceShare = false
    @Argument(help: "The image.") var file: String

    func run() throws {
        guard let bufferSize = parseImageSize(size), bufferSize > 0, bufferSize <= 1 << 30 else { throw ValidationError("invalid buffer size '\(size)'") }
        guard let start = parseImageSize(offset) else { throw ValidationError("invalid offset '\(offset)'") }
        let stepSize = try step.map { text throws -> UInt64 in
            guard let v = parseImageSize(text) else { throw ValidationError("invalid step size '\(text)'") }
            return v
        } ?? bufferSize
        guard count > 0, depth > 0 else { throw ValidationError("count and depth must be positive") }
        let direct: Bool
        switch cache {
        case "none", "directsync": direct = true
        case "writeback", "writethrough", "unsafe": direct = false
        default: throw ValidationError("invalid cache mode '\(cache)'")
        }
        let image: any BlockImage
        do {
            var options = ImageOptions(writable: writeMode, format: try parseFormat(format), directIO: direct)
            options.ignoreFlushes = cache == "unsafe"
            image = try openImage(file, options: options)
        } catch {
            throw imgFail(error)
        }
        let imageSize = image.size
        if !quiet {
            print("Sending \(count) \(writeMode ? "write" : "read") requests, \(bufferSize) bytes each, \(depth) in parallel (starting at offset \(start), step size \(stepSize))")
            if writeMode, let flushInterval { print("Sending flush every \(flushInterval) requests") }
        }
        let state = BenchState(count: count, start: start, step: stepSize, imageSize: imageSize)
        let buffer = [UInt8](repeating: UInt8(truncatingIfNeeded: pattern), count: Int(bufferSize))
        let writing = writeMode
        let interval = flushInterval ?? 0
        let began = monotonicSeconds()
        var threads: [OSThread] = []
        let cpus = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let workers = min(depth, count, direct ? depth : max(2, cpus))
        for t in 0..<workers {
            do {
                threads.append(try OSThread(name: "bench-\(t)") {
                    while let (index, at) = state.next() {
                        do {
                            if writing {
                                try image.write(buffer, at: at)
                                if interval > 0 && (index + 1) % interval == 0 { try image.flush() }
                            } else {
                                _ = try image.read(at: at, count: buffer.count)
                            }
                        } catch {
                            state.fail("\(error)")
                            return
                        }
                    }
                })
            } catch {
                throw imgFail(error)
            }
        }
        for thread in threads { thread.join() }
        // Like qemu-img bench, the time runs until the last request completed; the final flush and
        // close are not part of it.
        let elapsed = monotonicSeconds() - began
        do {
            if writing { try image.flush() }
            try image.close()
        } catch {
            throw imgFail(error)
        }
        if let failure = state.failure { throw imgFail(ImageError(file, .io, failure)) }
        let millis = Int((elapsed * 1000).rounded())
        if !quiet { print("Run completed in \(millis / 1000).\(String(repeating: "0", count: 3 - String(millis % 1000).count))\(millis % 1000) seconds.") }
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// The request queue shared by the benchmark threads.
final class BenchState: @unchecked Sendable {
    let lock = StorageMutex()
    let count: Int
    let step: UInt64
    let imageSize: UInt64
    var issued = 0
    var offset: UInt64
    var failure: String?

    init(count: Int, start: UInt64, step: UInt64, imageSize: UInt64) {
        self.count = count
        self.step = step
        self.imageSize = imageSize
        offset = start
    }

    /// The next request's index and offset, or nil when all were issued (or one failed).
    func next() -> (Int, UInt64)? {
        lock.lock()
        defer { lock.unlock() }
        guard issued < count, failure == nil else { return nil }
        let result = (issued, offset)
        issued += 1
        offset = imageSize == 0 ? 0 : (offset + step) % imageSize
        return result
    }

    func fail(_ message: String) {
        lock.lock()
        if failure == nil { failure = message }
        lock.unlock()
    }
}
