import Testing
import VireoQCOW2
@testable import VireoVMM

@Suite struct DeviceOptionTests {
    @Test func diskWriteErrorPolicy() throws {
        #expect(try DiskConfig.parse("path=/d.img").pauseOnOutOfSpace)
        #expect(try DiskConfig.parse("/d.img,werror=enospc").pauseOnOutOfSpace)
        let report = try DiskConfig.parse("path=/d.img,format=raw,werror=report")
        #expect(!report.pauseOnOutOfSpace && report.format == .raw)
        #expect(throws: ConfigError.self) { try DiskConfig.parse("/d.img,werror=ignore") }
    }

    @Test func balloonOptions() throws {
        var config = VMConfig(payload: .raw(path: "/x", mode: .real))
        try config.parseBalloon("64M")
        #expect(config.balloonTarget == 64 << 20 && config.balloonStatsInterval == 0 && !config.balloonDeflateOnOOM)
        try config.parseBalloon("0,stats=5,deflate-on-oom=on")
        #expect(config.balloonTarget == 0 && config.balloonStatsInterval == 5 && config.balloonDeflateOnOOM)
        #expect(throws: ConfigError.self) { try config.parseBalloon("64M,stats=soon") }
        #expect(throws: ConfigError.self) { try config.parseBalloon("64M,colour=red") }
    }
}
