import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncRules
import TiersyncStore

/// `tiersync rules run`: a node's escalation and proactive-contact rules, once, from its own
/// database and the governance in force there — what its agent (or country node, or hub)
/// does periodically, with a time of your choosing.
struct RulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Evaluate a node's escalation and proactive-contact rules.",
        subcommands: [Run.self])

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Evaluate escalation and proactive contacts once, in the node's database, and print what was written.",
            discussion: """
            Works offline: the rules are those of the governance in force at the node at --now, the \
            records those the node holds. What it writes (escalation entries, the escalated \
            dialogues, proactive tasks, cancellations) syncs like any local write. A running agent, \
            country node or hub does the same every 30 seconds (--rules-interval); the records' \
            ids and values are the same whichever node writes them, so nothing is written twice.
            """)
        @OptionGroup var node: NodeDatabase
        @Option(parsing: .unconditional,
                help: "The time to evaluate at: ISO 8601 (e.g. 2026-12-03T10:00:00Z), now, +DURATION or -DURATION (+2h, -1d), as generate --now; default: now. What falls due by then is written for real (and syncs); writes are stamped with the real clock.")
        var now: String?
        @Option(help: "A hub's or country node's --data directory: its directory places dialogues of other nodes (default: the hub's, for a tenant database under <data>/tenants).")
        var data: String?
        @Option(help: "Refused: rules run evaluates a node's SQLite database (--db); see the error for HQ on PostgreSQL.")
        var postgres: String?
        /// Words no option took: `--now` reads the next word whatever it is (so that `-1d` is
        /// a value), so `--now --data X` left X over, and the parser's "unexpected argument
        /// 'X'" did not say that --now had no value (helper 84).
        @Argument(help: .hidden) var leftOver: [String] = []

        func validate() throws {
            if let now, now.hasPrefix("--") {
                throw ValidationError("--now needs a value (now, ±DURATION or an ISO 8601 time), and took the option '\(now)' for it")
            }
            if let word = leftOver.first { throw ValidationError("Unexpected argument '\(word)'") }
            // The command works on one SQLite node database; a hub on PostgreSQL keeps HQ's
            // records in the database, where there is no file to give as --db.
            if postgres != nil {
                throw ValidationError("""
                    rules run works on a node's SQLite database (--db, with --data for the directory that places other nodes): \
                    a hub on PostgreSQL has no tenant database file to evaluate; `hub serve --postgres` runs HQ's rules itself \
                    (--rules-interval). Run this on the SQLite store of a country or dealer instead
                    """)
            }
        }

        func run() async throws {
            let store = try node.open()
            // One reading of a time for every command (helper 82: rules run refused now, +1d and -1d,
            // which generate --now and publish --effective-from take).
            let at = try now.map { text in
                do { return try Admin.parseTime(text) } catch let error as CLIError { throw CLIError("--now: \(error.description)") }
            } ?? WallClock.nowMillis()
            guard let identity = try store.identity() else { throw CLIError("\(node.db) is not enrolled yet") }
            let tree = try await self.tree(tenant: identity.tenant)
            // Another node's directory placed nothing (helper 82: a country's rules run with
            // another country's --data left every dialogue "to another node", without a word).
            if let tree, tree.parents[identity.node] == nil {
                throw CLIError("the directory in \(data ?? "the hub's data") does not hold node '\(identity.node)' of tenant '\(identity.tenant)': give this node's own --data (the directory its node serve mirrors)")
            }
            let runner = RulesRunner(store: store, clock: { at }, tree: { tree })
            let report: RulesRunReport
            do { report = try await runner.runOnce() } catch let error as StoreError { throw CLIError(error.description) }
            Self.print(report, node: identity.node)
            if tree == nil, !report.unplaced.isEmpty {
                // A country's database alone does not say where its dealers are: its node's
                // --data holds the directory it mirrors from HQ (GOVERNANCE.md, "Running the rules").
                Swift.print("(at a country node, give its --data directory with --data: its directory places its dealers' dialogues)")
            }
        }

        /// The tenant's tree from the --data directory's catalog (or the hub's, inferred), if any.
        private func tree(tenant: TenantID) async throws -> NodeTree? {
            var directory = data
            if directory == nil {
                let parent = URL(fileURLWithPath: node.db).standardizedFileURL.deletingLastPathComponent()
                if parent.lastPathComponent == "tenants", FileManager.default.fileExists(atPath: parent.deletingLastPathComponent().path + "/hub.sqlite") {
                    directory = parent.deletingLastPathComponent().path
                }
            }
            guard let directory else { return nil }
            let catalog = try ExistingData(data: directory).existingCatalog()
            return try await catalog.tree(of: tenant)
        }

        static func print(_ report: RulesRunReport, node: NodeID) {
            let time = Timestamp.format(report.nowMillis)
            guard let release = report.release else {
                Swift.print("no governance release in force at \(node) at \(time): nothing evaluated")
                return
            }
            Swift.print("rules of release v\(release)\(report.overlay.map { " ⊕ \($0)" } ?? "") at \(node), evaluated at \(time)")
            for (id, target) in report.placed {
                Swift.print("handed \(id) to \(target), the node of its level for the customer's dealer")
            }
            for e in report.escalated {
                Swift.print("escalated \(e.interactionID) step \(e.step) by rule \(e.rule) (\(e.condition), due \(Timestamp.format(e.dueMillis))): "
                            + "\(e.fromLevel)/\(e.fromQueue ?? "-") at \(e.fromNode?.rawValue ?? "-") → \(e.toLevel)/\(e.toQueue) at \(e.toNode)"
                            + (e.notify.isEmpty ? "" : ", notify \(e.notify.joined(separator: ", "))") + " [escalations/\(e.recordID)]")
            }
            for w in report.withdrawn {
                Swift.print("withdrew the escalation(s) of \(w.interactionID): \(w.reason)")
            }
            for t in report.tasksCreated {
                Swift.print("task \(t.recordID): rule \(t.rule) for vehicle \(t.vehicleID) (customer \(t.customerID)), \(t.channel), due \(t.dueDate), "
                            + "queue \(t.queue) at \(t.assignedNode)")
            }
            for (vehicle, rule, customerHeld) in report.withoutConsent {
                Swift.print("no task: rule \(rule) for vehicle \(vehicle): "
                            + (customerHeld ? "the customer's consent is not given" : "its customer, as the vehicle's dealer holds it, is not held here, so its consent is unknown"))
            }
            for (id, reason) in report.tasksCancelled {
                Swift.print("cancelled task \(id): \(reason)")
            }
            for (id, node) in report.tasksReassigned {
                Swift.print("reassigned task \(id) to \(node): its dealer moved")
            }
            if !report.unplaced.isEmpty {
                Swift.print("left to another node (it knows where they go): \(report.unplaced.joined(separator: ", "))")
            }
            Swift.print("\(report.escalated.count) escalation step(s), \(report.withdrawn.count) withdrawal(s), "
                        + "\(report.tasksCreated.count) task(s) created, \(report.tasksCancelled.count) cancelled")
        }
    }
}
