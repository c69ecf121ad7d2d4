import Foundation

/// Runs a real program for a test (qemu-img, ip, tcpdump, a built Vireo tool) and hands back what it said.
public enum ChildCommand {
    /// Runs `executable` with `arguments` (in `directory` when given), waits for it, and returns its exit
    /// status with stdout and stderr combined. A name without a slash is looked up on PATH (`/usr/bin/env`).
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], in directory: String? = nil) throws
        -> (status: Int32, output: String)
    {
        let process = Process()
        if executable.contains("/") {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [executable] + arguments
        }
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
