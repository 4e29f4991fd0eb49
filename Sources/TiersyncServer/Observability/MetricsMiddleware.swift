import HTTPTypes
import Hummingbird
import TiersyncCore

/// Counts and times every authenticated node's request by tenant, route and status
/// (``HubMetrics``), and tells the caller the request's id (`X-Request-Id`, the
/// `request_id` of every log line the request wrote), so a support case can be matched to
/// the hub's logs. Runs after authentication: before it there is no tenant to count under,
/// and a path no route has is not counted (its value is the caller's to vary).
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = HubRequestContext
    let metrics: HubMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let route = context.principal == nil ? nil : HubMetrics.routeLabel(method: request.method.rawValue, path: request.uri.path)
        do {
            var response = try await next(request, context)
            response.headers[.requestID] = context.id
            record(route, context, status: Int(response.status.code), since: start)
            return response
        } catch let error as HTTPResponseError {
            record(route, context, status: Int(error.status.code), since: start)
            throw error
        } catch {
            record(route, context, status: 500, since: start)
            throw error
        }
    }

    private func record(_ route: String?, _ context: Context, status: Int, since start: ContinuousClock.Instant) {
        guard let route, let tenant = context.principal?.tenant else { return }
        let elapsed = (ContinuousClock.now - start).components
        metrics.recordRequest(tenant: tenant, route: route, status: status,
                              nanoseconds: elapsed.seconds &* 1_000_000_000 &+ elapsed.attoseconds / 1_000_000_000)
    }
}

extension HTTPField.Name {
    static let requestID = Self("X-Request-Id")!
}
