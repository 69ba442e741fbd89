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
        .library(name: "AffinityModels", targets: ["AffinityModels"]),
        .library(name: "AffinityANN", targets: ["AffinityANN"]),
        .executable(name: "affinity", targets: ["affinity"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // Implementation detail: runtime-dispatched AVX-512 / AVX2 / portable C kernels.
        .target(name: "_AffinityKernels"),
        .target(name: "AffinityLinalg", dependencies: ["_AffinityKernels"]),
        .target(name: "AffinityData", dependencies: ["AffinityLinalg"]),
        .target(name: "AffinityEval", dependencies: ["AffinityData", "AffinityLinalg"]),
        .target(name: "AffinityModels", dependencies: ["AffinityData", "AffinityLinalg"]),
        .target(name: "AffinityANN", dependencies: ["AffinityLinalg"]),
        // Shared test helpers: the recommender conformance suite every model runs.
        .target(name: "AffinityTestSupport", dependencies: ["AffinityModels", "AffinityData", "AffinityLinalg"]),
        .executableTarget(
            name: "affinity",
            dependencies: [
                "AffinityLinalg", "AffinityData", "AffinityEval", "AffinityModels", "AffinityANN",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "AffinityLinalgTests", dependencies: ["AffinityLinalg"]),
        .testTarget(name: "AffinityDataTests", dependencies: ["AffinityData"]),
        .testTarget(name: "AffinityEvalTests", dependencies: ["AffinityEval", "AffinityModels"]),
        .testTarget(name: "AffinityModelsTests", dependencies: ["AffinityModels", "AffinityTestSupport", "AffinityEval"]),
        .testTarget(name: "AffinityANNTests", dependencies: ["AffinityANN", "AffinityLinalg"]),
        .testTarget(name: "AffinityCLITests", dependencies: ["affinity"]),
    ],
    swiftLanguageModes: [.v6]
)
