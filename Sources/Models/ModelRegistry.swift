import GGUF

/// Maps `general.architecture` to the code that builds that model from a GGUF file.
public enum ModelRegistry {
    public typealias Builder = @Sendable (GGUFFile, ModelConfig) throws -> any LanguageModel

    static let builders: [String: Builder] = [:]

    public static var supported: [String] { builders.keys.sorted() }

    public static func load(_ file: GGUFFile) throws -> any LanguageModel {
        let config = try ModelConfig(file: file)
        guard let build = builders[config.architecture] else {
            throw ModelError.unsupportedArchitecture(config.architecture)
        }
        return try build(file, config)
    }
}

/// A model turns a batch of token sequences into next-token logits.
public protocol LanguageModel: AnyObject, Sendable {
    var config: ModelConfig { get }
}
