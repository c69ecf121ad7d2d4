import Foundation

/// Prints rows as left-aligned columns two spaces apart (the last column unpadded), with an
/// optional header row: the text form of every `vireo` read command.
func printTable(_ header: [String]?, _ rows: [[String]]) {
    let all = (header.map { [$0] } ?? []) + rows
    let columns = all.map(\.count).max() ?? 0
    let widths = (0..<columns).map { column in all.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index] + 2, withPad: " ", startingAt: 0)
        }
        print(cells.joined())
    }
}

/// Shows one line of a running task's log on stderr (stdout stays the command's result).
func printProgress(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// A runtime failure: ArgumentParser prints its description (no usage text) and exits 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
