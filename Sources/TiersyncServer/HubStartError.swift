/// Why a hub (or a country node's server) could not start listening, naming what the
/// operator gave: NIO's own answers (`failedToLoadCertificate`, `bind(descriptor:ptr:bytes:)
/// … errno: 98`) named neither the file nor the port.
public struct HubStartError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
