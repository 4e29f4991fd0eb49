import ArgumentParser
import Foundation
import TiersyncAgent
import TiersyncCore
import TiersyncStore

/// Bytes a dealer sends per change (request bodies exactly as the agent encodes them),
/// against the raw bytes of the changed field values, for typical contact edits.
struct Wire: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Bytes sent per change against raw field bytes.")
    @Option(help: "Edits to send.") var changes = 20_000
    @OptionGroup var common: CommonOptions

    func run() async throws {
        quietLogs()
        let (dir, cleanup) = try common.workingDirectory("wire")
        defer { cleanup() }
        header("wire", [("edits", "\(changes)"), ("edit", "1-3 of phone/email/city on an existing customer"), ("compress above", "1,024 bytes")])
        // A dealer's real store makes the changes (with their prior versions), as in use.
        let store = try NodeStore(path: dir + "/dealer.sqlite")
        try store.setIdentity(NodeIdentity(tenant: "acme", node: "dealer-042", parent: "de"))
        try store.commit((0..<1_000).map { .upsert("customers", id: "cust-\($0)", contactFields($0, owner: "dealer-042")) })
        let first = try store.headSeq()
        let cities = ["Berlin", "Hamburg", "München", "Köln", "Frankfurt am Main", "Stuttgart"]
        var raw = 0
        for i in 0..<changes {
            var fields: [String: FieldValue] = ["phone": .string("+49 30 \(2_000_000 + i)")]
            if i % 2 == 0 { fields["email"] = .string("kunde.\(i)@example.de") }
            if i % 3 == 0 { fields["city"] = .string(cities[i % cities.count]) }
            raw += fields.values.reduce(0) { $0 + ($1.stringValue?.utf8.count ?? 0) }
            try store.commit([.upsert("customers", id: "cust-\((i * 37) % 1_000)", fields)])
        }
        let edits = try store.upstreamBatch(after: first, limit: changes).map(\.change)
        let rawPerChange = Double(raw) / Double(edits.count)
        result("raw field bytes", "\(format(rawPerChange, 1)) bytes/change")
        for batch in [1, 10, 100, 500] {
            var sent = 0
            for chunk in stride(from: 0, to: edits.count, by: batch) {
                let slice = Array(edits[chunk..<min(chunk + batch, edits.count)])
                sent += try ParentClient.encodeBody(PushRequest(tenant: "acme", through: slice.last!.originSeq, changes: slice),
                                                   compressAboveBytes: 1_024).bytes.readableBytes
            }
            let perChange = Double(sent) / Double(edits.count)
            let ratio = perChange / rawPerChange
            result("batch \(batch)", "\(format(perChange, 1)) bytes/change = \(format(ratio, 2)) × raw",
                   target: batch == 500 ? "≤ 1.5 ×" : nil, met: batch == 500 ? ratio <= 1.5 : nil)
        }
    }
}
