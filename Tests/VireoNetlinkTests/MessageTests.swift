import Testing
@testable import VireoNetlink

/// Message building and parsing without a kernel: layouts, and garbage that must not trap.
struct MessageTests {
    @Test func builderLaysOutHeaderAttributesAndNesting() {
        var message = MessageBuilder(type: Wire.newLink, flags: Wire.request | Wire.ack, sequence: 7)
        message.appendInterfaceInfo(index: 3, flags: Wire.flagUp, change: Wire.flagUp)
        message.attribute(Wire.interfaceName, string: "br0")
        message.nested(Wire.linkInfo) { $0.attribute(Wire.infoKind, string: "bridge") }
        let bytes = message.finish()
        #expect(bytes.count == 16 + 16 + 8 + 4 + 12)
        #expect(Array(bytes[0..<4]) == [UInt8(bytes.count), 0, 0, 0])
        #expect(Array(bytes[4..<8]) == [16, 0, 5, 0])  // RTM_NEWLINK, NLM_F_REQUEST|NLM_F_ACK
        #expect(Array(bytes[8..<12]) == [7, 0, 0, 0])
        #expect(Array(bytes[20..<24]) == [3, 0, 0, 0])  // ifi_index
        #expect(Array(bytes[32..<40]) == [8, 0, 3, 0, 0x62, 0x72, 0x30, 0])  // IFLA_IFNAME "br0\0"
        #expect(Array(bytes[40..<44]) == [16, 0, 18, 0x80])  // IFLA_LINKINFO | NLA_F_NESTED, 16 bytes
        let messages = ReceivedMessage.split(bytes)
        #expect(messages?.count == 1 && messages?.first?.sequence == 7)
        let attributes = parseAttributes(bytes[32...])
        #expect(attributes[Wire.interfaceName]?.attributeString == "br0")
        #expect(parseAttributes(attributes[Wire.linkInfo]!)[Wire.infoKind]?.attributeString == "bridge")
    }

    @Test func decodesALinkMessage() throws {
        var message = MessageBuilder(type: Wire.newLink, flags: 0, sequence: 1)
        message.appendInterfaceInfo(index: 9, flags: Wire.flagUp | Wire.flagLowerUp)
        message.attribute(Wire.interfaceName, string: "tap100i0")
        message.attribute(Wire.mtu, u32: 1500)
        message.attribute(Wire.master, u32: 4)
        message.attribute(Wire.operationalState, u8: 6)
        message.attribute(Wire.address, [0x52, 0x54, 0, 1, 2, 3])
        message.nested(Wire.linkInfo) { $0.attribute(Wire.infoKind, string: "tun") }
        let received = try #require(ReceivedMessage.split(message.finish())?.first)
        let link = try #require(try RouteNetlink.decodeLink(received))
        #expect(link == Link(index: 9, name: "tap100i0", kind: "tun", masterIndex: 4, isUp: true, hasCarrier: true,
                             operationalState: .up, mtu: 1500, address: "52:54:00:01:02:03", vlanFiltering: nil))
    }

    @Test func garbageNeverTraps() {
        var generator = SystemRandomNumberGenerator()
        for round in 0..<3000 {
            let length = Int.random(in: 0...96, using: &generator)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            // Half the rounds start with a plausible header, so the parsers go deeper.
            if round % 2 == 0, bytes.count >= 16 {
                bytes[0] = UInt8(bytes.count); bytes[1] = 0; bytes[2] = 0; bytes[3] = 0
                bytes[4] = [UInt8(16), 2, 3][round % 3]; bytes[5] = 0
            }
            if let messages = ReceivedMessage.split(bytes) {
                for message in messages {
                    _ = try? RouteNetlink.decodeLink(message)
                    _ = RouteNetlink.extendedAckMessage(message)
                }
            }
            _ = parseAttributes(bytes[...])
        }
    }
}
