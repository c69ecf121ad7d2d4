import ArgumentParser
import VireoQCOW2

#if canImport(Glibc)
import Glibc
#endif

/// `vireo img io-script`: a test helper (hidden from help) that runs write and flush commands read
/// from stdin against an image through the Vireo engine, acknowledging each completed flush on stdout.
/// The crash tests drive it and kill it with SIGKILL at random points.
///
/// Input, one command a line: `write OFFSET LENGTH BYTE` (LENGTH bytes of value BYTE) or `flush`.
/// Output: `flushed N` once the N-th flush (1-based) returned, that is, once every write before it is durable.
struct ImgIOScript: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "io-script", abstract: "Test helper: run write/flush commands from stdin, acknowledging flushes.",
        shouldDisplay: false)

    @Option(name: .customShort("f"), help: "Image format (probed when omitted).") var format: String?
    @Argument(help: "The image.") var file: String

    func run() throws {
        let image: any BlockImage
        do {
            image = try openImage(file, options: ImageOptions(writable: true, format: try parseFormat(format)))
        } catch {
            throw imgFail(error)
        }
        var flushes = 0
        while let line = readLine() {
            let words = line.split(separator: " ")
            do {
                switch words.first {
                case "write":
                    guard words.count == 4, let offset = UInt64(words[1]), let length = Int(words[2]), length >= 0,
                          length <= 1 << 24, let byte = UInt8(words[3]) else {
                        throw ValidationError("bad command '\(line)'")
                    }
                    try image.write([UInt8](repeating: byte, count: length), at: offset)
                case "flush":
                    try image.flush()
                    flushes += 1
                    let ack = "flushed \(flushes)\n"
                    _ = ack.withCString { write(1, $0, strlen($0)) }
                case nil:
                    continue
                default:
                    throw ValidationError("bad command '\(line)'")
                }
            } catch let error as ValidationError {
                throw error
            } catch {
                throw imgFail(error)
            }
        }
        do {
            try image.close()
        } catch {
            throw imgFail(error)
        }
    }
}
