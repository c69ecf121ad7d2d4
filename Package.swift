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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // C shim over <linux/kvm.h>: ioctl numbers as constants, non-variadic ioctl entry points.
        .target(name: "CVireoLinux"),
        .target(name: "VireoSystem", dependencies: ["CVireoLinux"], swiftSettings: unsafeLayer),
        .target(name: "VireoKVM", dependencies: ["VireoSystem", "CVireoLinux"], swiftSettings: unsafeLayer),
        .target(name: "VireoMemory", dependencies: ["VireoSystem"], swiftSettings: unsafeLayer),
        .target(name: "VireoBoot", dependencies: ["VireoMemory"]),
        .target(name: "VireoDevices", dependencies: ["VireoMemory", .product(name: "Logging", package: "swift-log")]),
        .target(
            name: "VireoVMM",
            dependencies: [
                "VireoSystem", "VireoKVM", "VireoMemory", "VireoBoot", "VireoDevices",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .executableTarget(
            name: "vireo-vmm",
            dependencies: ["VireoVMM", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        // Storage: native qcow2 (QEMU's qcow2 spec, v2/v3) and raw images; no KVM or virtio imports.
        .target(name: "VireoQCOW2", dependencies: ["VireoSystem"]),
        .target(name: "VireoLab", dependencies: [.product(name: "Logging", package: "swift-log")]),
        .executableTarget(
            name: "vireo",
            dependencies: ["VireoLab", "VireoQCOW2", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .target(name: "VireoTestSupport", dependencies: ["VireoMemory", "VireoDevices"]),

        .testTarget(name: "VireoMemoryTests", dependencies: ["VireoMemory"]),
        .testTarget(name: "VireoBootTests", dependencies: ["VireoBoot", "VireoTestSupport"]),
        .testTarget(name: "VireoDevicesTests", dependencies: ["VireoDevices", "VireoTestSupport"]),
        .testTarget(name: "VireoVMMTests", dependencies: ["VireoVMM", "VireoKVM", "VireoTestSupport"]),
        .testTarget(name: "VireoLabTests", dependencies: ["VireoLab"], exclude: ["Scenarios"]),
        .testTarget(name: "VireoQCOW2Tests", dependencies: ["VireoQCOW2"]),
    ]
)
