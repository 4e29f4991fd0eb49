import Foundation

/// A country's changes to HQ's release, as signed by the country: `set` maps compiled
/// paths to new values. Overlays change existing fields only; they never add or remove.
public struct Overlay: Sendable, Hashable, Codable {
    public var tenant: String
    public var country: String
    /// Grows with every overlay the country publishes; the highest one counts.
    public var sequence: Int
    public var createdAtMillis: UInt64
    /// The release the author checked it against (informational: nodes check it against
    /// the release they apply).
    public var basedOn: Int?
    public var set: [String: ConfigValue]

    public init(tenant: String, country: String, sequence: Int, createdAtMillis: UInt64, basedOn: Int?, set: [String: ConfigValue]) {
        self.tenant = tenant
        self.country = country
        self.sequence = sequence
        self.createdAtMillis = createdAtMillis
        self.basedOn = basedOn
        self.set = set
    }

    /// `de#3`: how status tables name an overlay.
    public var label: String { "\(country)#\(sequence)" }

    /// Every change checked against `release`'s limits: the normalised overlay, or every
    /// refusal (each naming the field and the limit).
    public func checked(against release: Release) -> Result<Overlay, OverlayRefusals> {
        var refusals: [OverlayRefusal] = []
        var normalised = self
        for path in set.keys.sorted() {
            let proposed = set[path]!
            guard let base = release.config[path: path] else {
                refusals.append(OverlayRefusal(path: path, reason: .unknownField(release: release.version)))
                continue
            }
            guard let rule = release.overrides.first(where: { $0.matches(path) }) else {
                refusals.append(OverlayRefusal(path: path, reason: .notOverridable))
                continue
            }
            switch rule.bound.admit(proposed, base: base) {
            case .success(let value):
                // Within the field's own range too, whatever range a release signed before
                // the compiler checked bounds against it allows.
                if case .integer(let own)? = Sections.shape(at: path), let number = value.numberValue,
                   !(Double(own.lowerBound)...Double(own.upperBound)).contains(number) {
                    refusals.append(OverlayRefusal(path: path, reason: .outOfBounds("\(value) is outside the field's own \(own.lowerBound)…\(own.upperBound)"),
                                                   limit: rule.bound))
                    continue
                }
                // A percentage target stays a percentage (`at_least: 150` is "stricter" and
                // unreachable); a target in seconds or a count is never below 0 (`at_most: -5`).
                let parts = path.split(separator: ".")
                if parts.count == 3, parts[0] == "kpis", parts[2] == "target",
                   let number = value.objectValue?.values.first?.numberValue {
                    let percent = release.config[path: "kpis.\(parts[1]).unit"]?.stringValue == "percent"
                    if percent ? !(0...100).contains(number) : number < 0 {
                        let requirement = percent ? "a percentage target must be between 0 and 100" : "a target is never below 0"
                        refusals.append(OverlayRefusal(path: path, reason: .outOfBounds("\(requirement), got \(ConfigValue.number(number))"), limit: rule.bound))
                        continue
                    }
                }
                normalised.set[path] = value
            case .failure(let reason): refusals.append(OverlayRefusal(path: path, reason: reason, limit: rule.bound))
            }
        }
        return refusals.isEmpty ? .success(normalised) : .failure(OverlayRefusals(refusals: refusals))
    }

    /// `config` with this overlay's values in place (call on a checked overlay).
    public func apply(to config: ConfigValue) -> ConfigValue {
        var result = config
        for (path, value) in set { result.replace(path: path, with: value) }
        return result
    }
}

/// Why one overlay field was refused, naming the field and HQ's limit.
public struct OverlayRefusal: Sendable, Hashable, CustomStringConvertible {
    public enum Reason: Sendable, Hashable, Error {
        case unknownField(release: Int)
        case notOverridable
        case wrongType(String)
        case outOfBounds(String)
        case notApplicable
    }

    public let path: String
    public let reason: Reason
    public var limit: OverrideBound?

    public var description: String { "\(path): \(reasonText)" }

    /// The reason without the field's path.
    public var reasonText: String {
        let limitText = limit.map { " (HQ's limit: \($0))" } ?? ""
        switch reason {
        case .unknownField(let version): return "no such field in release \(version); overlays change fields, they cannot add them"
        case .notOverridable: return "HQ does not let countries change this field"
        case .wrongType(let expected): return "expected \(expected)\(limitText)"
        case .outOfBounds(let why): return "\(why)\(limitText)"
        case .notApplicable: return "HQ's value does not fit its own limit\(limitText)"
        }
    }
}

public struct OverlayRefusals: Error, Sendable, CustomStringConvertible {
    public let refusals: [OverlayRefusal]
    public var description: String { refusals.map(\.description).joined(separator: "; ") }
}

/// A country overlay as authored in YAML (`overlay: {country, based_on, set}`).
public struct OverlaySource: Sendable {
    public let country: String
    public let basedOn: Int?
    public let set: [String: ConfigValue]
    /// Line of each `set` entry, for messages.
    public let lines: [String: Int]
    public let file: String

    public static func parse(yaml: String, file: String) throws(GovernanceIssues) -> OverlaySource {
        let root: SourceNode?
        do { root = try SourceNode.parse(yaml: yaml, file: file) } catch { throw GovernanceIssues([error]) }
        var reader = GovernanceReader()
        guard let root, case .mapping(let top) = root.content, top.count == 1, top[0].key == "overlay" else {
            throw GovernanceIssues([GovernanceIssue(file: file, line: root?.line ?? 1, field: "", message: "an overlay file holds one section, `overlay:` with country, based_on and set")])
        }
        let node = top[0].value
        guard case .mapping(let pairs) = node.content else {
            throw GovernanceIssues([GovernanceIssue(file: file, line: node.line, field: "overlay", message: "expected a mapping with country, based_on, set")])
        }
        var country: String?
        var basedOn: Int?
        var set: [String: ConfigValue] = [:]
        var lines: [String: Int] = [:]
        for pair in pairs {
            switch pair.key {
            case "country":
                country = reader.read(pair.value, .text(maxLength: 64), field: "overlay.country")?.stringValue
            case "based_on":
                basedOn = reader.read(pair.value, .integer(1...Int(Int32.max)), field: "overlay.based_on")?.numberValue.map { Int($0) }
            case "set":
                guard case .mapping(let entries) = pair.value.content else {
                    reader.issue(pair.value, "overlay.set", "expected a mapping of field path → new value")
                    continue
                }
                // `set: {}` is a mapping: told it was not one, the writer looked for a typo (helper 82).
                guard !entries.isEmpty else {
                    reader.issue(pair.value, "overlay.set", "names no field: an overlay sets at least one field HQ allows countries to change")
                    continue
                }
                for entry in entries {
                    guard let value = entry.value.configValue else {
                        reader.issues.append(GovernanceIssue(file: file, line: entry.keyLine, field: "overlay.set.\(entry.key)", message: "no value given"))
                        continue
                    }
                    set[entry.key] = value
                    lines[entry.key] = entry.keyLine
                }
            case "remove", "delete", "add":
                reader.issues.append(GovernanceIssue(file: file, line: pair.keyLine, field: "overlay.\(pair.key)",
                                                     message: "overlays may only change fields HQ allows (limit: nothing may be added or removed)"))
            default:
                reader.issues.append(GovernanceIssue(file: file, line: pair.keyLine, field: "overlay.\(pair.key)",
                                                     message: "unknown field (expected country, based_on, set)"))
            }
        }
        if country == nil, !reader.issues.contains(where: { $0.field == "overlay.country" }) {
            reader.issue(node, "overlay.country", "required field missing")
        }
        if !pairs.contains(where: { $0.key == "set" }) {
            reader.issue(node, "overlay.set", "required field missing: the fields this overlay changes")
        }
        guard reader.issues.isEmpty, let country else { throw GovernanceIssues(reader.issues) }
        return OverlaySource(country: country, basedOn: basedOn, set: set, lines: lines, file: file)
    }

    /// Refusals located in the source file (`de.yaml:7: overlay.set.…: …`).
    public func locate(_ refusals: OverlayRefusals) -> GovernanceIssues {
        GovernanceIssues(refusals.refusals.map {
            GovernanceIssue(file: file, line: lines[$0.path] ?? 1, field: "overlay.set.\($0.path)", message: $0.reasonText)
        })
    }
}
