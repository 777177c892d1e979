import GGUF

extension Olmo2.Variant {
    /// EXAONE 4: OLMo 2's post-norm layers with q/k RMSNorm per head and Llama 3 RoPE
    /// frequency factors. As llama.cpp reads it, only the 64-layer (32B) model has
    /// sliding-window layers — three of every four (`attention.sliding_window_pattern`),
    /// window 4096 unless `attention.sliding_window` says otherwise — and then only those
    /// layers rotate q and k.
    public static let exaone4 = Olmo2.Variant(
        queryKeyNormPerHead: true,
        slidingWindows: { file, config in
            guard config.blockCount == 64 else { return Array(repeating: nil, count: config.blockCount) }
            let window = file.arch("attention.sliding_window")?.int ?? 4096
            guard window > 0 else {
                throw ModelError.inconsistentMetadata("\(config.architecture).attention.sliding_window is \(window)")
            }
            if let values = file.arch("attention.sliding_window_pattern")?.array {
                guard values.count >= config.blockCount else {
                    throw ModelError.inconsistentMetadata(
                        "\(config.architecture).attention.sliding_window_pattern has \(values.count) entries for \(config.blockCount) layers")
                }
                return values.prefix(config.blockCount).map { ($0.int ?? 0) != 0 ? window : nil }
            }
            let period = file.arch("attention.sliding_window_pattern")?.int ?? 4
            return (0..<config.blockCount).map { period == 0 || $0 % period < period - 1 ? window : nil }
        },
        ropeOnlyInWindowLayers: true,
        ropeFrequencyFactors: true,
        outputProjectionRequired: false)
}
