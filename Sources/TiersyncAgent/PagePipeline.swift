/// Pulls, prepares and applies pages of a feed in three overlapping stages, each on its own
/// task: while page n is applied, page n+1 is prepared and page n+2 requested. Only the
/// apply stage (a store's single writer) cannot overlap itself; pages are applied strictly
/// in order, each once.
///
/// The next pull leaves as soon as a page has arrived, since the page says where the next
/// one starts. A failed pull is reported after the page already in hand has been applied,
/// so a flaky link never throws away work that arrived. At most three pages are in memory.
public enum PagePipeline {
    /// Runs until a page says there is nothing after it (`next` returns nil), or a stage
    /// throws (the other stages are cancelled). `applied` runs after each page is applied.
    public static func run<Page: Sendable, Plan: Sendable>(
        from cursor: Int64,
        pull: @escaping @Sendable (Int64) async throws -> Page,
        next: @escaping @Sendable (Page) -> Int64?,
        prepare: @escaping @Sendable (Page) async throws -> Plan,
        apply: @escaping @Sendable (Page, Plan) async throws -> Void,
        applied: (Page) -> Void = { _ in }
    ) async throws {
        var pulling: Task<Page, any Error>? = Task { try await pull(cursor) }
        var preparing: Task<(Page, Plan), any Error>?
        defer {
            pulling?.cancel()
            preparing?.cancel()
        }
        /// Takes the page that arrives next: starts its preparation and the pull after it.
        func advance() async throws {
            guard let arriving = pulling else { preparing = nil; return }
            (pulling, preparing) = (nil, nil)
            let page = try await arriving.value
            pulling = next(page).map { cursor in Task { try await pull(cursor) } }
            preparing = Task { (page, try await prepare(page)) }
        }
        try await advance()
        while let ready = preparing {
            let (page, plan) = try await ready.value
            let applying = Task { try await apply(page, plan) }
            var pullFailure: (any Error)?
            do { try await advance() } catch { pullFailure = error }
            try await applying.value
            applied(page)
            if let pullFailure { throw pullFailure }
        }
    }
}
