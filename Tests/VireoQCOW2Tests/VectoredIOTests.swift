import Foundation
import Testing
import VireoSystem
@testable import VireoQCOW2

/// Runs `body` with I/O vectors over fresh buffers of `lengths` bytes holding `contents` (zeros if nil),
/// each starting 3 bytes past a page boundary, or on one when `aligned`; returns what the buffers hold after.
func withSegments(_ lengths: [Int], holding contents: [UInt8]? = nil, aligned: Bool = false,
                  _ body: (borrowing IOVectors) throws -> Void) throws -> [UInt8] {
    let skew = aligned ? 0 : 3
    let buffers = lengths.map { UnsafeMutableRawBufferPointer.allocate(byteCount: $0 + skew, alignment: 4096) }
    defer { for buffer in buffers { buffer.deallocate() } }
    let segments = zip(buffers, lengths).map { UnsafeMutableRawBufferPointer(rebasing: $0[skew..<(skew + $1)]) }
    var done = 0
    for segment in segments {
        let piece = contents.map { Array($0[done..<(done + segment.count)]) } ?? [UInt8](repeating: 0, count: segment.count)
        segment.copyBytes(from: piece)
        done += segment.count
    }
    try body(IOVectors(unsafeSegments: segments))
    return segments.flatMap { Array($0) }
}

/// `count` bytes split into `pieces` segments of random (non-zero) lengths.
func randomSplit(_ count: Int, pieces: Int, using generator: inout some RandomNumberGenerator) -> [Int] {
    guard pieces > 1, count > pieces else { return [count] }
    let cuts = Set((0..<(pieces - 1)).map { _ in Int.random(in: 1..<count, using: &generator) }).sorted()
    return zip([0] + cuts, cuts + [count]).map { $1 - $0 }
}

@Suite struct VectoredIOTests {
    @Test func vectoredWritesAndReadsMatchAModelAcrossClustersBackingAndHoles() throws {
        let dir = Scratch()
        let backingPath = dir.file("backing.raw"), overlayPath = dir.file("overlay.qcow2")
        var generator = SplitMix64(seed: 0x5EED)
        // 40 KiB of backing data under a 256 KiB overlay of 4 KiB clusters: past 40 KiB unallocated reads are zeros.
        let backingData = (0..<(40 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try RawImage.create(backingPath, size: 40 << 10)
        let backing = try RawImage.open(backingPath, writable: true)
        try backing.write(backingData, at: 0)
        try backing.close()
        try QCOW2Image.create(overlayPath, size: 256 << 10, clusterSize: 4096, backing: backingPath, backingFormat: .raw)
        let image = try openImage(overlayPath, options: ImageOptions(writable: true))
        var model = backingData + [UInt8](repeating: 0, count: (256 - 40) << 10)

        for round in 0..<60 {
            let count = Int.random(in: 1...12, using: &generator) * 512 + (round % 3 == 0 ? 0 : Int.random(in: 0...6000, using: &generator))
            let offset = Int.random(in: 0...(model.count - count), using: &generator)
            let data = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let split = randomSplit(count, pieces: Int.random(in: 1...6, using: &generator), using: &generator)
            _ = try withSegments(split, holding: data) { try image.write(from: $0, at: UInt64(offset)) }
            model.replaceSubrange(offset..<(offset + count), with: data)

            let readOffset = Int.random(in: 0...(model.count - 8192), using: &generator)
            let readSplit = randomSplit(8192, pieces: Int.random(in: 1...5, using: &generator), using: &generator)
            let got = try withSegments(readSplit, holding: [UInt8](repeating: 0xEE, count: 8192)) {
                try image.read(at: UInt64(readOffset), into: $0)
            }
            #expect(got == Array(model[readOffset..<(readOffset + 8192)]), "round \(round)")
        }
        let whole = try withSegments(randomSplit(256 << 10, pieces: 7, using: &generator)) { try image.read(at: 0, into: $0) }
        #expect(whole == model)
        #expect(try image.read(at: 0, count: 256 << 10) == model)
        try image.close()
        try expectQemuCheckClean(overlayPath)
        let reopened = try openImage(overlayPath)
        #expect(try reopened.read(at: 0, count: 256 << 10) == model)
    }

    @Test func outOfRangeAndReadOnlyAreRefused() throws {
        let dir = Scratch()
        let path = dir.file("small.qcow2")
        try QCOW2Image.create(path, size: 64 << 10)
        let image = try openImage(path, options: ImageOptions(writable: true))
        #expect(throws: ImageError.self) { _ = try withSegments([4096, 4096]) { try image.read(at: 60 << 10, into: $0) } }
        #expect(throws: ImageError.self) { _ = try withSegments([512]) { try image.write(from: $0, at: 64 << 10) } }
        try image.close()
        let readOnly = try openImage(path)
        #expect(throws: ImageError.self) { _ = try withSegments([512]) { try readOnly.write(from: $0, at: 0) } }
        // A hole reads as zeros over whatever the buffers held.
        let hole = try withSegments([100, 412], holding: [UInt8](repeating: 0xAB, count: 512)) { try readOnly.read(at: 4096, into: $0) }
        #expect(hole == [UInt8](repeating: 0, count: 512))
    }

    @Test func directIOVectoredAlignedAndUnaligned() throws {
        let dir = try directIOScratch()
        for format in ImageFormat.allCases {
            let path = dir.file("disk.\(format)")
            switch format {
            case .raw: try RawImage.create(path, size: 1 << 20)
            case .qcow2: try QCOW2Image.create(path, size: 1 << 20)
            }
            let image = try openImage(path, options: ImageOptions(writable: true, format: format, directIO: true))
            var model = [UInt8](repeating: 0, count: 1 << 20)
            // Page-aligned buffers at a block-aligned offset go straight to the file; the rest bounce.
            let alignedData = (0..<16384).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
            _ = try withSegments([4096, 8192, 4096], holding: alignedData, aligned: true) { try image.write(from: $0, at: 65536 - 4096) }
            model.replaceSubrange((65536 - 4096)..<(65536 + 12288), with: alignedData)
            let unalignedData = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
            _ = try withSegments([1000, 2000], holding: unalignedData) { try image.write(from: $0, at: 65536 + 100) }
            model.replaceSubrange((65536 + 100)..<(65536 + 3100), with: unalignedData)
            let aligned = try withSegments([8192, 8192, 4096], aligned: true) { try image.read(at: 65536 - 8192, into: $0) }
            #expect(aligned == Array(model[(65536 - 8192)..<(65536 + 12288)]))
            let unaligned = try withSegments([777, 3000, 323]) { try image.read(at: 65536 - 50, into: $0) }
            #expect(unaligned == Array(model[(65536 - 50)..<(65536 + 4050)]))
            try image.close()
            if format == .qcow2 { try expectQemuCheckClean(path) }
            #expect(try openImage(path, options: ImageOptions(format: format)).read(at: 0, count: 1 << 20) == model)
        }
    }
}
