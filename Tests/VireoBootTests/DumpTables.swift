import Foundation
import Testing
import VireoBoot

/// Set VIREO_DUMP_ACPI=<dir> to write the tables as files for `iasl -d` / `acpixtract` review.
@Test func dumpACPITablesWhenAsked() throws {
    guard let directory = ProcessInfo.processInfo.environment["VIREO_DUMP_ACPI"] else { return }
    let tables: [(String, [UInt8])] = [
        ("dsdt", ACPITables.dsdt()), ("facp", ACPITables.fadt(dsdtAddress: .init(0xE0040))),
        ("apic", ACPITables.madt(cpuCount: 4)),
    ]
    for (name, bytes) in tables {
        try Data(bytes).write(to: URL(fileURLWithPath: "\(directory)/\(name).dat"))
    }
}
