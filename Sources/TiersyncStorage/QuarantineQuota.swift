/// How much of its refused changes a store keeps: the quarantine's bounds.
///
/// A node that sends changes the receiver refuses gets each one answered with its reason,
/// and the receiver keeps it for the operator (`tiersync admin quarantine`). Kept without a
/// bound, one node's stream of refusals (each kept change is clipped to
/// ``QuarantineEncoding/maxChangeBytes``) grew a tenant's database, on a disk every tenant
/// shares, by 80 MB a push. So both engines keep at most ``maxBytesPerSender`` bytes of the
/// changes one sender (the child that sent them) had refused, and at most ``maxBytes`` in
/// all; past either, a refusal is still answered, but not kept, and counted
/// (``AttentionCounts/quarantineUnkept``). A change already kept is always replaced, so a
/// retried batch is judged as before.
///
/// The database enforces it (a trigger before each insert, and a table of bytes kept per
/// sender kept by triggers), so every path that quarantines is bounded alike. A kept
/// change's size is the UTF-8 bytes of its JSON and of its reason.
public struct QuarantineQuota: Sendable, Equatable {
    /// The most bytes kept of the changes one sender had refused.
    public var maxBytesPerSender: Int64
    /// The most bytes kept in the whole quarantine of one store (a hub's tenant).
    public var maxBytes: Int64

    public init(maxBytesPerSender: Int64 = Self.default.maxBytesPerSender, maxBytes: Int64 = Self.default.maxBytes) {
        self.maxBytesPerSender = maxBytesPerSender
        self.maxBytes = maxBytes
    }

    private init(perSender: Int64, total: Int64) {
        (maxBytesPerSender, maxBytes) = (perSender, total)
    }

    /// 32 MiB per sender (a country relays its whole subtree's refusals), 256 MiB per store:
    /// far above what a node's honest mistakes leave before an operator reads them.
    public static let `default` = QuarantineQuota(perSender: 32 << 20, total: 256 << 20)

    /// The settings' keys in each store's meta table (both engines): the bounds the store
    /// enforces, written by the process that serves it (`tiersync hub serve`), and how many
    /// refusals were not kept. A store without the bounds written enforces ``default``.
    public enum SettingKey: String, Sendable, CaseIterable {
        case maxBytesPerSender = "quarantine.max_sender_bytes"
        case maxBytes = "quarantine.max_bytes"
        case unkept = "quarantine.unkept"
    }
}
