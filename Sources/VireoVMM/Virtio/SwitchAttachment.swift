import Logging
import VireoDevices
import VireoSwitch

/// A virtio-net attached to a Vireo switch (`--net switch=NAME,...`): the VMM asks the running
/// `vireo-switchd` for a `vm:` port over its control socket (`add-port`), connects the port's
/// SOCK_SEQPACKET socket, and deletes the port again when the VM stops (docs/network.md).
public struct SwitchAttachment: Sendable, Equatable {
    /// The switch's name (its control socket is `directory/NAME.ctl`).
    public var switchName: String
    /// Where the switch keeps its sockets (`vireo-switchd --socket-dir`).
    public var directory: String
    /// The port to create: always of kind `vm`, with its VLAN mode.
    public var port: PortConfig

    public static let defaultDirectory = "/run/vireo"

    public init(switchName: String, directory: String = defaultDirectory, port: PortConfig) {
        self.switchName = switchName
        self.directory = directory
        self.port = port
    }

    /// The default port name for a NIC: `vm` and its MAC address in hex (14 characters).
    public static func defaultPortName(mac: [UInt8]) -> String {
        "vm" + mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    var control: SwitchControlClient { SwitchControlClient(switch: switchName, directory: directory) }

    /// Creates the port and connects to it. A port of the same name left behind by a VMM that
    /// did not stop cleanly is replaced.
    public func attach(logger: Logger) throws -> SwitchPortBackend {
        let control = self.control
        do {
            try control.addPort(port)
        } catch {
            guard case .refused(_, let message) = error, message == SwitchError.duplicatePort(port.name).description else { throw error }
            logger.notice("switch \(switchName): replacing existing port \(port.name)")
            try control.removePort(named: port.name)
            try control.addPort(port)
        }
        return try SwitchPortBackend(
            socketPath: SwitchControlClient.vmSocketPath(switch: switchName, port: port.name, directory: directory), offload: port.offload)
    }

    /// Deletes the port; a switch that is gone already is not an error worth more than a log line.
    public func detach(logger: Logger) {
        do {
            try control.removePort(named: port.name)
        } catch {
            logger.info("switch \(switchName): port \(port.name) not removed: \(error)")
        }
    }
}
