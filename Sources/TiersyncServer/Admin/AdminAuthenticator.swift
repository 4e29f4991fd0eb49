import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import TiersyncCore
import TiersyncStorage

/// Who is calling an admin route: an API token (`Authorization: Bearer tsa_…`) or a console
/// session (the `tiersync_session` cookie, HttpOnly, Secure, SameSite=Strict). A session must
/// also show its CSRF token (`X-CSRF-Token`, or the console form's `csrf` field) on every
/// request that changes something. Tokens are looked up at every request, never cached: a
/// logout, an expiry or a disabled account takes effect at once, in every hub process.
public struct AdminAuthenticator: Sendable {
    let accounts: any AdminAccountStore
    let catalog: any HubCatalogStore
    static let cookieName = "tiersync_session"
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!

    enum Presented {
        case bearer(String)
        case session(String)
    }

    /// The secret a request presents, if any.
    static func presented(_ request: Request) -> Presented? {
        if let header = request.headers[.authorization], BearerCredential.parse(header).isBearer {
            return .bearer(String(BearerCredential.parse(header).credential))
        }
        for cookies in request.headers[values: .cookie] {
            for part in cookies.split(separator: ";") {
                let pair = part.trimmingCharacters(in: .whitespaces)
                if pair.hasPrefix(cookieName + "=") { return .session(String(pair.dropFirst(cookieName.count + 1))) }
            }
        }
        return nil
    }

    /// The caller, or 401 (nothing presented, or unknown, expired, revoked, or of a
    /// disabled account: one answer for all). `formCSRF`: the console form's field.
    func authenticate(_ request: Request, stateChanging: Bool, formCSRF: String? = nil) async throws -> AdminCaller {
        guard let presented = Self.presented(request) else {
            throw APIError(.unauthorized, "unauthenticated", "log in (POST /admin/v1/login) or send 'Authorization: Bearer <admin API token>'")
        }
        let secret: String
        switch presented {
        case .bearer(let s), .session(let s): secret = s
        }
        let digest = Self.digest(secret)
        guard let (token, user) = try await accounts.adminToken(digest: digest, nowMillis: WallClock.nowMillis()) else {
            // One answer for all; it names where tokens live (helper 94: HQ's API token at a
            // country node read as revoked).
            throw APIError(.unauthorized, "unauthenticated",
                           "the session or token is unknown here, expired or revoked: log in again (sessions and API tokens are known where they were issued: one issued at HQ is not known at a country node, where you log in with your password)")
        }
        var csrf: String?
        if case .session = presented {
            // A cookie is sent by the browser whatever page asks: a state change must prove
            // it comes from our own page, which alone can read the CSRF token.
            guard token.kind == .session else { throw APIError(.unauthorized, "unauthenticated", "not a session") }
            let expected = Self.csrfToken(forSession: secret)
            csrf = expected
            if stateChanging {
                let shown = request.headers[Self.csrfHeader] ?? formCSRF
                guard let shown, Self.constantTimeEqual(shown, expected) else {
                    throw APIError(.forbidden, "csrf", "this request changes something and needs the session's CSRF token (X-CSRF-Token)")
                }
            }
        } else if token.kind != .api {
            throw APIError(.unauthorized, "unauthenticated", "a console session goes in the cookie, not in Authorization")
        }
        if let move = catalog.movedAway(user.tenant) { throw move.answer(user.tenant) }
        let tree = try await catalog.tree(of: user.tenant)
        return AdminCaller(user: user, tokenDigest: digest, kind: token.kind, csrfToken: csrf, tree: tree,
                           subtree: tree.subtree(of: user.scope))
    }

    /// The SHA-256 (lower-case hex) under which the catalog keeps an admin secret.
    public static func digest(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The session's CSRF token: derived from the session secret (HMAC), so it needs no
    /// storage and no other session's token can be guessed from it.
    static func csrfToken(forSession secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("tiersync-csrf".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return Data(mac).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
