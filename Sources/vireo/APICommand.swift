import ArgumentParser
import Foundation

/// `vireo api get|post|put|delete PATH [key=value …]`: raw /api2/json calls, like Proxmox's `pvesh`.
struct APICommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Call vireod's /api2/json directly (like pvesh).",
        subcommands: [Get.self, Post.self, Put.self, Delete.self])

    struct CallOptions: ParsableArguments {
        @Argument(help: "API path, e.g. /nodes or /cluster/resources.") var path: String
        @Argument(help: "Parameters as key=value.") var parameters: [String] = []
        @OptionGroup var connection: APIConnectionOptions

        func run(_ method: String) throws {
            var params: [String: String] = [:]
            for parameter in parameters {
                guard let equals = parameter.firstIndex(of: "=") else { throw ValidationError("parameter '\(parameter)' is not key=value") }
                params[String(parameter[..<equals])] = String(parameter[parameter.index(after: equals)...])
            }
            let data = try connection.client().call(method, path, params)
            if connection.output == .json || !(data is String) { printJSON(data) } else { print(data as? String ?? "") }
        }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "GET PATH.")
        @OptionGroup var options: CallOptions
        func run() throws { try options.run("GET") }
    }

    struct Post: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "POST PATH (form-encoded parameters).")
        @OptionGroup var options: CallOptions
        func run() throws { try options.run("POST") }
    }

    struct Put: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "PUT PATH (form-encoded parameters).")
        @OptionGroup var options: CallOptions
        func run() throws { try options.run("PUT") }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "DELETE PATH.")
        @OptionGroup var options: CallOptions
        func run() throws { try options.run("DELETE") }
    }
}
