import Foundation
import Testing

/// Real Proxmox clients from PyPI against a real vireod over HTTPS: prometheus-pve-exporter and
/// Ansible's proxmox_kvm (scripts/setup-host installs both).
@Suite(.serialized) struct ClientCompatibilityTests {
    static func script(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(name).path
    }

    static func pythonHas(_ module: String) -> Bool {
        ((try? runProgram("/usr/bin/env", ["python3", "-c", "import \(module)"]))?.status ?? 1) == 0
    }

    @Test func prometheusPVEExporterScrapesVireod() async throws {
        try #require(Self.pythonHas("pve_exporter"), "prometheus-pve-exporter is not installed: run scripts/setup-host")
        let daemon = try DaemonHarness(tls: true)
        try await daemon.start()
        defer { daemon.shutdown() }
        // A VM to report (through the CLI: the harness's URLSession does not speak to a self-signed node).
        let create = try runProgram(DaemonHarness.vireo, ["vm", "create", "100", "name=scraped", "memory=64", "onboot=1",
                                                          "--url", "https://\(daemon.hostPort)", "--insecure", "--password", DaemonHarness.password])
        #expect(create.status == 0, "\(create.output)")
        let (status, text) = try runProgram("/usr/bin/env", ["python3", Self.script("pve_exporter_scrape.py"), daemon.hostPort, DaemonHarness.password])
        #expect(status == 0, "\(text)\n\(daemon.daemonLog().suffix(2000))")
        #expect(text.contains("pve_up{id=\"node/testnode\"} 1.0"), "\(text)")
        #expect(text.contains("pve_up{id=\"qemu/100\"} 0.0"))
        #expect(text.contains("pve_up{id=\"storage/testnode/local\"} 1.0"))
        #expect(text.contains("pve_guest_info{id=\"qemu/100\",name=\"scraped\",node=\"testnode\""))
        #expect(text.contains("pve_memory_size_bytes{id=\"qemu/100\"} 6.7108864e+07"))
        #expect(text.contains("pve_onboot_status{id=\"qemu/100\",node=\"testnode\",type=\"qemu\"} 1.0"))
        #expect(text.contains("pve_version_info{"))
        #expect(text.contains("pve_node_info{"))
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")))
    func ansibleProxmoxKVMDrivesALifecycle() async throws {
        let playbook = (try? runProgram("/usr/bin/env", ["ansible-playbook", "--version"]))?.status ?? 1
        try #require(playbook == 0, "ansible-playbook is not installed: run scripts/setup-host")
        let daemon = try DaemonHarness(tls: true)
        try await daemon.start()
        defer { daemon.shutdown() }
        let port = String(daemon.hostPort.split(separator: ":").last ?? "")
        // Modules run under the Python that has proxmoxer (interpreter discovery may pick another).
        let python = try runProgram("/usr/bin/env", ["python3", "-c", "import sys; print(sys.executable)"]).output
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (status, text) = try runProgram("/usr/bin/env", [
            "ansible-playbook", "-i", "localhost,", "-c", "local", Self.script("ansible_lifecycle.yml"),
            "-e", "api_port=\(port)", "-e", "api_password=\(DaemonHarness.password)", "-e", "vmid=120", "-e", "ansible_python_interpreter=\(python)",
        ], environment: ["ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"])
        #expect(status == 0, "\(text)\n\(daemon.daemonLog().suffix(2000))")
        #expect(text.contains("failed=0"), "\(text)")
    }
}
