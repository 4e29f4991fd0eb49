import Foundation
import Testing
import TiersyncCore

func upsert(_ node: NodeID, _ wall: UInt64, _ fields: [String: FieldValue], prior: [String: FieldVersion] = [:], seq: Int64 = 1) -> Change {
    Change(origin: node, originSeq: seq, hlc: HLCTimestamp(wallMillis: wall, counter: 0), table: "customers", recordID: "c-1",
           op: .upsert, fields: fields, prior: prior)
}

@Suite("Record state")
struct RecordStateTests {
    @Test("later write wins per field; untouched fields survive")
    func perFieldLastWriterWins() {
        var s = RecordState()
        s.apply(upsert("a", 10, ["phone": "1", "city": "Berlin"]))
        s.apply(upsert("b", 20, ["phone": "2"]))
        s.apply(upsert("a", 15, ["city": "Hamburg"], seq: 2))
        #expect(s.liveValues == ["phone": "2", "city": "Hamburg"])
    }

    @Test("equal timestamps: the node id breaks the tie the same way everywhere")
    func tieBreak() {
        var s1 = RecordState(), s2 = RecordState()
        let a = upsert("a", 10, ["phone": "from-a"]), b = upsert("b", 10, ["phone": "from-b"])
        s1.apply(a); s1.apply(b)
        s2.apply(b); s2.apply(a)
        #expect(s1 == s2)
        #expect(s1.liveValues["phone"] == "from-b")
    }

    @Test("a concurrent overwrite keeps the loser as a conflict, wherever it arrives")
    func concurrentLoserIsKept() {
        // b wrote without having seen a's value (no prior): concurrent.
        let a = upsert("a", 10, ["phone": "111"]), b = upsert("b", 20, ["phone": "222"])
        var s1 = RecordState()
        s1.apply(a)
        let late = s1.apply(b)
        #expect(late.conflicts == [FieldConflict(field: "phone", winner: "222", winnerVersion: b.version, loser: "111", loserVersion: a.version)])
        var s2 = RecordState()
        s2.apply(b)
        let early = s2.apply(a)
        #expect(early.conflicts == late.conflicts)
    }

    @Test("a causal overwrite (the writer saw the value) is not a conflict")
    func causalOverwrite() {
        let a = upsert("a", 10, ["phone": "111"])
        let b = upsert("b", 20, ["phone": "222"], prior: ["phone": a.version])
        var s = RecordState()
        s.apply(a)
        #expect(s.apply(b).conflicts.isEmpty)
    }

    @Test("equal values are not a conflict")
    func sameValueNoConflict() {
        var s = RecordState()
        s.apply(upsert("a", 10, ["phone": "111"]))
        #expect(s.apply(upsert("b", 20, ["phone": "111"])).conflicts.isEmpty)
    }

    @Test("withdrawing a change takes out the fields it still wins, and its tombstone with the fields it hid; nil when it holds nothing")
    func withdrawing() throws {
        var s = RecordState()
        let first = upsert("a", 10, ["phone": "1", "city": "Berlin"])
        let refused = upsert("d", 20, ["phone": "2", "note": "refused"])
        s.apply(first)
        s.apply(refused)
        let without = try #require(s.withdrawing(refused.version))
        #expect(without.liveValues == ["city": "Berlin"], "the phone it overwrote is not known any more: it goes too")
        #expect(without.versions.values.allSatisfy { $0 == first.version })
        #expect(s.withdrawing(upsert("x", 5, [:]).version) == nil, "a change holding nothing here")
        s.apply(upsert("b", 30, ["phone": "3"], seq: 2))
        #expect(try #require(s.withdrawing(refused.version)).liveValues == ["city": "Berlin", "phone": "3"], "a field it lost since stays")
        var alone = RecordState()
        alone.apply(refused)
        #expect(try #require(alone.withdrawing(refused.version)).isEmpty)
        let later = upsert("b", 30, ["phone": "3"], seq: 2)
        let delete = Change(origin: "d", originSeq: 2, hlc: HLCTimestamp(wallMillis: 40, counter: 0), table: "customers", recordID: "c-1", op: .delete)
        s.apply(delete)
        #expect(!s.isLive)
        var undeleted = try #require(s.withdrawing(delete.version))
        #expect(undeleted.isEmpty, "a refused delete goes with the fields it hid (their values are gone): \(undeleted)")
        undeleted.apply(first)
        undeleted.apply(later)
        #expect(undeleted.liveValues == ["city": "Berlin", "phone": "3"], "the changes that wrote them give them back")
    }

    @Test("a delete beats older edits, even ones arriving after it; a newer edit revives")
    func tombstones() {
        var s = RecordState()
        s.apply(upsert("a", 10, ["phone": "1", "city": "Berlin"]))
        s.apply(Change(origin: "b", originSeq: 1, hlc: HLCTimestamp(wallMillis: 20, counter: 0), table: "customers", recordID: "c-1", op: .delete))
        #expect(!s.isLive)
        #expect(s.values["phone"] == .null, "deleted values are dropped, not kept")
        s.apply(upsert("c", 15, ["city": "Munich"]))
        #expect(!s.isLive, "an older edit arriving late stays deleted")
        s.apply(upsert("c", 30, ["phone": "3"], seq: 2))
        #expect(s.isLive)
        #expect(s.liveValues == ["phone": "3"])
    }

    @Test("an edit that loses to a concurrent delete is kept as a conflict")
    func deleteConflict() {
        var s = RecordState()
        let delete = Change(origin: "b", originSeq: 1, hlc: HLCTimestamp(wallMillis: 20, counter: 0), table: "customers", recordID: "c-1", op: .delete)
        s.apply(delete)
        let late = s.apply(upsert("a", 15, ["phone": "offline edit"]))
        #expect(late.conflicts == [FieldConflict(field: "phone", winner: .null, winnerVersion: delete.version,
                                                 loser: "offline edit", loserVersion: FieldVersion(hlc: HLCTimestamp(wallMillis: 15, counter: 0), node: "a"))])
        #expect(!s.isLive)
    }

    @Test("redelivering a change changes nothing")
    func idempotentApply() {
        var s = RecordState()
        let c = upsert("a", 10, ["phone": "1"])
        #expect(s.apply(c).changedAnything)
        let before = s
        #expect(!s.apply(c).changedAnything)
        #expect(s == before)
    }
}

@Suite("Hybrid logical clock")
struct ClockTests {
    let clock = HybridLogicalClock(maxSkewMillis: 60_000)

    @Test("ticks are strictly increasing, even when the wall clock stalls or goes back")
    func monotonic() {
        var last = HLCTimestamp.zero
        var seen: [HLCTimestamp] = []
        for wall: UInt64 in [100, 100, 100, 90, 101, 50] {
            last = clock.tick(last: last, wallMillis: wall)
            seen.append(last)
        }
        #expect(seen == seen.sorted())
        #expect(Set(seen).count == seen.count)
        #expect(seen.last!.wallMillis == 101)
    }

    @Test("the counter rolls into the next millisecond instead of overflowing")
    func counterOverflow() {
        let t = clock.tick(last: HLCTimestamp(wallMillis: 5, counter: .max), wallMillis: 5)
        #expect(t == HLCTimestamp(wallMillis: 6, counter: 0))
    }

    @Test("a remote timestamp too far ahead is refused with the skew in the message")
    func skew() throws {
        let now: UInt64 = 1_000_000
        let ahead = HLCTimestamp(wallMillis: now + 3_600_000, counter: 0)
        #expect(throws: ClockSkewError.self) { try clock.receive(last: .zero, remote: ahead, wallMillis: now) }
        do {
            _ = try clock.receive(last: .zero, remote: ahead, wallMillis: now)
        } catch {
            #expect(error.description.contains("3600 s ahead"))
        }
        let fine = HLCTimestamp(wallMillis: now + 59_000, counter: 3)
        #expect(try clock.receive(last: .zero, remote: fine, wallMillis: now) == fine)
        #expect(clock.tick(last: fine, wallMillis: now) > fine, "after receiving, local ticks sort after the remote event")
    }
}

@Suite("Schema validation")
struct SchemaTests {
    let schema = DomainSchema.schema

    func change(_ table: String, _ fields: [String: FieldValue]) -> Change {
        Change(origin: "a", originSeq: 1, hlc: HLCTimestamp(wallMillis: 1, counter: 0), table: table, recordID: "r-1", op: .upsert, fields: fields)
    }

    func rejection(_ c: Change) -> ChangeRejection? {
        if case .failure(let r) = schema.validate(c) { return r }
        return nil
    }

    @Test("unknown tables and fields are named")
    func unknownNames() {
        #expect(rejection(change("cars", ["x": 1]))?.code == .unknownTable)
        #expect(rejection(change("cars", ["x": 1]))?.message.contains("'cars'") == true)
        let r = rejection(change("customers", ["shoe_size": 44]))
        #expect(r?.code == .unknownField)
        #expect(r?.message.contains("'shoe_size'") == true)
    }

    @Test("wrong types name the field, the expected type and the value")
    func wrongTypes() {
        let r = rejection(change("customers", ["key_account": "yes"]))
        #expect(r?.code == .wrongType)
        #expect(r?.message == "field 'customers.key_account' of record 'r-1' must be boolean, got string \"yes\"")
        #expect(rejection(change("interactions", ["channel": "pigeon"]))?.code == .wrongType)
        #expect(rejection(change("interactions", ["created_at": "yesterday"]))?.code == .wrongType)
        #expect(rejection(change("customers", ["owning_dealer": "Dealer 42!"]))?.code == .wrongType)
        #expect(rejection(change("customers", ["last_name": "Nul\u{0}Byte"]))?.code == .wrongType, "SQLite text would cut at NUL")
    }

    @Test("valid values pass, integers widen to numbers, null fits every field")
    func validValues() throws {
        let ok = try schema.validate(change("leads", ["value": 1200, "status": "new", "customer_id": .null])).get()
        #expect(ok.fields["value"] == .double(1200))
        #expect(rejection(change("interactions", ["created_at": "2026-11-22T10:15:00Z", "channel": "fax"])) == nil)
        #expect(rejection(change("vehicles", ["sale_date": "2026-02-30"])) != nil)
    }
}

@Suite("Scopes")
struct ScopeTests {
    let tree = NodeTree(parents: ["hq": nil, "de": "hq", "fr": "hq", "d1": "de", "d2": "de", "f1": "fr"])

    @Test("a node sees records routed to itself or below; the root sees everything")
    func visibility() {
        let country = Scope(tree: tree, node: "de"), dealer = Scope(tree: tree, node: "d1"), root = Scope(tree: tree, node: "hq")
        #expect(country.contains(route: ["d2"]))
        #expect(!country.contains(route: ["f1"]))
        #expect(dealer.contains(route: ["d1", "f1"]))
        #expect(!dealer.contains(route: ["d2"]))
        #expect(!dealer.contains(route: []))
        #expect(root.contains(route: []))
        #expect(tree.path(of: "d2") == "hq/de/d2")
    }
}

@Suite("Encodings")
struct EncodingTests {
    @Test("JSON values decode to their own kinds, strings first but never at the expense of the others")
    func fieldValueKinds() throws {
        let values = try JSONDecoder().decode([FieldValue].self, from: Data(#"[true, 1, 1.5, "x", null, "true", "1"]"#.utf8))
        #expect(values == [.bool(true), .int(1), .double(1.5), .string("x"), .null, .string("true"), .string("1")])
    }

    @Test("the store's canonical JSON reads back exactly, escapes and all")
    func canonicalRoundTrip() {
        let fields: [String: FieldValue] = ["a": "plain", "b": "quote \" backslash \\ newline \n tab \t ctrl \u{1}", "c": "ünïcødé 🚗",
                                            "d": 42, "e": -7.25, "f": true, "g": false, "h": .null, "i": 1e300]
        #expect(CanonicalJSON.parseFields(CanonicalJSON.object(fields)) == fields)
        let versions: [String: FieldVersion] = ["phone": FieldVersion(hlc: HLCTimestamp(rawValue: 123_456_789), node: "dealer-1")]
        #expect(CanonicalJSON.parseVersions(CanonicalJSON.object(versions)) == versions)
        #expect(CanonicalJSON.parseFields(#"{"a": "\ud83d\ude97", "b": 1}"#) == ["a": "🚗", "b": 1])
        #expect(CanonicalJSON.parseFields(#"{"a": [1]}"#) == nil)
        #expect(CanonicalJSON.parseFields(#"{"a": "x""#) == nil)
    }

    @Test("a table's field lookups and positions follow its fields when they change")
    func tableIndexFollowsFields() {
        var table = TableSchema(name: "t", fields: [FieldSchema("a", .string(maxLength: 10)), FieldSchema("b", .bool)], routeFields: [])
        #expect(table.position(of: "b") == 1)
        table.fields.insert(FieldSchema("c", .int), at: 0)
        #expect(table.position(of: "c") == 0 && table.position(of: "b") == 2)
        #expect(table.field("c") != nil)
        table.fields.removeAll { $0.name == "a" }
        #expect(table.field("a") == nil && table.position(of: "a") == nil && table.position(of: "b") == 1)
    }

    @Test("a row's field versions are stored grouped by version, and rows of the flat form still read")
    func groupedVersions() {
        let a = FieldVersion(hlc: HLCTimestamp(rawValue: 200), node: "dealer-1")
        let b = FieldVersion(hlc: HLCTimestamp(rawValue: 1_000), node: "de")
        let versions: [String: FieldVersion] = ["phone": a, "email": b, "city": a, "last_name": a]
        let grouped = CanonicalJSON.groupedVersions(versions)
        #expect(grouped == #"{"1000@de":["email"],"200@dealer-1":["city","last_name","phone"]}"#)
        #expect(CanonicalJSON.parseStoredVersions(grouped) == versions)
        #expect(CanonicalJSON.parseStoredVersions(CanonicalJSON.object(versions)) == versions, "the flat form of older rows")
        // A new contact: its fields written together, under one real stamp.
        let stamp = FieldVersion(hlc: HLCTimestamp(wallMillis: 1_796_188_389_503, counter: 7), node: "dealer-042")
        let contact = Dictionary(uniqueKeysWithValues: ["email", "last_name", "owning_dealer", "phone"].map { ($0, stamp) })
        #expect(CanonicalJSON.groupedVersions(contact).utf8.count * 2 < CanonicalJSON.object(contact).utf8.count, "under half the flat form")
        #expect(CanonicalJSON.parseStoredVersions("{}") == [:])
        #expect(CanonicalJSON.parseStoredVersions(#"{"200@dealer-1":["city",1]}"#) == nil)
        #expect(CanonicalJSON.parseStoredVersions(#"{"not a version":["city"]}"#) == nil)
        #expect(CanonicalJSON.parseStoredVersions(#"{"200@dealer-1":["city"]} x"#) == nil)
    }

    @Test("canonical JSON is byte for byte stable: sorted keys, no spaces, escapes only where needed")
    func canonicalBytes() {
        #expect(CanonicalJSON.object(["b": 1, "a": "x\"y", "c": .null, "ä": "ö\u{1}", "d": true]) == #"{"a":"x\"y","b":1,"c":null,"d":true,"ä":"ö\u0001"}"#)
        let v1 = FieldVersion(hlc: HLCTimestamp(rawValue: 7), node: "dealer-1")
        let v2 = FieldVersion(hlc: HLCTimestamp(rawValue: 9), node: "hq")
        #expect(CanonicalJSON.object(["phone": v1, "email": v1, "city": v2, "a": v1]) == #"{"a":"7@dealer-1","city":"9@hq","email":"7@dealer-1","phone":"7@dealer-1"}"#)
        #expect(CanonicalJSON.object([String: FieldValue]()) == "{}")
    }

    @Test("a stored trail reads back without Foundation, and anything else is declined")
    func trailParsing() throws {
        let text = #"[{"node":"de","at":1700000000000},{"node":"hq","at":1700000000123}]"#
        #expect(WireDecoding.trail(text) == [Hop(node: "de", atMillis: 1_700_000_000_000), Hop(node: "hq", atMillis: 1_700_000_000_123)])
        #expect(WireDecoding.trail(text) == (try JSONDecoder().decode([Hop].self, from: Data(text.utf8))))
        #expect(WireDecoding.trail("[]") == [])
        #expect(WireDecoding.trail(#"[{"node":"de"}]"#) == nil)
        #expect(WireDecoding.trail(#"[{"node":"not a node id!","at":1}]"#) == nil)
        #expect(WireDecoding.trail(#"[{"node":"de","at":1}] x"#) == nil)
    }
}

@Suite("Wire decoding")
struct WireDecodingTests {
    @Test("the fast decoder reads push and pull bodies exactly as JSONDecoder does, and declines what it cannot read")
    func matchesCodable() throws {
        let changes = [
            Change(origin: "dealer-1", originSeq: 7, hlc: HLCTimestamp(wallMillis: 1_795_000_000_000, counter: 3), table: "customers",
                   recordID: "c \"1\"", op: .upsert,
                   fields: ["last_name": "Müller \\ \"quoted\" 🚗", "key_account": true, "value": 12.5, "n": -3, "city": .null],
                   prior: ["last_name": FieldVersion(hlc: HLCTimestamp(rawValue: 42), node: "hq")],
                   trail: [Hop(node: "de", atMillis: 1_795_000_000_100), Hop(node: "hq", atMillis: 1_795_000_000_200)]),
            Change(origin: "hq", originSeq: 1, hlc: HLCTimestamp(rawValue: 9), table: "leads", recordID: "l-1", op: .delete),
        ]
        let push = PushRequest(tenant: "acme", through: 9, changes: changes)
        let pushBytes = Array(try JSONEncoder().encode(push))
        let fast = try #require(WireDecoding.pushRequest(pushBytes))
        let slow = try JSONDecoder().decode(PushRequest.self, from: Data(pushBytes))
        #expect(fast.changes == slow.changes && fast.through == slow.through && fast.tenant == slow.tenant)
        #expect(fast.changes == changes)

        let page = PullResponse(changes: changes, nextCursor: 99, more: true, head: 120)
        let pageBytes = Array(try JSONEncoder().encode(page))
        let fastPage = try #require(WireDecoding.pullResponse(pageBytes))
        #expect(fastPage.changes == changes && fastPage.nextCursor == 99 && fastPage.more && fastPage.head == 120)

        // Unknown keys are ignored, as Codable does; anything malformed is declined.
        #expect(WireDecoding.pushRequest(Array(#"{"through": 1, "changes": [], "extra": {"a": [1, {"b": null}]}}"#.utf8))?.through == 1)
        #expect(WireDecoding.pushRequest(Array(#"{"through": "one", "changes": []}"#.utf8)) == nil)
        #expect(WireDecoding.pushRequest(Array(#"{"through": 1, "changes": [{"origin": "d1", "seq": 2}]}"#.utf8)) == nil)
        #expect(WireDecoding.pushRequest(Array(#"{"through": 1, "changes": [], }"#.utf8)) == nil)
        #expect(WireDecoding.pushRequest(Array("{not json".utf8)) == nil)
        // Strings: plain ASCII is read in place; a raw control character or invalid UTF-8
        // is declined wherever it stands, and a multi-byte character read whole.
        // (In an ignored key's value: only the parser judges it.)
        let body = { (text: [UInt8]) in Array(#"{"through": 1, "changes": [], "extra": ""#.utf8) + text + Array(#""}"#.utf8) }
        #expect(WireDecoding.pushRequest(body(Array("plain".utf8)))?.through == 1)
        #expect(WireDecoding.pushRequest(body(Array("Müller 🚗".utf8)))?.through == 1)
        #expect(WireDecoding.pushRequest(body(Array("ac".utf8) + [0x01] + Array("me".utf8))) == nil)
        #expect(WireDecoding.pushRequest(body(Array("ac".utf8) + [0xFF] + Array("me".utf8))) == nil)
        #expect(WireDecoding.pushRequest(body([0xF0, 0x90, 0x80] + Array("A".utf8))) == nil, "a truncated 4-byte sequence is refused, not repaired")
    }

    @Test("the direct encoder writes what JSONDecoder and the fast decoder both read back exactly, escapes, control characters and all")
    func encoderRoundTrips() throws {
        let changes = [
            Change(origin: "dealer-1", originSeq: 7, hlc: HLCTimestamp(wallMillis: 1_795_000_000_000, counter: 3), table: "customers",
                   recordID: "c \"1\"\n", op: .upsert,
                   fields: ["last_name": "Müller \\ \"quoted\" 🚗\u{01}\t", "key_account": true, "value": 12.5, "round": 42000.0,
                            "n": -3, "city": .null],
                   prior: ["last_name": FieldVersion(hlc: HLCTimestamp(rawValue: 42), node: "hq")],
                   trail: [Hop(node: "de", atMillis: 1_795_000_000_100)]),
            Change(origin: "hq", originSeq: 1, hlc: HLCTimestamp(rawValue: 9), table: "leads", recordID: "l-1", op: .delete),
        ]
        let push = PushRequest(tenant: "acme", through: 9, changes: changes)
        let bytes = WireEncoding.pushRequest(push)
        let slow = try JSONDecoder().decode(PushRequest.self, from: Data(bytes))
        let fast = try #require(WireDecoding.pushRequest(bytes))
        #expect(slow.tenant == "acme" && slow.through == 9 && fast.through == 9)
        // Codable reads 42000.0 back as the integer 42000 (the schema widens it again);
        // the fast decoder and the store's canonical form keep it a double.
        #expect(fast.changes == changes)
        #expect(slow.changes.map(\.recordID) == changes.map(\.recordID) && slow.changes[0].fields["last_name"] == changes[0].fields["last_name"])
        #expect(slow.changes[0].prior == changes[0].prior && slow.changes[0].trail == changes[0].trail && slow.changes[1] == changes[1])
        // Same JSON value as JSONEncoder's, key for key (but for whole doubles, which
        // JSONEncoder writes without their ".0").
        let plain = changes.map { c -> Change in
            var c = c
            c.fields["round"] = nil
            return c
        }
        let mine = try JSONSerialization.jsonObject(with: Data(WireEncoding.pullResponse(PullResponse(changes: plain, nextCursor: 5, more: false))))
        let theirs = try JSONSerialization.jsonObject(with: JSONEncoder().encode(PullResponse(changes: plain, nextCursor: 5, more: false)))
        let normal = { (v: Any) throws -> String in String(decoding: try JSONSerialization.data(withJSONObject: v, options: [.sortedKeys]), as: UTF8.self) }
        #expect(try normal(mine) == normal(theirs))
        let page = try #require(WireDecoding.pullResponse(WireEncoding.pullResponse(PullResponse(changes: changes, nextCursor: 5, more: true, head: 8))))
        #expect(page.changes == changes && page.nextCursor == 5 && page.more && page.head == 8)
    }
}
