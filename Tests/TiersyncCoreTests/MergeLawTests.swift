import PropertyBased
import Testing
import TiersyncCore

/// Turns a list of random seeds into changes to one record by three nodes. Every change
/// gets a distinct version (its index is the HLC counter), as honest nodes guarantee.
func changes(from seeds: [Int]) -> [Change] {
    let nodes: [NodeID] = ["dealer-a", "dealer-b", "hq"]
    let fields = ["first_name", "phone", "city"]
    let values: [FieldValue] = ["x", "y", "z", .null, 7, true]
    return seeds.enumerated().map { index, seed in
        let origin = nodes[seed % 3]
        let hlc = HLCTimestamp(wallMillis: UInt64(1_000 + (seed / 3) % 5), counter: UInt16(index))
        if (seed / 15) % 7 == 0 {
            return Change(origin: origin, originSeq: Int64(index + 1), hlc: hlc, table: "customers", recordID: "c-1", op: .delete)
        }
        var written: [String: FieldValue] = [:]
        for (i, field) in fields.enumerated() where (seed >> (i + 4)) & 1 == 1 || i == seed % 3 {
            written[field] = values[(seed >> (i * 3 + 7)) % values.count]
        }
        return Change(origin: origin, originSeq: Int64(index + 1), hlc: hlc, table: "customers", recordID: "c-1",
                      op: .upsert, fields: written)
    }
}

func state(applying list: [Change]) -> RecordState {
    var s = RecordState()
    for c in list { s.apply(c) }
    return s
}

let seedLists = Gen.int(in: 0...1_000_000).array(of: 0...10)

@Suite("Merge laws")
struct MergeLawTests {
    @Test("merge is commutative")
    func commutative() async {
        await propertyCheck(count: 300, input: seedLists, seedLists) { a, b in
            let x = state(applying: changes(from: a)), y = state(applying: changes(from: b).map(shifted))
            #expect(x.merged(with: y) == y.merged(with: x))
        }
    }

    @Test("merge is associative")
    func associative() async {
        await propertyCheck(count: 300, input: seedLists, seedLists, seedLists) { a, b, c in
            let x = state(applying: changes(from: a))
            let y = state(applying: changes(from: b).map(shifted))
            let z = state(applying: changes(from: c).map { shifted(shifted($0)) })
            #expect(x.merged(with: y).merged(with: z) == x.merged(with: y.merged(with: z)))
        }
    }

    @Test("merge is idempotent")
    func idempotent() async {
        await propertyCheck(count: 300, input: seedLists) { a in
            let x = state(applying: changes(from: a))
            #expect(x.merged(with: x) == x)
        }
    }

    @Test("applying changes in any order, any number of times, gives the same state")
    func orderIndependent() async {
        await propertyCheck(count: 300, input: seedLists, Gen.int(in: 0...1_000)) { seeds, shuffleSeed in
            let list = changes(from: seeds)
            var rng = SplitMix(seed: UInt64(shuffleSeed))
            let shuffled = list.shuffled(using: &rng)
            let reference = state(applying: list)
            #expect(state(applying: shuffled) == reference)
            #expect(state(applying: list + shuffled) == reference, "redelivery must be a no-op")
            #expect(list.map { state(applying: [$0]) }.reduce(RecordState()) { $0.merged(with: $1) } == reference,
                    "applying changes equals merging their single-change states")
        }
    }

    /// Moves a change to other versions (so two generated lists never reuse a version).
    func shifted(_ c: Change) -> Change {
        var c = c
        c.hlc = HLCTimestamp(rawValue: c.hlc.rawValue + 100)
        return c
    }
}

struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
