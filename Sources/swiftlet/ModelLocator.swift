import ArgumentParser
import Foundation

/// Turns a command-line MODEL argument (a path or a cache name) into a file path.
enum ModelLocator {
    static func resolve(_ model: String) throws -> String {
        if FileManager.default.fileExists(atPath: model) { return model }
        throw ValidationError("no model file at '\(model)'")
    }
}
