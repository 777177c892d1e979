// swift-tools-version:6.0
import PackageDescription

// Kernels are compiled for a Haswell-class baseline (AVX2 + FMA + F16C) on x86-64 so that
// Swift SIMD types lower to 256-bit vectors; the binary runs on any AVX2 machine.
#if arch(x86_64)
let kernelCPUFlags = ["-target-cpu", "haswell"]
// KernelsAVX512 only runs after a run-time check (Kernels/CPUDispatch.swift) finds every feature of this CPU.
let avx512CPUFlags = ["-target-cpu", "icelake-server"]
#else
let kernelCPUFlags: [String] = []
let avx512CPUFlags: [String] = []
#endif

// `swift build -c release --build-tests` then `swift test -c release --skip-build` (scripts/test)
// needs @testable-capable modules in release too; `swift test` alone would add this itself.
let testableSettings: [SwiftSetting] = [.unsafeFlags(["-enable-testing"])]

let kernelSettings: [SwiftSetting] = testableSettings + [
    .unsafeFlags(kernelCPUFlags),
    .unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let avx512Settings: [SwiftSetting] = testableSettings + [
    .unsafeFlags(avx512CPUFlags),
    .unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

// libFuzzer targets (scripts/fuzz builds them with -sanitize=fuzzer,address). Built without it, as
// here, each replays the files it is given, so they build with the package and reproduce crashes.
func fuzzTarget(_ name: String, _ folder: String, _ dependencies: [Target.Dependency]) -> Target {
    .executableTarget(name: name, dependencies: ["FuzzDriver"] + dependencies, path: "Sources/Fuzz/\(folder)")
}

let package = Package(
    name: "Swiftlet",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "swiftlet", targets: ["swiftlet"]),
        .library(name: "Engine", targets: ["Engine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
    ],
    targets: [
        // file → weights
        .target(name: "GGUF", swiftSettings: testableSettings),
        // every CPU kernel (quant formats, matrix products, attention, norms, activations, RoPE), ISA dispatch, thread pool
        .target(name: "Kernels", dependencies: ["GGUF", "KernelsAVX512", "CIntrinsics"], swiftSettings: kernelSettings),
        // AVX-512/VNNI kernel bodies (matmul, attention), called only after CPUDispatch (in Kernels) checked the CPU (empty off x86-64)
        .target(name: "KernelsAVX512", dependencies: ["GGUF", "CIntrinsics"], swiftSettings: avx512Settings),
        // intrinsics that are C macros, which Swift cannot import (a header of static inline functions)
        .target(name: "CIntrinsics"),
        // ordered JSON values: one parser and serializer (schemas, request bodies, chat templates)
        .target(name: "JSON", dependencies: [
            .product(name: "OrderedCollections", package: "swift-collections"),
        ], swiftSettings: testableSettings),
        // text ↔ tokens, chat templates
        .target(name: "Tokenization", dependencies: [
            "GGUF", "JSON", .product(name: "HeapModule", package: "swift-collections"),
        ], swiftSettings: testableSettings),
        // forward passes: tokens → logits
        .target(name: "Models", dependencies: ["GGUF", "Kernels"], swiftSettings: kernelSettings),
        // KV cache, sampler, generation loop
        .target(name: "Engine", dependencies: ["GGUF", "JSON", "Kernels", "Models", "Tokenization"], swiftSettings: testableSettings),
        // `swiftlet serve`: OpenAI-compatible HTTP API over the continuous-batching scheduler
        .target(name: "Server", dependencies: [
            "Engine", "JSON", "Kernels", "Models", "Tokenization",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HTTPTypes", package: "swift-http-types"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ], swiftSettings: testableSettings),
        .executableTarget(name: "swiftlet", dependencies: [
            "Engine", "GGUF", "Kernels", "Models", "Tokenization", "Server",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .target(name: "FuzzDriver", path: "Sources/Fuzz/Driver"),
        fuzzTarget("fuzz-gguf", "GGUF", ["GGUF", "Models", "Tokenization"]),
        fuzzTarget("fuzz-tokenizers", "Tokenizers", ["GGUF", "Tokenization", "TestSupport"]),
        fuzzTarget("fuzz-chat-template", "ChatTemplate", ["JSON", "Tokenization"]),
        fuzzTarget("fuzz-json", "JSON", ["JSON"]),
        fuzzTarget("fuzz-json-schema", "JSONSchema", ["Engine", "JSON"]),
        fuzzTarget("fuzz-openai-request", "OpenAIRequest", ["Server"]),
        // model and reference-data locations for the tests
        .target(name: "TestSupport", swiftSettings: testableSettings),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "TestSupport"]),
        .testTarget(name: "JSONTests", dependencies: ["JSON"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "GGUF", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization", "JSON", "GGUF", "TestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "ModelsTests", dependencies: ["Models", "GGUF", "Kernels", "TestSupport"]),
        .testTarget(name: "EngineTests", dependencies: ["Engine", "JSON", "Models", "Tokenization", "GGUF", "TestSupport", "swiftlet"]),
        .testTarget(name: "ServerTests", dependencies: [
            "Server", "Engine", "JSON", "Models", "Kernels", "Tokenization", "TestSupport",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdTesting", package: "hummingbird"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
