/// Errors raised by the lab tooling (not scenario failures, which are `ScenarioOutcome`s).
public enum LabError: Error, CustomStringConvertible, Sendable {
    case io(String)
    case format(String)
    case missingTool(String)
    case command(String)
    case scenario(String)

    public var description: String {
        switch self {
        case .io(let message): "I/O error: \(message)"
        case .format(let message): "format error: \(message)"
        case .missingTool(let message): "missing tool: \(message)"
        case .command(let message): message
        case .scenario(let message): "scenario error: \(message)"
        }
    }
}
