import VireoDevices

extension VirtualMachine {
    /// Number of virtio-net NICs (`--net`), in command-line order.
    public var netCount: Int { virtio.nets.count }

    /// Sets the link of NIC `index` (0 = the first `--net`) up or down as the guest sees it
    /// (virtio 1.2 §5.1.4 status, with a configuration-change interrupt); returns the state now,
    /// nil when there is no such NIC.
    @discardableResult
    public func setNetLink(_ index: Int, up: Bool? = nil) -> Bool? {
        guard index >= 0, index < virtio.nets.count else { return nil }
        let net = virtio.nets[index]
        if let up { net.setLink(up: up) }
        return net.isLinkUp
    }
}
