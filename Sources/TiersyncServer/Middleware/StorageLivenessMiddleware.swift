import Hummingbird
import TiersyncStorage

/// Bounds how long a request waits for storage that went away (``StorageLiveness``): while
/// it is known down, every request but `/healthz` and `/metrics` is answered 503
/// `storage_unavailable` at once; a request being served when it goes is stopped (its task
/// cancelled: a write not committed is not applied, and the caller retries) and answered the
/// same. Each such answer is counted (``HubMetrics/recordStorageUnavailable()``). `/metrics`
/// stays served while the storage is gone (it reads no store then): an outage of the
/// database is not an outage of the hub's metrics.
struct StorageLivenessMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let liveness: any StorageLiveness
    let metrics: HubMetrics

    /// The answer while storage cannot be reached (ErrorBodyMiddleware's for a pool's failure).
    static var unavailable: APIError {
        var error = APIError(.serviceUnavailable, "storage_unavailable",
                             "the hub's database cannot be reached right now; nothing was applied. Retry later")
        error.headers[.retryAfter] = "5"
        return error
    }

    /// The answer to a request being served when the storage went: whatever it wrote may
    /// have committed just before (a push sent again is applied once).
    static var wentAway: APIError {
        var error = APIError(.serviceUnavailable, "storage_unavailable",
                             "the hub's database went away while this request was served; it may or may not have been applied. Retry later")
        error.headers[.retryAfter] = "5"
        return error
    }

    private enum Outcome: Sendable {
        case answered(Response)
        case storageDown
    }

    /// The rest of the chain, handed to a child task for the time of one request (the group
    /// below awaits it before returning, so it never outlives the call).
    private struct Next: @unchecked Sendable {
        let call: (Request, Context) async throws -> Response
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path != HubRoutes.liveness.path else { return try await next(request, context) }
        if liveness.isDown {
            if request.uri.path == HubRoutes.metrics.path { return try await next(request, context) }
            metrics.recordStorageUnavailable()
            throw Self.unavailable
        }
        let liveness = self.liveness
        return try await withoutActuallyEscaping(next) { next in
            let rest = Next(call: next)
            return try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask { .answered(try await rest.call(request, context)) }
                group.addTask {
                    try await liveness.untilDown()
                    return .storageDown
                }
                defer { group.cancelAll() }
                switch try await group.next()! {
                case .answered(let response): return response
                case .storageDown:
                    metrics.recordStorageUnavailable()
                    throw Self.wentAway
                }
            }
        }
    }
}
