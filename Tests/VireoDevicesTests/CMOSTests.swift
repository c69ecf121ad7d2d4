import Synchronization
import Testing
@testable import VireoDevices

/// A settable clock for the RTC.
final class FakeClock: Sendable {
    let now: Mutex<Int64>
    init(_ seconds: Int64) { now = Mutex(seconds) }
    func advance(_ seconds: Int64) { now.withLock { $0 += seconds } }
    var function: @Sendable () -> Int64 { { [self] in now.withLock { $0 } } }
}

@Suite struct CMOSTests {
    /// 2026-11-25 13:45:09 UTC, a Wednesday.
    static let instant: Int64 = 1_795_614_309
    static let mib: UInt64 = 1 << 20
    let clock = FakeClock(CMOSTests.instant)
    let cmos: CMOS

    init() { cmos = CMOS(clock: clock.function, memoryBelow4G: 3 << 30, memoryAbove4G: 5 << 30) }

    func readCMOS(_ index: UInt8) -> UInt8 {
        cmos.write(offset: 0, size: 1, value: UInt64(index))
        return UInt8(truncatingIfNeeded: cmos.read(offset: 1, size: 1))
    }
    func writeCMOS(_ index: UInt8, _ value: UInt8) {
        cmos.write(offset: 0, size: 1, value: UInt64(index))
        cmos.write(offset: 1, size: 1, value: UInt64(value))
    }
    func time() -> [UInt8] { [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(readCMOS) }

    @Test func readsTimeInBCDByDefault() {
        #expect(readCMOS(0x0B) == 0x02)
        #expect(time() == [0x09, 0x45, 0x13, 0x04, 0x25, 0x11, 0x26, 0x20])
    }

    @Test func nmiDisableBitIsIgnored() {
        #expect(readCMOS(0x80 | 0x02) == 0x45)
    }

    @Test func binaryMode() {
        writeCMOS(0x0B, 0x02 | 0x04)
        #expect(time() == [9, 45, 13, 4, 25, 11, 26, 20])
    }

    @Test func twelveHourMode() {
        writeCMOS(0x0B, 0x00)
        #expect(readCMOS(0x04) == 0x80 | 0x01)  // 1 PM, BCD
        writeCMOS(0x0B, 0x04)
        #expect(readCMOS(0x04) == 0x80 | 1)
        clock.advance(-13 * 3600)  // 00:45:09 -> 12 AM
        #expect(readCMOS(0x04) == 12)
        clock.advance(12 * 3600)  // 12:45:09 -> 12 PM
        #expect(readCMOS(0x04) == 0x80 | 12)
    }

    @Test func statusRegisters() {
        #expect(readCMOS(0x0A) == 0x26)
        #expect(readCMOS(0x0A) & 0x80 == 0)
        #expect(readCMOS(0x0D) == 0x80)
        writeCMOS(0x0D, 0)
        #expect(readCMOS(0x0D) == 0x80)
    }

    @Test func registerCReadClears() {
        clock.advance(1)
        #expect(readCMOS(0x0C) == 0x10)  // an update ended since power-on
        #expect(readCMOS(0x0C) == 0x00)
        writeCMOS(0x0B, 0x02 | 0x10)  // UIE
        clock.advance(1)
        #expect(readCMOS(0x0C) == 0x90)
        #expect(readCMOS(0x0C) == 0x00)
    }

    @Test func memorySizeRegisters() {
        // 3 GiB below 4G: (3 GiB - 16 MiB) / 64 KiB = 0xBF00; 5 GiB above: 0x14000.
        #expect(readCMOS(0x34) == 0x00)
        #expect(readCMOS(0x35) == 0xBF)
        #expect(readCMOS(0x5B) == 0x00)
        #expect(readCMOS(0x5C) == 0x40)
        #expect(readCMOS(0x5D) == 0x01)
        #expect(readCMOS(0x15) == 0x80 && readCMOS(0x16) == 0x02)
        #expect(readCMOS(0x30) == 0xFF && readCMOS(0x31) == 0xFF)

        let small = CMOS(clock: { 0 }, memoryBelow4G: 8 * Self.mib, memoryAbove4G: 0)
        small.write(offset: 0, size: 1, value: 0x35)
        #expect(small.read(offset: 1, size: 1) == 0)
        small.write(offset: 0, size: 1, value: 0x31)
        #expect(small.read(offset: 1, size: 1) == 0x1C)  // 7 MiB = 7168 KiB = 0x1C00
    }

    @Test func ramIsReadWrite() {
        writeCMOS(0x40, 0xAB)
        #expect(readCMOS(0x40) == 0xAB)
        #expect(cmos.read(offset: 0, size: 1) == 0xFF)
    }

    @Test func guestSetTimeKeepsTicking() {
        // hwclock --systohc style: set 2031-02-28 23:59:58 field by field in BCD.
        writeCMOS(0x0B, 0x82)  // SET
        writeCMOS(0x00, 0x58)
        writeCMOS(0x02, 0x59)
        writeCMOS(0x04, 0x23)
        writeCMOS(0x07, 0x28)
        writeCMOS(0x08, 0x02)
        writeCMOS(0x09, 0x31)
        writeCMOS(0x0B, 0x02)
        #expect(time() == [0x58, 0x59, 0x23, 0x06, 0x28, 0x02, 0x31, 0x20])  // a Friday (Sunday = 1)
        clock.advance(3)
        #expect(time() == [0x01, 0x00, 0x00, 0x07, 0x01, 0x03, 0x31, 0x20])  // rolls into March
        // Out-of-range and malformed BCD writes are ignored.
        writeCMOS(0x00, 0x60)
        writeCMOS(0x08, 0x13)
        writeCMOS(0x04, 0x3A)
        #expect(time() == [0x01, 0x00, 0x00, 0x07, 0x01, 0x03, 0x31, 0x20])
    }

    @Test func twelveHourWrites() {
        writeCMOS(0x0B, 0x00)
        writeCMOS(0x04, 0x80 | 0x12)  // 12 PM
        writeCMOS(0x0B, 0x02)
        #expect(readCMOS(0x04) == 0x12)
        writeCMOS(0x0B, 0x00)
        writeCMOS(0x04, 0x12)  // 12 AM
        writeCMOS(0x0B, 0x02)
        #expect(readCMOS(0x04) == 0x00)
    }

    @Test func civilConversionRoundTrips() {
        let cases: [(Int64, CivilTime)] = [
            (0, CivilTime(year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0)),
            (951_782_400, CivilTime(year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0)),
            (-1, CivilTime(year: 1969, month: 12, day: 31, hour: 23, minute: 59, second: 59)),
            (4_107_542_400, CivilTime(year: 2100, month: 3, day: 1, hour: 0, minute: 0, second: 0)),
            (Self.instant, CivilTime(year: 2026, month: 11, day: 25, hour: 13, minute: 45, second: 9)),
        ]
        for (seconds, civil) in cases {
            #expect(CivilTime(epochSeconds: seconds) == civil)
            #expect(civil.epochSeconds == seconds)
        }
        #expect(CivilTime(epochSeconds: Self.instant).weekday == 3)
        for seconds in stride(from: Int64(-5_000_000_000), through: 10_000_000_000, by: 7_777_777) {
            #expect(CivilTime(epochSeconds: seconds).epochSeconds == seconds)
        }
        _ = CivilTime(epochSeconds: .max)
        _ = CivilTime(epochSeconds: .min)
    }

    @Test func garbageNeverCrashes() {
        for index in 0...0xFF {
            for value in [0x00, 0x7F, 0x80, 0x99, 0xFF] {
                writeCMOS(UInt8(index), UInt8(value))
                _ = readCMOS(UInt8(index))
                _ = time()
            }
        }
        for offset: UInt64 in [2, 3, UInt64.max] {
            cmos.write(offset: offset, size: 4, value: .max)
            #expect(cmos.read(offset: offset, size: 4) == 0xFFFF_FFFF)
        }
    }
}
