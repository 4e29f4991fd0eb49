// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "tiersync",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tiersync", targets: ["tiersync"]),
        .executable(name: "tiersync-bench", targets: ["tiersync-bench"]),
        .executable(name: "tiersync-fuzz", targets: ["tiersync-fuzz"]),
        .executable(name: "tiersync-agent", targets: ["tiersync-agent"]),
        .library(name: "TiersyncCore", targets: ["TiersyncCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        // Pure sync rules: clock, changes, merge, schema, wire types. No I/O.
        .target(name: "TiersyncCore"),
        // The system zlib, for reading gzip request bodies with exact limits (Debian: zlib1g-dev).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", providers: [.apt(["zlib1g-dev"])]),
        // KPIs as plain values (no I/O): the formulas a release defines, evaluated per
        // interaction and lead, per node and day; roll-ups; the KPI table. The store keeps
        // its accumulators with it, in the transaction of every write, so it depends on Core only.
        .target(name: "TiersyncKPI", dependencies: ["TiersyncCore"]),
        // The storage seam (no I/O): what server, agent and country node need of a store, as
        // protocols, and the values they exchange. Engines implement it beside it.
        .target(name: "TiersyncStorage", dependencies: [
            "TiersyncCore", "TiersyncKPI",
            // SHA-256 only (a tenant's migration digest): pure computation, no I/O.
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // SQLite storage (GRDB), the embedded engine: node stores, hub catalog, per-tenant databases.
        .target(name: "TiersyncStore", dependencies: [
            "TiersyncCore", "TiersyncKPI", "TiersyncStorage",
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "GRDBSQLite", package: "GRDB.swift"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Governance: YAML authoring, validation, signed releases/rollouts/overlays, and
        // the rules deciding what a node applies. No I/O beyond reading source files.
        .target(name: "TiersyncGovernance", dependencies: [
            .product(name: "Yams", package: "Yams"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Governance that acts, as plain values (no I/O): allocation of new dialogues from the
        // release in force (the store's write seam runs it through TiersyncAgent), escalation
        // and proactive contacts (evaluated by TiersyncAgent's RulesRunner).
        .target(name: "TiersyncRules", dependencies: [
            "TiersyncCore", "TiersyncGovernance",
            // SHA-256 for the ids of escalation entries and proactive tasks.
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // PostgreSQL, the hub's second storage engine (issue 14): catalog, tenant stores,
        // compaction, rules and KPI reads, migration, LISTEN/NOTIFY between hub processes.
        .target(name: "TiersyncPostgres", dependencies: [
            "TiersyncCore", "TiersyncStorage", "TiersyncKPI",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            // Its pool's errors (ConnectionPoolError: PostgreSQL cannot be reached).
            .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
            // TimeAmount (a connection's connect timeout), and the errors of a connection
            // that could not be opened (PostgresLiveness).
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Development PKI: a local CA plus server certificates for loopback TLS.
        .target(name: "TiersyncPKI", dependencies: [
            .product(name: "X509", package: "swift-certificates"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The hub: Hummingbird routes over TLS, authentication, tenant/scope checks.
        .target(name: "TiersyncServer", dependencies: [
            "TiersyncStorage",
            .product(name: "Crypto", package: "swift-crypto"),
            "TiersyncCore", "TiersyncKPI", "TiersyncStore", "TiersyncGovernance", "CZlib",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "HummingbirdTLS", package: "hummingbird"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCore", package: "swift-nio"),
            // Threads of its own for CPU-bound work (large bodies), apart from the Dispatch
            // workers every SQLite wait uses.
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "CompressNIO", package: "compress-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            // PBKDF2 for admin passwords.
            .product(name: "_CryptoExtras", package: "swift-crypto"),
            // The console's server-rendered HTML.
            .product(name: "Mustache", package: "swift-mustache"),
        ]),
        // The node-side sync agent: push/pull loops over AsyncHTTPClient.
        .target(name: "TiersyncAgent", dependencies: [
            "TiersyncCore", "TiersyncStore", "TiersyncGovernance", "TiersyncRules",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "CompressNIO", package: "compress-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // A country node: a hub for its dealers and an agent towards HQ, in one process.
        .target(name: "TiersyncNode", dependencies: [
            "TiersyncCore", "TiersyncStore", "TiersyncServer", "TiersyncAgent", "TiersyncGovernance",
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // What `agent run` needs from a command line, shared by `tiersync` and the lean
        // `tiersync-agent` executable (a dealer's daemon without the hub in its binary).
        .target(name: "TiersyncAgentCLI", dependencies: [
            "TiersyncCore", "TiersyncStore", "TiersyncAgent", "TiersyncGovernance",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "tiersync-agent", dependencies: [
            "TiersyncAgentCLI",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], linkerSettings: [
            // The Swift runtime and Foundation linked in: a dealer's daemon maps one file
            // instead of a dozen shared libraries (see BENCHMARKS.md, idle).
            .unsafeFlags(["-static-stdlib", "-Xlinker", "--start-group",
                          "-lFoundation", "-lFoundationInternationalization", "-lFoundationEssentials", "-lCoreFoundation",
                          "-l_FoundationICU", "-l_FoundationCShims", "-l_FoundationCollections", "-lswiftSynchronization",
                          "-Xlinker", "--end-group"]),
        ]),
        .executableTarget(name: "tiersync", dependencies: [
            "TiersyncAgentCLI",
            "TiersyncCore", "TiersyncKPI", "TiersyncStore", "TiersyncServer", "TiersyncAgent", "TiersyncNode", "TiersyncPKI", "TiersyncGovernance", "TiersyncRules",
            "TiersyncPostgres", "TiersyncStorage",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
        ]),
        // Benchmarks over real HTTPS and SQLite (run in release mode for figures).
        .executableTarget(name: "tiersync-bench", dependencies: [
            "TiersyncCore", "TiersyncKPI", "TiersyncStore", "TiersyncServer", "TiersyncAgent", "TiersyncNode", "TiersyncPKI",
            "TiersyncGovernance", "TiersyncPostgres", "TiersyncStorage",
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "GRDB", package: "GRDB.swift"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        // An in-process fuzzer for the wire decoders and the push handler's validation (.ci/run runs it).
        .executableTarget(name: "tiersync-fuzz", dependencies: [
            "TiersyncCore", "TiersyncStore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "TiersyncCoreTests", dependencies: [
            "TiersyncCore",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        // Helpers shared by the test targets: temporary directories, a running hub, processes,
        // a fresh PostgreSQL database per test (TestPostgres), HAProxy in front of hubs (TestLoadBalancer), a scripted hostile parent (FakeParent).
        .target(name: "TiersyncTestSupport", dependencies: [
            "TiersyncCore", "TiersyncStore", "TiersyncServer", "TiersyncAgent", "TiersyncNode", "TiersyncPKI", "TiersyncGovernance",
            "TiersyncPostgres", "TiersyncStorage",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ], path: "Tests/TiersyncTestSupport"),
        .testTarget(name: "TiersyncGovernanceTests", dependencies: ["TiersyncGovernance", "TiersyncTestSupport"]),
        .testTarget(name: "TiersyncKPITests", dependencies: ["TiersyncKPI", "TiersyncCore", "TiersyncGovernance", "TiersyncTestSupport"]),
        .testTarget(name: "TiersyncRulesTests", dependencies: ["TiersyncRules", "TiersyncCore", "TiersyncGovernance", "TiersyncTestSupport"]),
        .testTarget(name: "TiersyncStoreTests", dependencies: [
            "TiersyncCore", "TiersyncKPI", "TiersyncStore", "TiersyncTestSupport", .product(name: "GRDB", package: "GRDB.swift"),
        ]),
        .testTarget(name: "TiersyncIntegrationTests", dependencies: [
            "TiersyncCore", "TiersyncKPI", "TiersyncStore", "TiersyncServer", "TiersyncAgent", "TiersyncNode", "TiersyncPKI", "TiersyncGovernance", "TiersyncRules", "TiersyncTestSupport",
            "TiersyncPostgres", "TiersyncStorage", "TiersyncAgentCLI",
            // The CLI's command tree, parsed in-process (DocumentedCommandLineTests).
            "tiersync",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "PostgresNIO", package: "postgres-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "CompressNIO", package: "compress-nio"),
            // openapi.yaml read as YAML (HubAPITests.openAPIMatchesRoutes).
            .product(name: "Yams", package: "Yams"),
        ]),
    ]
)
