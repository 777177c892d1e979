import Foundation

/// Locations of the real models and of llama.cpp's reference outputs, shared by the test targets.
public enum TestSupport {
    /// This test process's scratch folder (under the system's temporary directory), removed
    /// when the process exits, so runs leave no model files behind in /tmp.
    public static let scratchRoot: URL = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: TestSupport.scratchRoot) }
        return root
    }()

    /// A new, empty folder under `scratchRoot` whose name starts with `name`.
    public static func scratchDirectory(_ name: String) throws -> URL {
        let dir = scratchRoot.appendingPathComponent("\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// `$SWIFTLET_HOME` or `~/.cache/swiftlet`: where `swiftlet pull` and `.ci/run` put models.
    public static var home: URL {
        if let h = ProcessInfo.processInfo.environment["SWIFTLET_HOME"], !h.isEmpty {
            return URL(fileURLWithPath: h)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/swiftlet")
    }

    public static let smolLM2FileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let gemma3FileName = "gemma-3-270m-q4_k_m.gguf"

    public static var smolLM2Path: String { home.appendingPathComponent("models/\(smolLM2FileName)").path }
    public static var gemma3Path: String { home.appendingPathComponent("models/\(gemma3FileName)").path }

    /// The folder `shared/reference`, found by walking up from this source file
    /// (the repository sits beside `shared/`, in CI and in worktrees alike).
    public static func referenceDirectory(from file: String = #filePath) -> URL? {
        var dir = URL(fileURLWithPath: file).deletingLastPathComponent()
        while dir.path != "/" {
            let candidate = dir.appendingPathComponent("shared/reference")
            if FileManager.default.fileExists(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }

    /// Parsed `shared/reference/NAME.json` (e.g. `smollm2-135m-instruct-q4_1`).
    public static func reference(_ name: String) throws -> [String: Any] {
        guard let dir = referenceDirectory() else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "shared/reference not found above the repository"])
        }
        let data = try Data(contentsOf: dir.appendingPathComponent("\(name).json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    /// The repository root (the folder holding Package.swift).
    public static func repositoryRoot(from file: String = #filePath) -> URL {
        var dir = URL(fileURLWithPath: file).deletingLastPathComponent()
        while dir.path != "/" && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
            dir = dir.deletingLastPathComponent()
        }
        return dir
    }
}

extension TestSupport {
    /// Runs `python3 ARGUMENTS…` (e.g. `["-c", script, path]`) and returns its standard output.
    /// Fails, never skips, when python3 or the packages it imports (numpy, gguf) are missing.
    @discardableResult
    public static func python(_ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3"] + arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey:
                "python3 failed (needs numpy and gguf: pip install numpy gguf): \(String(decoding: message, as: UTF8.self))"])
        }
        return String(decoding: output, as: UTF8.self)
    }
}

extension TestSupport {
    /// The llama-cpp-python release whose vendored llama.cpp `scripts/llama_cpp.py` fetches and builds.
    public static let llamaCppVersion = "0.3.36"

    /// `$SWIFTLET_HOME/llama.cpp/<version>`: where `scripts/llama_cpp.py` keeps llama.cpp.
    public static var llamaCppRoot: URL { home.appendingPathComponent("llama.cpp/\(llamaCppVersion)") }

    /// llama.cpp's source tree as `scripts/llama_cpp.py` unpacks it (its `fetch_source()`).
    public static var llamaCppSource: URL {
        llamaCppRoot.appendingPathComponent("llama_cpp_python-\(llamaCppVersion)/vendor/llama.cpp")
    }

    /// The names (`bert-bge`, `llama-spm`, ...) of llama.cpp's tokenizer test vocabularies: the
    /// `models/ggml-vocab-NAME.gguf` files of its source that come with `.inp` and `.out` files
    /// (inputs and expected token ids, read by its `tests/test-tokenizer-0`). Empty when the
    /// source has not been fetched.
    public static func llamaCppVocabularyNames() -> [String] {
        let models = llamaCppSource.appendingPathComponent("models")
        guard let files = try? FileManager.default.contentsOfDirectory(atPath: models.path) else { return [] }
        let prefix = "ggml-vocab-", suffix = ".gguf"
        return files.filter { $0.hasPrefix(prefix) && $0.hasSuffix(suffix) }
            .filter { files.contains($0 + ".inp") && files.contains($0 + ".out") }
            .map { String($0.dropFirst(prefix.count).dropLast(suffix.count)) }
            .sorted()
    }

    /// `models/ggml-vocab-NAME.gguf` in llama.cpp's source.
    public static func llamaCppVocabulary(_ name: String) -> URL {
        llamaCppSource.appendingPathComponent("models/ggml-vocab-\(name).gguf")
    }

    /// llama.cpp's binaries as `scripts/llama_cpp.py` builds them (scripts/test runs it before
    /// the tests): `$SWIFTLET_HOME/llama.cpp/<version>/build-native-noamx/bin`.
    public static var llamaCppBin: URL { llamaCppRoot.appendingPathComponent("build-native-noamx/bin") }

    /// The path of llama.cpp's `tool` (e.g. `llama-perplexity`), or nil when it is not built.
    public static func llamaCppTool(_ tool: String) -> String? {
        let path = llamaCppBin.appendingPathComponent(tool).path
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    /// The `swiftlet` binary built with the tests (next to the test bundle), if there is one.
    public static var builtSwiftletBinary: String? {
        let bundle = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent()
        let candidates = [bundle.appendingPathComponent("swiftlet"),
                          bundle.deletingLastPathComponent().appendingPathComponent("swiftlet")].map(\.path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs a program and returns its standard output; a non-zero exit is an error carrying
    /// the end of its standard error. `environment` is added to this process's environment.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // read both pipes while the program runs, so neither can fill up and block it
        nonisolated(unsafe) var errorData = Data()
        let reading = DispatchGroup()
        DispatchQueue.global().async(group: reading) { errorData = err.fileHandleForReading.readDataToEndOfFile() }
        let output = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        reading.wait()
        guard p.terminationStatus == 0 else {
            let tail = String(decoding: errorData.suffix(2000), as: UTF8.self)
            throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey:
                "\(URL(fileURLWithPath: executable).lastPathComponent) exited with \(p.terminationStatus): \(tail)"])
        }
        return String(decoding: output, as: UTF8.self)
    }
}
