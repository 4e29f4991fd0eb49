import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncRules
import TiersyncStore

struct NodeDatabase: ParsableArguments {
    @Option(help: "The node's SQLite file.")
    var db: String

    func open() throws -> NodeStore { try openEnrolledStore(db) }
}

struct Contact: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record and look up customer contacts in the node's own database.",
        discussion: "Writes are local and work offline; a running agent syncs them.",
        subcommands: [Add.self, List.self, Show.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Record a customer contact (and the customer, if new).")
        @OptionGroup var node: NodeDatabase
        @Option(help: "Existing customer id; omit to create a customer from the fields below.") var customer: String?
        @Option(help: "Customer first name.") var firstName: String?
        @Option(help: "Customer last name.") var lastName: String?
        @Option(help: "Company name (for company customers).") var company: String?
        @Option(help: "Customer phone.") var phone: String?
        @Option(help: "Customer email.") var email: String?
        @Flag(help: "The new customer is a key account (allocation rules may test it).") var keyAccount = false
        @Option(help: "The new customer's value segment: A, B, C or D (allocation rules may test it).") var segment: String?
        @Option(help: "phone, email, web, chat, visit, fax, sms or post.") var channel = "phone"
        @Option(help: "inbound or outbound.") var direction = "inbound"
        @Option(help: ArgumentHelp("An outbound contact's purpose: marketing or service.",
                                   discussion: "Such a contact is recorded only if the customer consents to that purpose by its channel (docs/PRIVACY.md); an outbound contact without a purpose answers one the customer started."))
        var purpose: String?
        @Option(help: "What the contact is about.") var topic: String
        @Option(help: "scheme (general questions) or specification (a concrete car or offer).") var knowledgeKind = "specification"
        @Option(help: "low, normal, high or critical.") var urgency = "normal"
        @Option(help: "Free-text summary.") var summary: String?
        @Option(help: "Contact id (default: generated).") var id: String?

        func validate() throws {
            // A topic is what the rules match: a blank one matched nothing but the catch-all,
            // and was stored as given (helper 90).
            guard !topic.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
                throw ValidationError("--topic is what the contact is about (the rules match it): give a word or two, not a blank")
            }
            if let purpose {
                guard Consent.Purpose(rawValue: purpose) != nil else {
                    throw ValidationError("--purpose is \(Consent.Purpose.allCases.map(\.rawValue).joined(separator: " or ")), got '\(purpose)'")
                }
                guard direction == "outbound" else { throw ValidationError("--purpose is for an outbound contact (--direction outbound)") }
            }
        }

        func run() throws {
            let store = try node.open()
            var writes: [RecordWrite] = []
            let customerID = customer ?? "cust-" + shortID()
            if customer == nil {
                var fields: [String: FieldValue] = ["kind": .string(company == nil ? "person" : "company")]
                fields["first_name"] = firstName.map(FieldValue.string)
                fields["last_name"] = lastName.map(FieldValue.string)
                fields["company_name"] = company.map(FieldValue.string)
                fields["phone"] = phone.map(FieldValue.string)
                fields["email"] = email.map(FieldValue.string)
                if keyAccount { fields["key_account"] = .bool(true) }
                fields["segment_value"] = segment.map(FieldValue.string)
                guard firstName != nil || lastName != nil || company != nil else {
                    throw CLIError("give --customer <id>, or a new customer's --first-name/--last-name or --company")
                }
                writes.append(.upsert("customers", id: customerID, fields))
            } else if try store.record(table: "customers", id: customerID)?.state.isLive != true {
                throw CLIError("no customer '\(customerID)' in \(node.db)")
            }
            let contactID = id ?? "int-" + shortID()
            // A contact is new: an existing one's id would rewrite it (its customer, status and
            // creation time) while the allocation printed was the old one's.
            if let id, try store.record(table: "interactions", id: id) != nil {
                throw CLIError("a contact '\(id)' exists in \(node.db): `contact add` records a new one (change an existing one with `record put`)")
            }
            var fields: [String: FieldValue] = [
                "customer_id": .string(customerID), "channel": .string(channel), "direction": .string(direction),
                "topic": .string(topic), "knowledge_kind": .string(knowledgeKind), "urgency": .string(urgency),
                "status": .string("new"), "created_at": .string(ISO8601DateFormatter().string(from: Date())),
            ]
            fields["summary"] = summary.map(FieldValue.string)
            fields["purpose"] = purpose.map(FieldValue.string)
            writes.append(.upsert("interactions", id: contactID, fields))
            do {
                try store.commit(writes)
            } catch let error as StoreError {
                throw CLIError(error.description)
            }
            print("recorded contact \(contactID) for customer \(customerID)")
            try printAllocation(of: contactID, in: store)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List customer contacts, newest first.")
        @OptionGroup var node: NodeDatabase
        @Option(help: "Most contacts to show.") var limit = 50

        func validate() throws {
            try validateLimit(limit)
        }

        func run() throws {
            let store = try node.open()
            let customers = Dictionary(uniqueKeysWithValues: try store.liveRecords(table: "customers").map { ($0.id, $0.values) })
            let all = try store.liveRecords(table: "interactions").sorted {
                ($0.values["created_at"]?.description ?? "") > ($1.values["created_at"]?.description ?? "")
            }
            let contacts = all.prefix(limit)
            var rows = [["id", "created", "channel", "topic", "status", "level", "queue", "prio", "sla due", "handler", "customer", "origin"]]
            for c in contacts {
                let customer = c.values["customer_id"]?.stringValue.flatMap { customers[$0] }
                func value(_ field: InteractionField) -> String { c.values[field.rawValue]?.description ?? "" }
                rows.append([c.id, value(.createdAt), value(.channel), value(.topic), value(.status),
                             value(.handlingLevel), value(.queue), value(.priority), value(.slaDue), value(.handlingNode),
                             customer.map(displayName) ?? value(.customerID), value(.originatingNode)])
            }
            printTable(rows)
            // Said when cut short (helper 90: "100 record(s)" of 506 read as all there were).
            print(all.count > contacts.count ? "\(contacts.count) of \(all.count) contact(s), the newest; --limit shows more"
                                             : "\(contacts.count) contact(s)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a contact and its customer, with field versions and conflicts.")
        @OptionGroup var node: NodeDatabase
        @Argument(help: "Contact id.") var id: String

        func run() throws {
            let store = try node.open()
            guard let contact = try store.record(table: "interactions", id: id) else {
                throw CLIError("no contact '\(id)' in \(node.db)")
            }
            printRecord(contact, store: store)
            if let customerID = contact.state.liveValues["customer_id"]?.stringValue,
               let customer = try store.record(table: "customers", id: customerID) {
                print("")
                printRecord(customer, store: store)
            }
        }
    }
}

struct RecordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "record",
        abstract: "Read and write any replicated table in the node's database.",
        subcommands: [Put.self, Get.self, Delete.self, List.self, Tables.self])

    struct Put: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or update a record: tiersync record put --db F customers c-1 last_name=Meyer")
        @OptionGroup var node: NodeDatabase
        @Argument(help: "Table.") var table: String
        @Argument(help: "Record id.") var id: String
        @Argument(help: "field=value assignments (field= sets null).") var assignments: [String]

        func run() throws {
            let store = try node.open()
            guard let schema = store.schema.table(table) else { throw CLIError("unknown table '\(table)'") }
            let fields = try parseAssignments(assignments, table: schema)
            // Consent is recorded with its history (who, when, from which source): a bare field
            // written here would change it with none, and a bare event would tell of a change
            // that never happened.
            if table == DomainSchema.consentEvents.name || (table == DomainSchema.customers.name && fields.keys.contains(where: { $0.hasPrefix("consent_") })) {
                throw CLIError("consent is recorded with its history: use `tiersync consent set --db … --customer ID --purpose P --channel C --grant|--withdraw --source S`")
            }
            try RecordCommand.refuseErasureRecords(table)
            let created = try store.record(table: table, id: id)?.state.isLive != true
            let change = try store.commit([.upsert(table, id: id, fields)])
            print("wrote \(table)/\(id) as change \(change[0].origin)#\(change[0].originSeq)")
            if created, table == DomainSchema.interactions.name { try printAllocation(of: id, in: store) }
        }
    }

    struct Get: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a record with its field versions and conflicts.")
        @OptionGroup var node: NodeDatabase
        @Argument(help: "Table.") var table: String
        @Argument(help: "Record id.") var id: String

        func run() throws {
            let store = try node.open()
            guard let record = try store.record(table: table, id: id) else { throw CLIError("no record \(table)/\(id)") }
            printRecord(record, store: store)
        }
    }

    /// An erasure's marker and its acknowledgements are the store's own writes: a marker
    /// written here erased the rows but neither scrubbed the file nor acknowledged, and an
    /// acknowledgement written here told HQ's ledger "erased, digest …" of data still on
    /// disk (a forged proof). `tiersync erase` writes the marker; the store acknowledges.
    static func refuseErasureRecords(_ table: String) throws {
        if table == DomainSchema.erasures.name {
            throw CLIError("an erasure is requested with `tiersync erase --db … TABLE ID` (it erases, scrubs the file and acknowledges), not written as a record")
        }
        if table == DomainSchema.erasureAcks.name {
            throw CLIError("an erasure's acknowledgement is the store's own proof, written when it has erased and scrubbed: it is never written by hand")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a record (a tombstone that replicates).")
        @OptionGroup var node: NodeDatabase
        @Argument(help: "Table.") var table: String
        @Argument(help: "Record id.") var id: String

        func run() throws {
            try RecordCommand.refuseErasureRecords(table)
            let store = try node.open()
            // A delete of something never held would go up as a change outside the node's
            // scope (no route), refused by its parent and quarantined there.
            guard let record = try store.record(table: table, id: id) else { throw CLIError("no record \(table)/\(id): nothing to delete") }
            guard record.state.isLive else { throw CLIError("\(table)/\(id) is already deleted") }
            try store.commit([.delete(table, id: id)])
            print("deleted \(table)/\(id)")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a table's live records.")
        @OptionGroup var node: NodeDatabase
        @Argument(help: "Table.") var table: String
        @Option(help: "Most records to show.") var limit = 100

        func validate() throws {
            try validateLimit(limit)
        }

        func run() throws {
            let store = try node.open()
            // One more than shown: whether the list is cut short, said (helper 90: "100 record(s)"
            // of 506 read as all there were).
            let records = try store.liveRecords(table: table, limit: limit < Int.max ? limit + 1 : limit)
            for r in records.prefix(limit) { print("\(r.id)  \(CanonicalJSON.object(r.values))") }
            print(records.count > limit ? "the first \(limit) record(s); there are more (--limit shows more)" : "\(records.count) record(s)")
        }
    }

    struct Tables: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Describe the replicated tables and their fields.")

        func run() {
            for t in DomainSchema.schema.tables {
                print("\(t.name): \(t.summary) (routed by \(t.routeFields.joined(separator: ", ")))")
                for f in t.fields { print("  \(f.name): \(f.expectation)\(f.summary.isEmpty ? "" : " - \(f.summary)")") }
            }
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a node database's identity, sync positions, counts and content digest.")
    @OptionGroup var node: NodeDatabase
    @Option(help: "On HQ's tenant database: also the digest of what this node's scope holds here, to compare with the digest that node's own `status` prints (needs --data).")
    var scopeOf: String?
    @Option(help: "With --scope-of: the hub's --data directory (the tenant's tree is read from its catalog).")
    var data: String?

    func validate() throws {
        if scopeOf != nil, data == nil { throw ValidationError("--scope-of needs --data: the hub's directory, whose catalog places the node in the tree") }
    }

    func run() async throws {
        let store = try node.open()
        let identity = try store.identity()
        print("node:        \(identity.map { "\($0.node) (tenant \($0.tenant), parent \($0.parent?.rawValue ?? "none"))" } ?? "not enrolled")")
        print("parent URL:  \(try store.meta("parent_url") ?? "-")")
        let acked = try store.cursor("push.parent")
        print("log head:    \(try store.headSeq())")
        if let identity, identity.parent == nil {
            // HQ's store (a hub's tenant database): nothing is pushed anywhere, so nothing waits.
            print("push:        none (no parent: changes here are the tenant's own log)")
        } else {
            print("push:        acknowledged through \(acked); \(try store.upstreamBacklog(after: acked)) change(s) waiting")
        }
        // Refused by the parent for a reason that may pass, and retried: not "waiting" above.
        let refused = try store.retriesByCode()
        if !refused.isEmpty {
            print("refused:     " + refused.map { "\($0.count) \($0.code)" }.joined(separator: ", ")
                  + " change(s) refused by the parent, retried (why: tiersync trace --db … TABLE ID)")
        }
        let setAside = try store.ownChangesSetAside()
        if setAside > 0 {
            print("refused:     \(setAside) change(s) made here, refused above the parent for good, withdrawn and set aside"
                  + " in the quarantine (tiersync admin quarantine --db …)")
        }
        print("pull cursor: \(try store.cursor("pull.parent"))")
        if let identity, identity.parent != nil {
            let contact = try store.parentContact()
            func time(_ millis: UInt64) -> String { ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(millis) / 1000)) }
            // Noted by the agent at most every 30 s: "last worked" is that fresh.
            print("parent:      " + (contact.lastOKMillis.map { "last exchange that worked: \(time($0))" } ?? "no exchange that worked noted yet"))
            if let failure = contact.failure {
                print("             FAILING since \(time(failure.sinceMillis)), \(failure.count) time(s), last at \(time(failure.lastAtMillis)): \(failure.error)")
            }
        }
        if let restores = try store.parentRestores() {
            let last = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(restores.lastAtMillis) / 1000))
            print("restores:    the parent was found restored from an older backup \(restores.count) time(s), last at \(last),"
                  + " or had let go of changes it acknowledged while this node was moved away and back;"
                  + " the agent sends again what it lost and pulls again (its log says what it found)")
        }
        if let offset = try store.clockOffset() {
            let seconds = Double(offset.offsetMillis) / 1000
            let verdict = abs(offset.offsetMillis) > 1_000
                ? (offset.offsetMillis > 0 ? "ahead of" : "behind") + " the parent's: fix this machine's clock (writes the parent refuses for skew are re-stamped to its time)"
                : "in step with the parent's"
            print("clock:       " + String(format: "%+.1f s", seconds) + " \(verdict) (measured \(ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: Double(offset.measuredAtMillis) / 1000))))")
        }
        let counts = try store.counts()
        print("records:     " + counts.records.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        print("conflicts:   \(counts.conflicts)   quarantined: \(counts.quarantined)")
        print("digest:      \(try store.digest())")
        // The check PRIVACY.md names (a node's digest equal to HQ's for its scope) had no
        // command at HQ: only the demo printed both (helper 102).
        if let scopeOf, let data {
            let scoped = try NodeID(validating: scopeOf)
            guard let identity, identity.parent == nil else {
                throw CLIError("--scope-of reads HQ's tenant database (\(node.db) is node \(identity?.node.rawValue ?? "?")'s own store)")
            }
            let tree = try await ExistingData(data: data).existingCatalog().tree(of: identity.tenant)
            guard tree.parents[scoped] != nil else { throw CLIError("no node '\(scopeOf)' in tenant \(identity.tenant)'s tree at \(data)") }
            print("digest of \(scoped)'s scope here: \(try store.digest(scope: Scope(tree: tree, node: scoped)))")
        }
    }
}

struct Conflicts: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List concurrent edits that lost, with both values and origins.")
    @OptionGroup var node: NodeDatabase
    @Option(help: "Most conflicts to show.") var limit = 100

    func validate() throws {
        try validateLimit(limit)
    }

    func run() throws {
        let conflicts = try node.open().conflicts(limit: limit)
        var rows = [["record", "field", "kept", "kept from", "lost", "lost from"]]
        for c in conflicts {
            rows.append(["\(c.table)/\(c.recordID)", c.conflict.field, c.conflict.winner.description, c.conflict.winnerVersion.node.rawValue,
                         c.conflict.loser.description, c.conflict.loserVersion.node.rawValue])
        }
        printTable(rows)
        print("\(conflicts.count) conflict(s)")
    }
}

func printRecord(_ record: StoredRecord, store: NodeStore) {
    print("\(record.table)/\(record.id)\(record.state.isLive ? "" : " (deleted)")  routed to: \(record.route.map(\.rawValue).sorted().joined(separator: ", "))")
    let values = record.state.liveValues
    // The version's clock as the time it stands for (its raw milliseconds told a reader
    // nothing, helper 71), with the counter that orders writes within one millisecond.
    var rows = [["field", "value", "written by", "written at"]]
    for (field, version) in record.state.versions.sorted(by: { $0.key < $1.key }) {
        let at = Timestamp.format(version.hlc.wallMillis) + (version.hlc.counter > 0 ? " #\(version.hlc.counter)" : "")
        rows.append([field, values[field]?.description ?? "(deleted)", version.node.rawValue, at])
    }
    printTable(rows)
    let conflicts = (try? store.conflicts(table: record.table, recordID: record.id)) ?? []
    for c in conflicts {
        print("conflict on \(c.conflict.field): kept '\(c.conflict.winner)' from \(c.conflict.winnerVersion.node), lost '\(c.conflict.loser)' from \(c.conflict.loserVersion.node)")
    }
}

/// Says how a dialogue just created here was allocated, or why it was not.
func printAllocation(of id: String, in store: NodeStore) throws {
    let values = try store.record(table: DomainSchema.interactions.name, id: id)?.state.liveValues ?? [:]
    func value(_ field: InteractionField) -> String? { values[field.rawValue].flatMap { $0.isNull ? nil : $0.description } }
    guard let rule = value(.decisionRule) else {
        if value(.direction) == InteractionDirection.outbound.rawValue {
            print("not allocated: outbound contacts are not allocated (the rules are for inbound dialogues)")
        } else {
            print("not allocated: no governance release in force at this node (handling level, queue, priority and SLA as given)")
        }
        return
    }
    let release = "v" + (value(.decisionRelease) ?? "?") + (value(.decisionOverlay).map { " ⊕ \($0)" } ?? "")
    print("allocated by rule \(rule) of release \(release): level \(value(.handlingLevel) ?? "-"), queue \(value(.queue) ?? "-"), "
          + "priority \(value(.priority) ?? "-"), SLA due \(value(.slaDue) ?? "-"), handled at \(value(.handlingNode) ?? "-")")
}

func displayName(_ values: [String: FieldValue]) -> String {
    if let company = values["company_name"]?.stringValue { return company }
    return [values["first_name"]?.stringValue, values["last_name"]?.stringValue].compactMap { $0 }.joined(separator: " ")
}

func shortID() -> String {
    String(UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(12))
}
