import Hummingbird

/// The credential of an `Authorization: Bearer <credential>` header: the scheme in any case
/// (RFC 9110), the credential after the spaces that follow it. Every route that reads one
/// reads it here, so `bearer` is accepted everywhere or nowhere.
enum BearerCredential {
    /// The header's value split into whether it names the Bearer scheme and its credential
    /// (empty when none follows: the parser drops a header's trailing spaces).
    static func parse(_ header: String) -> (isBearer: Bool, credential: Substring) {
        let scheme = header.prefix { $0 != " " }
        guard scheme.lowercased() == "bearer" else { return (false, "") }
        return (true, header.dropFirst(scheme.count).drop { $0 == " " })
    }

    /// The request's Bearer credential, when it presents a non-empty one.
    static func of(_ request: Request) -> String? {
        guard let header = request.headers[.authorization] else { return nil }
        let parsed = parse(header)
        return parsed.isBearer && !parsed.credential.isEmpty ? String(parsed.credential) : nil
    }
}
