// swift-tools-version:6.1
import PackageDescription

// Module map: ../shared/DESIGN.md. Library modules carry no server dependency so an iOS or macOS
// app can depend on them alone; no `unsafeFlags`, so other packages can depend on ours.
let package = Package(
    name: "Affinity",
    platforms: [.macOS(.v14), .iOS(.v17)],
    products: [
        .library(name: "AffinityLinalg", targets: ["AffinityLinalg"]),
        .library(name: "AffinityData", targets: ["AffinityData"]),
        .library(name: "AffinityEval", targets: ["AffinityEval"]),
        .library(name: "AffinityNN", targets: ["AffinityNN"]),
        .library(name: "AffinityModels", targets: ["AffinityModels"]),
        .library(name: "AffinityANN", targets: ["AffinityANN"]),
        .library(name: "AffinityText", targets: ["AffinityText"]),
        .library(name: "AffinityPipeline", targets: ["AffinityPipeline"]),
        .library(name: "AffinityPlot", targets: ["AffinityPlot"]),
        .library(name: "AffinityServer", targets: ["AffinityServer"]),
        .executable(name: "affinity", targets: ["affinity"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // Server only (AffinityServer): HTTP, logging, and SQLite (sqlite-nio vendors the SQLite
        // amalgamation, so nothing needs installing; we use its C module directly).
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // PostgreSQL store (`PostgresStore`): several replicas over one database.
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // Implementation detail: runtime-dispatched AVX-512 / AVX2 / portable C kernels.
        .target(name: "_AffinityKernels"),
        // Implementation detail: gzip input through the system zlib (its initialisers are C macros).
        .target(name: "_AffinityZlib", linkerSettings: [.linkedLibrary("z")]),
        .target(name: "AffinityLinalg", dependencies: ["_AffinityKernels"]),
        .target(name: "AffinityData", dependencies: ["AffinityLinalg", "_AffinityZlib"]),
        .target(name: "AffinityEval", dependencies: ["AffinityData", "AffinityLinalg"]),
        .target(name: "AffinityNN", dependencies: ["AffinityLinalg"]),
        .target(name: "AffinityModels", dependencies: ["AffinityData", "AffinityEval", "AffinityLinalg", "AffinityNN"]),
        .target(name: "AffinityANN", dependencies: ["AffinityLinalg", "_AffinityKernels"]),
        // Item text: WordPiece and a BERT sentence encoder (inference) on AffinityNN's Transformer.
        .target(name: "AffinityText", dependencies: ["AffinityNN", "AffinityLinalg"]),
        // SVG charts and self-contained HTML pages (no dependencies): the one place Affinity draws.
        .target(name: "AffinityPlot"),
        .target(name: "AffinityPipeline", dependencies: ["AffinityModels", "AffinityANN", "AffinityData", "AffinityLinalg"]),
        .target(
            name: "AffinityServer",
            dependencies: [
                "AffinityPipeline", "AffinityModels", "AffinityANN", "AffinityData", "AffinityLinalg", "AffinityPlot",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            resources: [.copy("openapi.yaml")]
        ),
        // Shared test helpers: the recommender conformance suite every model runs.
        .target(name: "AffinityTestSupport", dependencies: ["AffinityModels", "AffinityData", "AffinityLinalg"]),
        // Tests' scratch files: one folder per test process, removed at exit (Foundation only).
        .target(name: "AffinityTestScratch"),
        .executableTarget(
            name: "affinity",
            dependencies: [
                "AffinityLinalg", "AffinityData", "AffinityEval", "AffinityModels", "AffinityANN",
                "AffinityPipeline", "AffinityServer", "AffinityText", "AffinityPlot",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The README's Swift example, compiled by every build and run by AffinityCLITests.
        .executableTarget(name: "affinity-quickstart", dependencies: ["AffinityData", "AffinityEval", "AffinityModels"],
                          path: "Examples/QuickStart"),
        .testTarget(name: "AffinityLinalgTests", dependencies: ["AffinityTestScratch", "AffinityLinalg"]),
        .testTarget(name: "AffinityDataTests", dependencies: ["AffinityTestScratch", "AffinityData"]),
        .testTarget(name: "AffinityEvalTests", dependencies: ["AffinityTestScratch", "AffinityEval", "AffinityModels"]),
        .testTarget(name: "AffinityModelsTests", dependencies: ["AffinityTestScratch", "AffinityModels", "AffinityTestSupport", "AffinityEval"]),
        .testTarget(name: "AffinityTextTests", dependencies: ["AffinityTestScratch", "AffinityText", "AffinityNN", "AffinityLinalg"]),
        .testTarget(name: "AffinityANNTests", dependencies: ["AffinityTestScratch", "AffinityANN", "AffinityLinalg"]),
        .testTarget(name: "AffinityNNTests", dependencies: ["AffinityTestScratch", "AffinityNN", "AffinityLinalg", "AffinityTestSupport"]),
        .testTarget(name: "AffinityPipelineTests", dependencies: ["AffinityTestScratch", "AffinityPipeline", "AffinityModels", "AffinityData"]),
        .testTarget(name: "AffinityServerTests", dependencies: ["AffinityTestScratch", "AffinityServer", "AffinityPipeline", "AffinityModels", "AffinityData",
                                                               .product(name: "Hummingbird", package: "hummingbird"),
                                                               .product(name: "PostgresNIO", package: "postgres-nio")]),
        .testTarget(name: "AffinityPlotTests", dependencies: ["AffinityPlot"]),
        .testTarget(name: "AffinityCLITests", dependencies: ["AffinityTestScratch", "affinity", "affinity-quickstart"]),
    ],
    swiftLanguageModes: [.v6]
)
