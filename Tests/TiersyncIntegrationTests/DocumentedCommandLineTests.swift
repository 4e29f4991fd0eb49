import ArgumentParser
import Foundation
import Testing
import TiersyncTestSupport
@testable import tiersync

// Every `tiersync …` line the documentation shows (README.md, ARCHITECTURE.md and
// docs/*.md), parsed by the real command tree (issue 12, item 7): a renamed or removed
// option or command, or a value of the wrong type, fails here. README's lines are also run
// as processes (CLICommandTests); the others need a hub, a cluster or a file of their own,
// so they are parsed, not run.

/// A `tiersync` line as documented, with where it is.
struct DocumentedLine: CustomStringConvertible {
    let file: String
    let line: Int
    let words: [String]
    var description: String { "\(file):\(line): \(words.joined(separator: " "))" }

    /// Every line of a fenced block in `file` that runs `tiersync` (`$ ` prompts dropped,
    /// continuations joined, comments cut).
    static func all(in file: String) throws -> [DocumentedLine] {
        let text = try String(contentsOfFile: repositoryRoot() + "/" + file, encoding: .utf8)
        var found: [DocumentedLine] = [], inBlock = false, pending = "", pendingStart = 0
        for (index, raw) in text.components(separatedBy: "\n").enumerated() {
            var line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("```") {
                inBlock.toggle()
                pending = ""
                continue
            }
            guard inBlock else { continue }
            if pending.isEmpty {
                if line.hasPrefix("$ ") { line.removeFirst(2) }
                pendingStart = index + 1
            }
            if line.hasSuffix("\\") {
                pending += line.dropLast() + " "
                continue
            }
            let words = Readme.words(pending + line)
            pending = ""
            // A command, not a diagram naming the CLI (`tiersync (CLI) ──► …`).
            guard words.first == "tiersync", words.count > 1, words[1].wholeMatch(of: /[a-z][a-z-]*/) != nil else { continue }
            found.append(DocumentedLine(file: file, line: pendingStart, words: words))
        }
        return found
    }

    /// The arguments as a user fills the line in: optional parts (`[--json]`) taken,
    /// the first of alternatives (`+10m|ISO`, `list|disable`), a count (`N`) given a number,
    /// an elided value (`--cert …`) given one, and a trailing `…` ("more options") dropped.
    var arguments: [String] {
        var out: [String] = []
        for word in words.dropFirst() {
            var w = word.replacingOccurrences(of: "[", with: "").replacingOccurrences(of: "]", with: "")
            if let bar = w.firstIndex(of: "|"), !w.hasPrefix("postgres") { w = String(w[..<bar]) }
            if w == "…" {
                if out.last?.hasPrefix("--") == true { out.append("value") }
                continue
            }
            if w == "N" { w = "2" }
            if !w.isEmpty { out.append(w) }
        }
        return out
    }
}

@Suite("Documented command lines")
struct DocumentedCommandLineTests {
    static let files = ["README.md", "ARCHITECTURE.md"] + ((try? FileManager.default.contentsOfDirectory(atPath: repositoryRoot() + "/docs")) ?? [])
        .filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }

    @Test("every tiersync line in README.md, ARCHITECTURE.md and docs/*.md names a command and options that exist, with values that parse")
    func everyLineParses() throws {
        var lines: [DocumentedLine] = []
        for file in Self.files { lines += try DocumentedLine.all(in: file) }
        // The docs show dozens of lines across the files; far fewer means the reader broke.
        #expect(lines.count >= 60, "found only \(lines.count) documented lines")
        #expect(Set(lines.map(\.file)).count >= 4)
        var failures: [String] = []
        for line in lines {
            do {
                _ = try Tiersync.parseAsRoot(line.arguments)
            } catch {
                // `--help` and `--version` exit cleanly; anything else the parser refused.
                if Tiersync.exitCode(for: error) == .success { continue }
                failures.append("\(line)\n    → \(Tiersync.message(for: error))")
            }
        }
        #expect(failures.isEmpty, "documented lines the CLI refuses:\n\(failures.joined(separator: "\n"))")
    }

    @Test("the reader catches what it is for: an unknown option and an unknown command are refused")
    func refusalsAreSeen() throws {
        let bad = DocumentedLine(file: "x", line: 1, words: Readme.words("tiersync admin erasures --data D --tenant acme [--no-such-option]"))
        #expect(throws: (any Error).self) { _ = try Tiersync.parseAsRoot(bad.arguments) }
        #expect(throws: (any Error).self) { _ = try Tiersync.parseAsRoot(["admin", "no-such-command"]) }
        let good = DocumentedLine(file: "x", line: 1, words: Readme.words("tiersync admin erasures --data DATA --tenant acme [--outstanding] [--json]"))
        #expect(good.arguments == ["admin", "erasures", "--data", "DATA", "--tenant", "acme", "--outstanding", "--json"])
        _ = try Tiersync.parseAsRoot(good.arguments)
    }
}
