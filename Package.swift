// swift-tools-version: 6.2
import PackageDescription

/// Targets are layered one way, lowest first (see docs/architecture.md):
/// CVireoLinux → VireoSystem → VireoKVM / VireoMemory → VireoBoot / VireoDevices → VireoVMM → executables.
/// Only the lowest layers touch raw pointers; they build with strict memory safety.
let unsafeLayer: [SwiftSetting] = [.strictMemorySafety()]

let package = Package(
    name: "Vireo",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "vireo-vmm", targets: ["vireo-vmm"]),
        .executable(name: "vireo", targets: ["vireo"]),
        .executable(name: "vireod", targets: ["vireod"]),
        .executable(name: "vireo-switchd", targets: ["vireo-switchd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/vapor/multipart-kit", from: "4.7.1"),
    ],
    targets: [
        // C shim over <linux/kvm.h>: ioctl numbers as constants, non-variadic ioctl entry points.
        .target(name: "CVireoLinux"),
        .target(name: "VireoSystem", dependencies: ["CVireoLinux"], swiftSettings: unsafeLayer),
        .target(name: "VireoKVM", dependencies: ["VireoSystem", "CVireoLinux"], swiftSettings: unsafeLayer),
        .target(name: "VireoMemory", dependencies: ["VireoSystem"], swiftSettings: unsafeLayer),
        .target(name: "VireoBoot", dependencies: ["VireoMemory"]),
        // Virtio 1.2 split virtqueues and the device model shared by every virtio device.
        .target(name: "VireoVirtio", dependencies: ["VireoMemory", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "VireoDevices",
            dependencies: ["VireoMemory", "VireoVirtio", "VireoQCOW2", "VireoSwitch", "VireoSystem", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "VireoVMM",
            dependencies: [
                "VireoSystem", "VireoKVM", "VireoMemory", "VireoBoot", "VireoDevices", "VireoSwitch",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "vireo-vmm",
            dependencies: ["VireoVMM", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Storage: native qcow2 (QEMU's qcow2 spec, v2/v3) and raw images; no KVM or virtio imports.
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .target(name: "VireoQCOW2", dependencies: ["VireoSystem", "CZlib"]),
        // The engine interface the control plane uses, with the QEMU (QMP) and Vireo (vireo-vmm) engines.
        .target(name: "VireoEngines", dependencies: ["VireoSystem", "VireoNetlink", "VireoSwitch", .product(name: "Logging", package: "swift-log")]),
        // Codable API types shared by vireod and the vireo CLI (Proxmox VE /api2/json shapes).
        .target(name: "VireoAPI"),
        .target(
            name: "VireoDaemon",
            dependencies: [
                "VireoAPI", "VireoEngines", "VireoQCOW2",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "MultipartKit", package: "multipart-kit"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "vireod",
            dependencies: ["VireoDaemon", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .target(name: "VireoLab", dependencies: ["CVireoLinux", .product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "vireo",
            dependencies: [
                "VireoLab", "VireoQCOW2", "VireoAPI", "VireoSystem", .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // The API client: HTTP/1.1 over NIO, TLS with certificate-fingerprint pinning.
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Crypto", package: "swift-crypto"),
            ]),
        // The virtual switch: frame parsing, MAC learning, VLANs, forwarding (pure Swift), and its data-plane process.
        .target(name: "VireoSwitch", dependencies: ["VireoSystem"]),
        // Linux bridges and taps over rtnetlink (messages built and parsed in safe Swift).
        .target(name: "VireoNetlink", dependencies: ["VireoSystem"]),
        .executableTarget(
            name: "vireo-switchd",
            dependencies: [
                "VireoSwitch", "VireoSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(name: "VireoTestSupport", dependencies: ["VireoMemory", "VireoDevices"]),
        // Host-side virtqueue requests/s through the virtio-pci transport (docs/benchmarks.md).
        .executableTarget(
            name: "virtio-bench",
            dependencies: ["VireoVirtio", "VireoDevices", "VireoMemory", "VireoQCOW2", "VireoNetlink", "VireoSwitch", "VireoSystem",
                           .product(name: "Logging", package: "swift-log")],
            path: "Benchmarks/virtio"),

        .testTarget(name: "VireoMemoryTests", dependencies: ["VireoMemory"]),
        .testTarget(name: "VireoBootTests", dependencies: ["VireoBoot", "VireoTestSupport"]),
        .testTarget(name: "VireoDevicesTests", dependencies: ["VireoDevices", "VireoTestSupport"]),
        .testTarget(name: "VireoVMMTests", dependencies: ["VireoVMM", "VireoKVM", "VireoTestSupport"]),
        .testTarget(name: "VireoLabTests", dependencies: ["VireoLab"], exclude: ["Scenarios"]),
        .testTarget(name: "VireoQCOW2Tests", dependencies: ["VireoTestSupport", "VireoQCOW2"]),
        .testTarget(name: "VireoVirtioTests", dependencies: ["VireoVirtio", "VireoDevices", "VireoSwitch", "VireoTestSupport", "VireoNetlink", "VireoSystem"]),
        .testTarget(name: "VireoEnginesTests", dependencies: ["VireoEngines", "VireoNetlink", "VireoSystem"]),
        .testTarget(name: "VireoDaemonTests", dependencies: ["VireoTestSupport", "VireoDaemon", "VireoAPI", "VireoSwitch", "VireoSystem"], exclude: ["proxmoxer_lifecycle.py", "pve_exporter_scrape.py", "ansible_lifecycle.yml"]),
        .testTarget(name: "VireoNetlinkTests", dependencies: ["VireoTestSupport", "VireoNetlink"]),
        .testTarget(name: "VireoSwitchTests", dependencies: ["VireoTestSupport", "VireoSwitch", "VireoDevices", "VireoVMM"]),
    ]
)
