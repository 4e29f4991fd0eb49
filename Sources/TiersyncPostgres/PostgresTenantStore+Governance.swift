// Governance documents and KPIs of a tenant on PostgreSQL.

import Foundation
import PostgresNIO
import TiersyncCore
import TiersyncKPI
import TiersyncStorage

extension PostgresTenantStore {
    // MARK: Governance documents

    public func latestGovernanceDocument(ofKind kind: String) async throws -> StoredGovernanceDocument? {
        try await prepared()
        return try await client.query("""
            SELECT kind, key, seq, body FROM \(unescaped: table(.governanceDocuments)) WHERE kind = \(kind) ORDER BY seq DESC LIMIT 1
            """, logger: logger).collect().first.map(Self.document)
    }

    public func governanceDocuments(ofKind kind: String, keys: [String]?) async throws -> [StoredGovernanceDocument] {
        try await prepared()
        if let keys {
            guard !keys.isEmpty else { return [] }
            return try await client.query("""
                SELECT kind, key, seq, body FROM \(unescaped: table(.governanceDocuments)) WHERE kind = \(kind) AND key = ANY(\(keys)::text[]) ORDER BY seq
                """, logger: logger).collect().map(Self.document)
        }
        return try await client.query("""
            SELECT kind, key, seq, body FROM \(unescaped: table(.governanceDocuments)) WHERE kind = \(kind) ORDER BY seq
            """, logger: logger).collect().map(Self.document)
    }

    public func governanceDocumentsStamp() async throws -> String {
        try await prepared()
        let row = try await client.query("""
            SELECT COUNT(*), COALESCE(MAX(stored_at), 0)::int8, COALESCE(SUM(seq), 0)::int8 FROM \(unescaped: table(.governanceDocuments))
            """, logger: logger).collect().first
        guard let row else { return "0/0/0" }
        let (n, t, s) = try row.decode((Int64, Int64, Int64).self)
        return "\(n)/\(t)/\(s)"
    }

    public func storeGovernanceDocument(_ document: StoredGovernanceDocument, nowMillis: UInt64) async throws {
        try await prepared()
        _ = try await client.query("""
            INSERT INTO \(unescaped: table(.governanceDocuments)) (kind, key, seq, body, stored_at)
            VALUES (\(document.kind), \(document.key), \(Int64(document.seq)), \(document.body), \(Int64(nowMillis)))
            ON CONFLICT (kind, key) DO UPDATE SET seq = excluded.seq, body = excluded.body, stored_at = excluded.stored_at
            """, logger: logger).collect()
        // Long-polls for governance on every hub process wake (the watcher compares stamps).
        _ = try await client.query("SELECT pg_notify(\(PostgresNotifier.defaultChannel), \(tenant.rawValue))", logger: logger).collect()
    }

    public func storeNewGovernanceDocument(_ document: StoredGovernanceDocument, nowMillis: UInt64) async throws -> Bool {
        try await prepared()
        let inserted = try await client.query("""
            INSERT INTO \(unescaped: table(.governanceDocuments)) (kind, key, seq, body, stored_at)
            VALUES (\(document.kind), \(document.key), \(Int64(document.seq)), \(document.body), \(Int64(nowMillis)))
            ON CONFLICT (kind, key) DO NOTHING RETURNING 1
            """, logger: logger).collect().count == 1
        // Long-polls for governance on every hub process wake (the watcher compares stamps).
        if inserted { _ = try await client.query("SELECT pg_notify(\(PostgresNotifier.defaultChannel), \(tenant.rawValue))", logger: logger).collect() }
        return inserted
    }

    static func document(_ row: PostgresRow) throws -> StoredGovernanceDocument {
        let (kind, key, seq, body) = try row.decode((String, String, Int64, String).self)
        return StoredGovernanceDocument(kind: kind, key: key, seq: Int(seq), body: body)
    }

    // MARK: KPIs

    /// Records which KPIs the tenant counts. This engine keeps no accumulators: a report
    /// counts the root's own dialogues and leads afresh, at most once per interval
    /// (``kpiReport(period:byNode:viewer:paths:)``, ``RootKPICounts``),
    /// so adopting never recounts; it returns true when the formulas changed.
    public func adoptKPIs(_ adoption: KPIAdoption?, source: String?) async throws -> Bool {
        try await prepared()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let encoded = try adoption.map { String(decoding: try encoder.encode($0), as: UTF8.self) } ?? ""
        let before = try await kpiAdoption()
        return try await client.withConnection { connection in
            try await self.setSetting(.kpiAdoption, encoded, on: connection)
            if let source { try await self.setSetting(.kpiSource, source, on: connection) }
            return (before?.catalog.formulaBasis ?? "") != (adoption?.catalog.formulaBasis ?? "")
        }
    }

    /// The root applies no governance of its own (it publishes it): nothing to adopt.
    public func adoptKPIsOfAppliedGovernance() async throws -> Bool { false }

    func kpiAdoption() async throws -> KPIAdoption? {
        guard let text = try await setting(PostgresMetaKey.kpiAdoption.rawValue), !text.isEmpty else { return nil }
        return try? JSONDecoder().decode(KPIAdoption.self, from: Data(text.utf8))
    }

    public func kpiReport(period: KPIPeriodKind, byNode: Bool, viewer: String?, paths known: [String: [String]]) async throws -> KPIResponse {
        let me = try await prepared().rawValue
        let adoption = try await kpiAdoption()
        var observations: [KPIObservation] = []
        // The root's own values are in no other node's subtree: counted only for its own view.
        if let adoption, (viewer ?? me) == me {
            // The root's own values: the dialogues and leads counted for it, counted afresh
            // at most once per interval (``RootKPICounts``).
            let totals = try await rootKPITotals(catalog: adoption.catalog, me: me)
            let targets = Dictionary(adoption.definitions.map { ($0.id, $0.target) }, uniquingKeysWith: { a, _ in a })
            observations = KPIObservation.periods(of: totals.filter { $0.node == me }, kind: period, target: { targets[$0] })
        }
        // Every other node's values: the snapshots they publish (`kpi_snapshots` records) for this period.
        var paths: [String: [String]] = [me: [me]]
        try await forEachRootRecord(.snapshots(period: period), me: me) { _, values in
            guard let node = values["node"]?.stringValue, node != me, let kpi = values["kpi"]?.stringValue,
                  values["period"]?.stringValue == period.rawValue,
                  let start = values["period_start"]?.stringValue.flatMap(KPIDay.parse) else { return }
            if let path = values["path"]?.stringValue { paths[node] = path.split(separator: "/").map(String.init) }
            let target = values["target_kind"]?.stringValue.flatMap(KPITarget.Comparison.init(rawValue:)).flatMap { c in
                Self.number(values["target"]).map { KPITarget(c, $0) }
            }
            observations.append(KPIObservation(kpi: kpi, node: node, periodStart: start, numerator: Self.integer(values["numerator"]),
                                               denominator: Self.integer(values["denominator"]), target: target,
                                               unit: values["unit"]?.stringValue.flatMap(KPIUnit.init(rawValue:))))
        }
        let viewer = viewer ?? me
        return KPIResponse(node: viewer, period: period, byNode: byNode,
                           rows: KPIReport.rows(viewer: viewer, catalog: adoption?.catalog ?? .empty, catalogIsViewers: viewer == me, period: period,
                                                observations: observations,
                                                paths: paths.merging(known) { _, new in new }, byNode: byNode))
    }

    /// What a KPI report reads (``forEachRootRecord(_:me:_:)``).
    enum KPIReportRead {
        /// The dialogues counted for the root, and with `followUps` every other dialogue of
        /// their customers and topics (first-contact resolution looks at the next one, which
        /// another node may handle).
        case dialogues(followUps: Bool)
        /// The leads counted for the root.
        case leads
        /// Every KPI snapshot of the period.
        case snapshots(period: KPIPeriodKind)
    }

    /// Streams the live records a KPI report needs, selected by PostgreSQL, so a report
    /// reads what the root handles and the period's snapshots, not every dialogue of the
    /// tenant into the hub's memory (HQ holds them all). Records are selected by the text of
    /// a value in their canonical JSON (`"handling_node":"hq"`, as erasure finds links): no
    /// JSON is parsed but for the follow-ups' customer and topic. The selection is a superset
    /// of what counts (a dialogue counts for the node in `allocated_node`, else `handling_node`, else in
    /// `originating_node`; a lead `fulfilling_node`, else `source_node`): the tally decides.
    func forEachRootRecord(_ read: KPIReportRead, me: String, _ body: (String, [String: FieldValue]) throws -> Void) async throws {
        var sql = PostgresSQL()
        let records = table(.records)
        func naming(_ fields: [String]) -> String {
            "(" + fields.map { "strpos(r.fields, \(sql.bind(Self.canonicalKey($0, me)))) > 0" }.joined(separator: " OR ") + ")"
        }
        switch read {
        case .dialogues(let followUps):
            let tbl = sql.bind(DomainSchema.interactions.name)
            let mine = naming([DialogueField.allocatedNode, DialogueField.handlingNode, DialogueField.originatingNode])
            guard followUps else {
                sql.append("SELECT r.id, r.fields FROM \(records) r WHERE r.tbl = \(tbl) AND r.live AND \(mine)")
                break
            }
            let (customer, topic) = (sql.bind(DialogueField.customerID), sql.bind(DialogueField.topic))
            // The others of the same customer and topic: each row's JSON parsed once (the
            // fenced subquery), and only rows not selected as the root's that hold both as
            // strings (a group is of two strings).
            sql.append("""
                WITH mine AS MATERIALIZED (SELECT r.id, r.fields FROM \(records) r WHERE r.tbl = \(tbl) AND r.live AND \(mine)),
                groups AS MATERIALIZED (SELECT DISTINCT j ->> \(customer) AS customer, j ->> \(topic) AS topic
                                        FROM (SELECT fields::jsonb AS j FROM mine) m)
                SELECT id, fields FROM mine
                UNION ALL
                SELECT r.id, r.fields FROM \(records) r, LATERAL (SELECT r.fields::jsonb AS j OFFSET 0) x
                WHERE r.tbl = \(tbl) AND r.live AND NOT \(mine)
                  AND strpos(r.fields, \(sql.bind(Self.canonicalName(DialogueField.customerID) + "\""))) > 0
                  AND strpos(r.fields, \(sql.bind(Self.canonicalName(DialogueField.topic) + "\""))) > 0
                  AND (x.j ->> \(customer), x.j ->> \(topic)) IN (SELECT customer, topic FROM groups)
                """)
        case .leads:
            let tbl = sql.bind(DomainSchema.leads.name)
            sql.append("SELECT r.id, r.fields FROM \(records) r WHERE r.tbl = \(tbl) AND r.live AND \(naming([LeadField.fulfillingNode, LeadField.sourceNode]))")
        case .snapshots(let period):
            let tbl = sql.bind(DomainSchema.kpiSnapshots.name)
            let inPeriod = sql.bind(Self.canonicalKey("period", period.rawValue))
            // In id order: a node's path is taken from its snapshots, the same one every time.
            sql.append("SELECT r.id, r.fields FROM \(records) r WHERE r.tbl = \(tbl) AND r.live AND strpos(r.fields, \(inPeriod)) > 0 ORDER BY r.id COLLATE \"C\"")
        }
        for try await (id, fields) in try await client.query(sql.query, logger: logger).decode((String, String).self) {
            guard let values = CanonicalJSON.parseFields(fields) else { throw PostgresStoreError("corrupt fields of a KPI report's record \(id)") }
            try body(id, values)
        }
    }

    private static func integer(_ value: FieldValue?) -> Int64 {
        switch value {
        case .int(let i)?: i
        case .double(let d)?: Int64(exactly: d.rounded()) ?? 0
        default: 0
        }
    }

    private static func number(_ value: FieldValue?) -> Double? {
        switch value {
        case .int(let i)?: Double(i)
        case .double(let d)?: d
        default: nil
        }
    }
}
