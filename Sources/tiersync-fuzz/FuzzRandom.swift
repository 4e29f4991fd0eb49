/// A small, fast, seedable generator (SplitMix64): every input the fuzzer makes follows
/// from the run's seed and the iteration number, so a failure can be made again.
struct FuzzRandom: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    /// The generator for iteration `n` of a run seeded `seed`.
    init(seed: UInt64, iteration: UInt64) {
        var mix = FuzzRandom(seed: seed ^ (iteration &* 0x9E37_79B9_7F4A_7C15))
        state = mix.next()
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<n` (0 when n is 0).
    mutating func below(_ n: Int) -> Int {
        n <= 0 ? 0 : Int(next() % UInt64(n))
    }

    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + below(range.count)
    }

    /// True with probability `p`.
    mutating func chance(_ p: Double) -> Bool {
        Double(next() >> 11) / Double(1 << 53) < p
    }

    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }

    /// Mostly small sizes, sometimes large ones: lengths that exercise both the common
    /// path and the limits.
    mutating func size(max: Int) -> Int {
        switch below(10) {
        case 0..<6: return below(min(max, 16) + 1)
        case 6..<9: return below(min(max, 256) + 1)
        default: return below(max + 1)
        }
    }
}
