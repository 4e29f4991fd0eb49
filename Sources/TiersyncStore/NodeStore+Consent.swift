// Consent per purpose and channel (docs/PRIVACY.md): recording a decision writes the
// customer's `consent_<purpose>_<channel>` field and its history record in one commit, so
// both replicate together; the history is read back per customer.

import Foundation
import GRDB
import TiersyncCore

/// One recorded consent decision (``DomainSchema/consentEvents``).
public struct ConsentEvent: Sendable, Equatable, Codable {
    public var id: String
    public var customerID: String
    public var purpose: String
    public var channel: String
    public var granted: Bool
    public var source: String
    public var recordedBy: String
    public var recordedAt: String
}

extension NodeStore {
    /// Records that `customer` gave (`granted`) or withdrew consent for `purpose` by
    /// `channel`, told through `source`: the customer's field and the history record, one
    /// commit. Throws ``StoreError/notFound(_:)`` for a customer not held here.
    @discardableResult
    public func recordConsent(customer: String, purpose: Consent.Purpose, channel: Consent.Channel, granted: Bool,
                              source: Consent.Source, wallMillis: UInt64 = WallClock.nowMillis()) throws -> ConsentEvent {
        guard let held = try record(table: DomainSchema.customers.name, id: customer), held.state.isLive else {
            throw StoreError.notFound("customer \(customer) is not held here")
        }
        guard let me = try identity() else { throw StoreError.notEnrolled(path: path) }
        let id = RecordID.random(prefix: "consent")
        let at = Date(timeIntervalSince1970: Double(wallMillis) / 1000).ISO8601Format()
        var event: [String: FieldValue] = [
            "customer_id": .string(customer), "purpose": .string(purpose.rawValue), "channel": .string(channel.rawValue),
            "granted": .bool(granted), "source": .string(source.rawValue), "recorded_by": .string(me.node.rawValue), "recorded_at": .string(at),
        ]
        if let dealer = held.state.liveValues["owning_dealer"], !dealer.isNull { event["owning_dealer"] = dealer }
        try commit([.upsert(DomainSchema.customers.name, id: customer, [Consent.field(purpose, channel): .bool(granted)]),
                    .upsert(DomainSchema.consentEvents.name, id: id, event)], wallMillis: wallMillis)
        return ConsentEvent(id: id, customerID: customer, purpose: purpose.rawValue, channel: channel.rawValue, granted: granted,
                            source: source.rawValue, recordedBy: me.node.rawValue, recordedAt: at)
    }

    /// The consent history of `customer` held here, oldest first.
    public func consentHistory(customer: String) throws -> [ConsentEvent] {
        let sql = tableSQL[DomainSchema.consentEvents.name]!
        return try writer.read { db in
            try Row.fetchAll(db, sql: "SELECT \(sql.columns) FROM consent_events WHERE customer_id = ?", arguments: [customer]).map { row in
                let v = Self.values(of: row, table: DomainSchema.consentEvents)
                func text(_ f: String) -> String { v[f]?.stringValue ?? "" }
                return ConsentEvent(id: row[0], customerID: text("customer_id"), purpose: text("purpose"), channel: text("channel"),
                                    granted: v["granted"] == .bool(true), source: text("source"), recordedBy: text("recorded_by"),
                                    recordedAt: text("recorded_at"))
            }.sorted { ($0.recordedAt, $0.id) < ($1.recordedAt, $1.id) }
        }
    }
}
