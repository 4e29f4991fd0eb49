import TiersyncKPI

/// The KPIs a store counts: the catalog of the governance its node runs (release ⊕
/// overlay), with the release and overlay it came from. Set with ``NodeStore/adoptKPIs(_:)``.
public struct KPIAdoption: Sendable, Codable, Equatable {
    public var release: Int?
    public var overlay: String?
    public var levels: [String]
    public var definitions: [KPIDefinition]

    public init(release: Int?, overlay: String?, catalog: KPICatalog) {
        self.release = release
        self.overlay = overlay
        self.levels = catalog.levels
        self.definitions = catalog.definitions
    }

    public var catalog: KPICatalog { KPICatalog(definitions: definitions, levels: levels) }
}
