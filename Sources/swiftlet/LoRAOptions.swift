import ArgumentParser
import Engine

/// `--lora FILE` and `--lora-scaled FILE SCALE` (llama.cpp's flags, repeatable), shared by
/// `run`, `generate`, `perplexity`, `bench` and `serve`. Adapter ids (the server's `lora`
/// field and `/lora-adapters`) count the `--lora` files first, then the `--lora-scaled` ones,
/// each in the order given.
struct LoRAOptions: ParsableArguments {
    @Option(name: .customLong("lora"), help: ArgumentHelp("Apply the LoRA adapter in FILE (GGUF, llama.cpp's format) at scale 1 (repeatable).",
                                                          valueName: "FILE"))
    var plain: [String] = []
    @Option(name: .customLong("lora-scaled"), parsing: .upToNextOption,
            help: ArgumentHelp("Apply the LoRA adapter in FILE at SCALE (repeatable).", valueName: "FILE SCALE"))
    var scaled: [String] = []

    func validate() throws { _ = try files() }

    /// The adapters in id order, each file checked to be readable.
    func files() throws -> [LoRAFile] {
        guard scaled.count % 2 == 0 else {
            throw ValidationError("--lora-scaled takes a file and a scale: '--lora-scaled FILE SCALE'")
        }
        var files = plain.map { LoRAFile(path: $0) }
        for i in stride(from: 0, to: scaled.count, by: 2) {
            guard let scale = Float(scaled[i + 1]), scale.isFinite else {
                throw ValidationError("--lora-scaled \(scaled[i]): '\(scaled[i + 1])' is not a number")
            }
            files.append(LoRAFile(path: scaled[i], scale: scale))
        }
        for file in files { try requireReadableFile(file.path, what: "LoRA adapter") }
        return files
    }
}
