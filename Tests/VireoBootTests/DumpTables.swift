import Foundation
import Testing
import VireoBoot
import VireoTestSupport

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

/// The DSDT as ACPICA reads it: `iasl -d` (acpica-tools, which scripts/setup-host installs)
/// disassembles our hand-encoded AML without errors into the devices and methods we meant.
@Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/iasl"), "needs iasl (acpica-tools)"))
func dsdtDisassemblesCleanlyWithACPICA() throws {
    let directory = NSTemporaryDirectory() + "vireo-dsdt-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    try Data(ACPITables.dsdt()).write(to: URL(fileURLWithPath: directory + "/dsdt.dat"))
    let (status, log) = try ChildCommand.run("/usr/bin/iasl", ["-d", "dsdt.dat"], in: directory)
    #expect(status == 0, "\(log)")
    let source = try String(contentsOfFile: directory + "/dsdt.dsl", encoding: .utf8)
    // Without iasl's comments (`// _HID: Hardware ID`, `/* Power Button Device */`) and line breaks.
    let code = source.split(separator: "\n").map { line in line.range(of: "//").map { String(line[..<$0.lowerBound]) } ?? String(line) }
        .joined(separator: " ").replacing(/\/\*.*?\*\//, with: "")
    let compact = code.split(whereSeparator: \.isWhitespace).joined(separator: " ")
    for expected in [
        #"Name (_S5, Package (0x04)"#, #"Device (COM1)"#, #"Device (PS2K)"#, #"Device (PCI0)"#,
        #"Device (PWRB) { Name (_HID, EisaId ("PNP0C0C") )"#, #"Device (GED0) { Name (_HID, "ACPI0013" )"#,
        #"Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x00000009, }"#,
        #"Method (_EVT, 1, NotSerialized) { Notify (PWRB, 0x80)"#,
    ] {
        #expect(compact.contains(expected), "\(expected) not in the disassembly (\(directory)/dsdt.dsl)")
    }
}
