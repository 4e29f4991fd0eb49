import Crypto
import Foundation

/// A validated governance directory, compiled: the config tree a release carries, the
/// limits HQ sets on country overlays, and where each compiled field was written (for
/// messages about it).
public struct CompiledGovernance: Sendable {
    public let tenant: String
    public let levels: [String]
    /// `{governance, kpis, roles, queues, allocation, escalation, proactive}`; list
    /// sections become objects keyed by id, each item keeping its position as `order`.
    public let config: ConfigValue
    public let overrides: [OverrideRule]
    /// SHA-256 over the source files (name and bytes), to tie a release to its sources.
    public let sourceDigest: String
}

/// Reads and validates a governance directory (see docs/GOVERNANCE.md), collecting every
/// issue rather than stopping at the first, each with file, line and field.
public enum GovernanceCompiler {
    /// Compiles `directory`, or throws ``GovernanceIssues`` listing everything wrong.
    public static func compile(directory: String) throws(GovernanceIssues) -> CompiledGovernance {
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        guard fm.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw GovernanceIssues([GovernanceIssue(file: directory, line: 0, field: "", message: "no such file or directory")])
        }
        guard isDirectory.boolValue else {
            throw GovernanceIssues([GovernanceIssue(file: directory, line: 0, field: "", message: "not a directory (give the directory holding the YAML sources)")])
        }
        let names = ((try? fm.contentsOfDirectory(atPath: directory)) ?? [])
            .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted()
        guard !names.isEmpty else {
            throw GovernanceIssues([GovernanceIssue(file: directory, line: 0, field: "", message: "no .yaml files")])
        }
        var sources: [(name: String, text: String)] = []
        var issues: [GovernanceIssue] = []
        for name in names {
            let path = (directory as NSString).appendingPathComponent(name)
            guard let data = fm.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                issues.append(GovernanceIssue(file: path, line: 0, field: "", message: "unreadable or not UTF-8"))
                continue
            }
            sources.append((path, text))
        }
        return try compile(sources: sources, earlierIssues: issues)
    }

    /// Compiles in-memory sources (file name, YAML text): what ``compile(directory:)``
    /// reads, and what tests feed directly.
    public static func compile(sources: [(name: String, text: String)], earlierIssues: [GovernanceIssue] = []) throws(GovernanceIssues) -> CompiledGovernance {
        var reader = GovernanceReader()
        reader.issues = earlierIssues
        var sections: [String: (node: SourceNode, file: String, line: Int)] = [:]
        var hasher = SHA256()
        for source in sources {
            hasher.update(data: Data((source.name as NSString).lastPathComponent.utf8))
            hasher.update(data: Data(source.text.utf8))
            let root: SourceNode?
            do { root = try SourceNode.parse(yaml: source.text, file: source.name) } catch {
                reader.issues.append(error)
                continue
            }
            guard let root else { continue }
            guard case .mapping(let pairs) = root.content else {
                reader.issue(root, "", "a governance file must be a mapping of sections (\(Sections.order.joined(separator: ", "))), got \(root.shapeName)")
                continue
            }
            for pair in pairs {
                guard Sections.order.contains(pair.key) else {
                    reader.issues.append(GovernanceIssue(file: source.name, line: pair.keyLine, field: pair.key,
                                                         message: "unknown section (expected one of \(Sections.order.joined(separator: ", ")))"))
                    continue
                }
                if let earlier = sections[pair.key] {
                    reader.issues.append(GovernanceIssue(file: source.name, line: pair.keyLine, field: pair.key,
                                                         message: "section already defined in \(earlier.file):\(earlier.line)"))
                    continue
                }
                sections[pair.key] = (pair.value, source.name, pair.keyLine)
            }
        }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let anyFile = sources.first?.name ?? "(no files)"
        guard let governance = sections["governance"] else {
            // A file that did not parse may well hold it: report only what is known.
            if !reader.issues.isEmpty { throw GovernanceIssues(reader.issues) }
            reader.issues.append(GovernanceIssue(file: anyFile, line: 0, field: "governance",
                                                 message: "section missing: add `governance:` with tenant, title and levels"))
            throw GovernanceIssues(reader.issues)
        }
        var config: [String: ConfigValue] = [:]
        let header = reader.read(governance.node, Sections.governance, field: "governance")
        let levels = header?.objectValue?["levels"]?.listValue?.compactMap(\.stringValue) ?? []
        if header != nil, !(2...3).contains(levels.count) || Set(levels).count != levels.count {
            reader.issue(governance.node, "governance.levels", "expected 2 or 3 distinct level names, top-down (e.g. [hq, country, dealer]), got \(levels)")
        }
        // Read as text, so the rest is still judged against the levels; refused here with its
        // line (what publish refused only as "not this tenant", and validate let through).
        if let tenant = header?.objectValue?["tenant"]?.stringValue, !GovernanceReader.isIdentifier(tenant) {
            reader.issue(governance.node, "governance.tenant",
                         "expected a tenant identifier (1–64 lowercase letters, digits and '-', not starting with '-'), got '\(tenant.prefix(64))'")
        }
        reader.levels = levels
        config["governance"] = header
        for name in Sections.order where name != "governance" && name != "overrides" {
            guard let section = sections[name] else { config[name] = .object([:]); continue }
            config[name] = .object(reader.readItems(section.node, section: name))
        }
        var compiled = ConfigValue.object(config)
        var overrides: [OverrideRule] = []
        if let section = sections["overrides"] {
            overrides = reader.readOverrides(section.node, config: compiled)
        }
        CrossChecks.run(&reader, config: &compiled)
        guard reader.issues.isEmpty else { throw GovernanceIssues(reader.issues) }
        return CompiledGovernance(tenant: header?.objectValue?["tenant"]?.stringValue ?? "", levels: levels, config: compiled,
                                  overrides: overrides, sourceDigest: digest)
    }
}

/// Everything wrong with a governance source, in file and line order.
public struct GovernanceIssues: Error, Sendable, CustomStringConvertible {
    public let issues: [GovernanceIssue]

    public init(_ issues: [GovernanceIssue]) {
        self.issues = issues.sorted { ($0.file, $0.line, $0.field) < ($1.file, $1.line, $1.field) }
    }

    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

/// Walks source nodes against their ``Shape``s, collecting issues and building values.
struct GovernanceReader {
    var issues: [GovernanceIssue] = []
    var levels: [String] = []
    /// Where each compiled path was written: `allocation.key-accounts.then.queue` → line.
    var lines: [String: (file: String, line: Int)] = [:]

    mutating func issue(_ node: SourceNode, _ field: String, _ message: String) {
        issues.append(GovernanceIssue(file: node.file, line: node.line, field: field, message: message))
    }

    /// Reads a list section into `{id: item}`, keeping each item's position as `order`.
    mutating func readItems(_ node: SourceNode, section: String) -> [String: ConfigValue] {
        guard case .sequence(let items) = node.content else {
            issue(node, section, "expected a list of items, got \(node.shapeName)")
            return [:]
        }
        var result: [String: ConfigValue] = [:]
        var firstLine: [String: Int] = [:]
        for (index, item) in items.enumerated() {
            var label = "\(section)[\(index)]"
            if case .mapping(let pairs) = item.content, let idNode = pairs.first(where: { $0.key == "id" })?.value,
               case .scalar(let id, _) = idNode.content, Self.isIdentifier(id) {
                label = "\(section).\(id)"
            }
            guard case .object(var fields)? = read(item, .record(Sections.items[section]!), field: label, partial: true) else { continue }
            guard let id = fields.removeValue(forKey: "id")?.stringValue else { continue }
            if let earlier = firstLine[id] {
                issue(item, label + ".id", "duplicate id '\(id)' (first defined at line \(earlier))")
                continue
            }
            firstLine[id] = item.line
            fields["order"] = .number(Double(index))
            result[id] = .object(fields)
        }
        return result
    }

    mutating func readOverrides(_ node: SourceNode, config: ConfigValue) -> [OverrideRule] {
        guard case .sequence(let items) = node.content else {
            issue(node, "overrides", "expected a list of {path, bound}, got \(node.shapeName)")
            return []
        }
        var rules: [OverrideRule] = []
        for (index, item) in items.enumerated() {
            let label = "overrides[\(index)]"
            guard let fields = read(item, .record(Sections.items["overrides"]!), field: label)?.objectValue,
                  let path = fields["path"]?.stringValue, let boundValue = fields["bound"],
                  let bound = OverrideBound(boundValue) else { continue }
            if path.split(separator: ".").last == "order" {
                issue(item, label + ".path", "the order of items is HQ's: it cannot be overridden")
                continue
            }
            let rule = OverrideRule(path: path, bound: bound)
            let matches = rule.matchingPaths(in: config)
            if matches.isEmpty {
                issue(item, label + ".path", "'\(path)' matches no field of the compiled config (use section.id.field, * for any id)")
                continue
            }
            for match in matches {
                if let problem = bound.fits(base: config[path: match]!) {
                    issue(item, label + ".bound", "\(match): \(problem)")
                }
            }
            // A country could otherwise set a value the release itself may not hold
            // (priority 0, a sale contact 5 days before the sale).
            if case .range(let lo, let hi) = bound,
               let own = matches.lazy.compactMap({ if case .integer(let r)? = Sections.shape(at: $0) { r } else { nil } }).first,
               lo < Double(own.lowerBound) || hi > Double(own.upperBound) {
                issue(item, label + ".bound", "\(path): \(bound) reaches outside the field's own \(own.lowerBound)…\(own.upperBound)")
            }
            rules.append(rule)
        }
        return rules
    }

    static func isIdentifier(_ s: String) -> Bool {
        guard let first = s.utf8.first, s.utf8.count <= 64 else { return false }
        let ok: (UInt8) -> Bool = { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2d }
        return ok(first) && first != 0x2d && s.utf8.allSatisfy(ok)
    }

    /// Reads `node` as `shape`; nil (with issues recorded) when it does not fit.
    mutating func read(_ node: SourceNode, _ shape: Shape, field: String, partial: Bool = false) -> ConfigValue? {
        lines[field] = (node.file, node.line)
        switch shape {
        case .record(let rules):
            guard case .mapping(let pairs) = node.content else {
                issue(node, field, "expected a mapping with \(rules.map(\.name).joined(separator: ", ")), got \(node.shapeName)")
                return nil
            }
            var result: [String: ConfigValue] = [:]
            var ok = true
            for pair in pairs {
                let sub = field + "." + pair.key
                guard let rule = rules.first(where: { $0.name == pair.key }) else {
                    issues.append(GovernanceIssue(file: node.file, line: pair.keyLine, field: sub,
                                                  message: "unknown field (expected \(rules.map(\.name).joined(separator: ", ")))"))
                    ok = false
                    continue
                }
                if result[pair.key] != nil {
                    issues.append(GovernanceIssue(file: node.file, line: pair.keyLine, field: sub, message: "field appears twice"))
                    ok = false
                    continue
                }
                if case .scalar(let s, false) = pair.value.content, ["", "~", "null"].contains(s) {
                    if rule.required {
                        issues.append(GovernanceIssue(file: node.file, line: pair.keyLine, field: sub, message: "required field has no value"))
                        ok = false
                    }
                    continue
                }
                if let value = read(pair.value, rule.shape, field: sub) { result[pair.key] = value } else { ok = false }
            }
            for rule in rules where rule.required && !pairs.contains(where: { $0.key == rule.name }) {
                issue(node, field + "." + rule.name, "required field missing")
                ok = false
            }
            // Keep what was valid even when something was not: an item with one bad field
            // still exists for the rules referring to it, so one mistake is one message.
            return ok || partial ? .object(result) : nil
        case .list(let element, let nonEmpty):
            guard case .sequence(let items) = node.content else {
                issue(node, field, "expected a list, got \(node.shapeName)")
                return nil
            }
            if nonEmpty, items.isEmpty { issue(node, field, "must not be empty"); return nil }
            var values: [ConfigValue] = []
            for (i, item) in items.enumerated() {
                guard let v = read(item, element, field: "\(field)[\(i)]") else { return nil }
                values.append(v)
            }
            return .list(values)
        case .oneOrMany(let element):
            if case .sequence = node.content { return read(node, .list(element, nonEmpty: true), field: field) }
            return read(node, element, field: field).map { .list([$0]) }
        default:
            return readScalar(node, shape, field: field)
        }
    }

    private mutating func readScalar(_ node: SourceNode, _ shape: Shape, field: String) -> ConfigValue? {
        if case .bound = shape {
            if case .mapping = node.content {
                guard let v = read(node, .record([.required("min", .number), .required("max", .number)]), field: field) else { return nil }
                if let o = v.objectValue, let lo = o["min"]?.numberValue, let hi = o["max"]?.numberValue, lo > hi {
                    issue(node, field, "min \(ConfigValue.number(lo)) is above max \(ConfigValue.number(hi))")
                    return nil
                }
                return v
            }
        }
        guard case .scalar(let raw, _) = node.content, let value = node.configValue else {
            issue(node, field, "expected \(expectation(shape)), got \(node.shapeName)")
            return nil
        }
        func fail(_ what: String) -> ConfigValue? {
            issue(node, field, "expected \(expectation(shape)), got \(what)")
            return nil
        }
        switch shape {
        case .text(let max):
            guard case .string(let s) = value, !s.trimmingCharacters(in: .whitespaces).isEmpty else { return fail("'\(raw.prefix(40))'") }
            guard s.count <= max else { return fail("\(s.count) characters") }
            return value
        case .identifier:
            guard case .string(let s) = value, Self.isIdentifier(s) else { return fail("'\(raw.prefix(40))'") }
            return value
        case .level:
            guard case .string(let s) = value, levels.contains(s) else { return fail("'\(raw.prefix(40))'") }
            return value
        case .duration(let allowsZero):
            guard case .string(let s) = value, let d = GovernanceDuration(s), d.seconds <= GovernanceDuration.maxSeconds,
                  allowsZero || d.seconds > 0 else { return fail("'\(raw.prefix(40))'") }
            return .string(d.description)
        case .integer(let range):
            // Compared as a double first: converting 1e19 (or inf, nan) to Int traps.
            guard case .number(let d) = value, d == d.rounded(), d >= Double(range.lowerBound), d <= Double(range.upperBound),
                  range.contains(Int(d)) else { return fail("'\(raw.prefix(40))'") }
            return value
        case .number:
            guard case .number = value else { return fail("'\(raw.prefix(40))'") }
            return value
        case .boolean:
            guard case .bool = value else { return fail("'\(raw.prefix(40))'") }
            return value
        case .choice(let options):
            guard case .string(let s) = value, options.contains(s) else { return fail("'\(raw.prefix(40))'") }
            return value
        case .bound:
            guard case .string(let s) = value, Vocabulary.boundKeywords.contains(s) else { return fail("'\(raw.prefix(40))'") }
            return value
        case .record, .list, .oneOrMany:
            return fail(node.shapeName)
        }
    }

    func expectation(_ shape: Shape) -> String {
        switch shape {
        case .text(let max): "text of 1 to \(max) characters"
        case .identifier: "an identifier (lowercase letters, digits, '-')"
        case .level: levels.isEmpty ? "a level name" : "a level: one of \(levels.joined(separator: ", "))"
        case .duration(let allowsZero):
            "a duration like 20s, 15m, 4h, 2d or 1w, \(allowsZero ? "" : "more than 0s (it would fall due the moment a dialogue is created), ")at most \(GovernanceDuration(seconds: GovernanceDuration.maxSeconds))"
        case .integer(let r): "an integer from \(r.lowerBound) to \(r.upperBound)"
        case .number: "a number"
        case .boolean: "true or false"
        case .choice(let options): "one of \(options.joined(separator: ", "))"
        case .list: "a list"
        case .oneOrMany(let e): "\(expectation(e)) or a list of them"
        case .record: "a mapping"
        case .bound: "shorten, rename, stricter or {min: …, max: …}"
        }
    }
}
