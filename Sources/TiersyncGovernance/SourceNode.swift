import Foundation
import Yams

/// A parsed YAML node with the file and line it came from: everything the validator
/// needs to point an author at the exact spot (`kpis.yaml:12`). Converted from Yams'
/// `Node` at once, so nothing non-`Sendable` escapes the parser.
public struct SourceNode: Sendable {
    public enum Content: Sendable {
        /// `quoted` scalars are always strings; plain ones may be numbers or booleans.
        case scalar(String, quoted: Bool)
        case mapping([(key: String, keyLine: Int, value: SourceNode)])
        case sequence([SourceNode])
    }

    public let content: Content
    public let file: String
    public let line: Int

    /// A short name of the node's shape, for "expected a list, got a mapping".
    public var shapeName: String {
        switch content {
        case .scalar(let s, let quoted): quoted ? "a string" : (s.isEmpty || s == "~" || s == "null" ? "nothing" : "'\(s.prefix(40))'")
        case .mapping: "a mapping"
        case .sequence: "a list"
        }
    }

    /// Reads one YAML file. Syntax errors come back as a located ``GovernanceIssue``.
    public static func parse(yaml: String, file: String) throws(GovernanceIssue) -> SourceNode? {
        let node: Node?
        do {
            node = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw Self.issue(for: error, file: file)
        } catch {
            throw GovernanceIssue(file: file, line: 1, field: "", message: "not valid YAML: \(error)")
        }
        guard let node else { return nil }
        var budget = maxNodes
        guard let converted = convert(node, file: file, inheritedLine: 1, budget: &budget) else {
            throw GovernanceIssue(file: file, line: 1, field: "",
                                  message: "more than \(maxNodes) values in one file (an alias repeated inside aliases expands without end): not read")
        }
        return converted
    }

    /// The most values one file may hold once its aliases are expanded. Governance files
    /// hold a few thousand; a kilobyte of aliases nested nine deep expands to a billion,
    /// which the walk below would materialize.
    public static let maxNodes = 100_000

    /// nil once more than `budget` nodes were visited.
    private static func convert(_ node: Node, file: String, inheritedLine: Int, budget: inout Int) -> SourceNode? {
        budget -= 1
        guard budget >= 0 else { return nil }
        let line = node.mark?.line ?? inheritedLine
        switch node {
        case .scalar(let s):
            let quoted = s.style == .singleQuoted || s.style == .doubleQuoted || s.style == .literal || s.style == .folded
            return SourceNode(content: .scalar(s.string, quoted: quoted), file: file, line: line)
        case .mapping(let m):
            var pairs: [(key: String, keyLine: Int, value: SourceNode)] = []
            for pair in m {
                guard let value = convert(pair.value, file: file, inheritedLine: pair.key.mark?.line ?? line, budget: &budget) else { return nil }
                pairs.append((key: pair.key.scalar?.string ?? "(a key that is not a plain value)", keyLine: pair.key.mark?.line ?? line, value: value))
            }
            return SourceNode(content: .mapping(pairs), file: file, line: line)
        case .sequence(let items):
            var converted: [SourceNode] = []
            for item in items {
                guard let value = convert(item, file: file, inheritedLine: line, budget: &budget) else { return nil }
                converted.append(value)
            }
            return SourceNode(content: .sequence(converted), file: file, line: line)
        case .alias(let a):
            return SourceNode(content: .scalar("*\(a.anchor)", quoted: true), file: file, line: line)
        }
    }

    private static func issue(for error: YamlError, file: String) -> GovernanceIssue {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let where_ = context.map { " \($0.text)" } ?? ""
            return GovernanceIssue(file: file, line: mark.line, field: "", message: "YAML syntax: \(problem)\(where_)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return GovernanceIssue(file: file, line: context.mark.line, field: duplicates.joined(separator: ", "),
                                   message: "key appears twice in one mapping")
        default:
            return GovernanceIssue(file: file, line: 1, field: "", message: "not valid YAML: \(error)")
        }
    }

    /// The scalar as a plain value: a quoted scalar is a string; a plain one a number or
    /// boolean when it reads as one (YAML 1.2 core schema), else a string.
    public var configValue: ConfigValue? {
        switch content {
        case .scalar(let s, let quoted):
            if quoted { return .string(s) }
            switch s {
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            case "", "~", "null", "Null", "NULL": return nil
            default: break
            }
            if let d = Double(s), d.isFinite, s.first != "+" || s.count > 1 { return .number(d) }
            return .string(s)
        case .mapping(let pairs):
            var o: [String: ConfigValue] = [:]
            for p in pairs { guard let v = p.value.configValue else { return nil }; o[p.key] = v }
            return .object(o)
        case .sequence(let items):
            var l: [ConfigValue] = []
            for i in items { guard let v = i.configValue else { return nil }; l.append(v) }
            return .list(l)
        }
    }
}

/// One thing wrong in a governance source: where, which field, what.
public struct GovernanceIssue: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int
    /// The field's path, e.g. `allocation.key-accounts.then.queue` (or `kpis[2].formula`
    /// before the item's id is known).
    public let field: String
    public let message: String

    public init(file: String, line: Int, field: String, message: String) {
        self.file = file
        self.line = line
        self.field = field
        self.message = message
    }

    /// `file:line: field: message`, the form editors and CI logs link to.
    public var description: String {
        field.isEmpty ? "\(file):\(line): \(message)" : "\(file):\(line): \(field): \(message)"
    }
}
