import ArgumentParser
import Engine
import Foundation

/// Turns a command-line MODEL argument (a path, a cached file or a catalog name) into a
/// file path, pulling catalog models on first use.
enum ModelLocator {
    static func resolve(_ model: String, pull: Bool = true) throws -> String {
        try ModelCatalog.resolve(model, pullIfMissing: pull) { message in
            FileHandle.standardError.write(Data((message + "\n").utf8))
        }
    }
}

/// Writes a line to standard error (progress and diagnostics stay off stdout).
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
