import Engine
import Foundation
import Logging
import Prometheus

/// The server's Prometheus metrics (`GET /metrics`).
///
/// Besides Swiftlet's own `swiftlet_*` names, the metrics of the Gateway API Inference
/// Extension's model-server protocol, under the vLLM names its endpoint picker reads by default,
/// so an inference gateway can route to Swiftlet replicas without configuration:
/// `vllm:num_requests_waiting`, `vllm:num_requests_running`, `vllm:kv_cache_usage_perc` (gauges),
/// `vllm:lora_requests_info` (gauge: the last time the adapter set changed, adapters in labels)
/// and `vllm:cache_config_info` (gauge 1 with `block_size` and `num_gpu_blocks` labels).
public final class ServerMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()

    let promptTokens: Counter
    let cachedPromptTokens: Counter
    let generated: Counter
    let ttft: DurationHistogram
    let itl: DurationHistogram
    let requestDuration: DurationHistogram
    let running: Gauge
    let waiting: Gauge
    let blocksUsed: Gauge
    let blocksFree: Gauge
    let blocksTotal: Gauge
    let blocksCached: Gauge
    let prefixQueries: Gauge
    let prefixHits: Gauge
    let prefixHitRate: Gauge
    let modelLoaded: Gauge
    // model-server protocol (vLLM names)
    let protocolWaiting: Gauge
    let protocolRunning: Gauge
    let protocolKVUsage: Gauge
    let protocolPrefixQueries: Counter
    let protocolPrefixHits: Counter
    let draftTokens: Counter
    let acceptedDraftTokens: Counter

    public init() {
        let r = registry
        promptTokens = r.makeCounter(name: "swiftlet_prompt_tokens_total", help: "Prompt tokens of finished sequences.")
        cachedPromptTokens = r.makeCounter(name: "swiftlet_prompt_tokens_cached_total",
                                           help: "Prompt tokens served from the prefix cache.")
        generated = r.makeCounter(name: "swiftlet_generation_tokens_total", help: "Generated tokens.")
        let latencyBuckets: [Duration] = [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                          .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                          .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30)]
        ttft = r.makeDurationHistogram(name: "swiftlet_time_to_first_token_seconds", buckets: latencyBuckets,
                                       help: "From request arrival to the first generated token.")
        itl = r.makeDurationHistogram(name: "swiftlet_inter_token_latency_seconds", buckets: latencyBuckets,
                                      help: "Between consecutive tokens of one sequence.")
        requestDuration = r.makeDurationHistogram(name: "swiftlet_request_duration_seconds", buckets: latencyBuckets,
                                                  help: "Whole request, arrival to last byte.")
        running = r.makeGauge(name: "swiftlet_running_sequences", help: "Sequences in the running batch.")
        waiting = r.makeGauge(name: "swiftlet_waiting_sequences", help: "Sequences queued for admission.")
        blocksUsed = r.makeGauge(name: "swiftlet_kv_blocks_used", help: "KV cache blocks held by sequences.")
        blocksFree = r.makeGauge(name: "swiftlet_kv_blocks_free",
                                 help: "KV cache blocks available (free or evictable prefix-cache blocks).")
        blocksTotal = r.makeGauge(name: "swiftlet_kv_blocks_total", help: "KV cache blocks in the pool.")
        blocksCached = r.makeGauge(name: "swiftlet_kv_blocks_cached", help: "Blocks registered in the prefix cache.")
        prefixQueries = r.makeGauge(name: "swiftlet_prefix_cache_queried_tokens",
                                    help: "Prompt tokens looked up in the prefix cache (since start).")
        prefixHits = r.makeGauge(name: "swiftlet_prefix_cache_hit_tokens",
                                 help: "Prompt tokens found in the prefix cache (since start).")
        prefixHitRate = r.makeGauge(name: "swiftlet_prefix_cache_hit_rate", help: "Hit tokens / queried tokens.")
        modelLoaded = r.makeGauge(name: "swiftlet_model_loaded", help: "1 once the model is loaded.")
        protocolWaiting = r.makeGauge(name: "vllm:num_requests_waiting",
                                      help: "Sequences queued for admission (as swiftlet_waiting_sequences).")
        protocolRunning = r.makeGauge(name: "vllm:num_requests_running",
                                      help: "Sequences in the running batch (as swiftlet_running_sequences).")
        protocolKVUsage = r.makeGauge(name: "vllm:kv_cache_usage_perc",
                                      help: "Fraction of KV cache blocks held by sequences, 0 to 1.")
        protocolPrefixQueries = r.makeCounter(name: "vllm:prefix_cache_queries_total",
                                              help: "Prompt tokens of finished sequences looked up in the prefix cache.")
        protocolPrefixHits = r.makeCounter(name: "vllm:prefix_cache_hits_total",
                                           help: "Prompt tokens of finished sequences served from the prefix cache.")
        draftTokens = r.makeCounter(name: "swiftlet_draft_tokens_total",
                                    help: "Tokens drafted by speculative decoding (prompt lookup) and verified.")
        acceptedDraftTokens = r.makeCounter(name: "swiftlet_draft_tokens_accepted_total",
                                            help: "Drafted tokens the model accepted: decode steps saved.")
    }

    public func request(endpoint: String, status: Int) {
        registry.makeCounter(name: "swiftlet_requests_total",
                             labels: [("endpoint", endpoint), ("status", String(status))],
                             help: "HTTP requests by endpoint and status.").increment()
    }

    func requestFinished(_ duration: Duration) { requestDuration.record(duration) }
    func timeToFirstToken(_ d: Duration) { ttft.record(d) }
    func interTokenLatency(_ d: Duration) { itl.record(d) }
    func generatedTokens(_ n: Int) { generated.increment(by: Int64(n)) }

    func drafts(_ timings: GenerationTimings) {
        draftTokens.increment(by: Int64(timings.draftTokens))
        acceptedDraftTokens.increment(by: Int64(timings.acceptedDraftTokens))
    }

    func sequenceFinished(reason: FinishReason, promptTokens n: Int, cachedTokens: Int) {
        promptTokens.increment(by: Int64(n))
        cachedPromptTokens.increment(by: Int64(cachedTokens))
        protocolPrefixQueries.increment(by: Int64(n))
        protocolPrefixHits.increment(by: Int64(cachedTokens))
        registry.makeCounter(name: "swiftlet_sequences_finished_total", labels: [("reason", reason.rawValue)],
                             help: "Finished sequences by finish reason.").increment()
    }

    func updateScheduler(_ s: Generator.Snapshot) {
        running.set(Double(s.running))
        waiting.set(Double(s.waiting))
        blocksUsed.set(Double(s.blocksUsed))
        blocksFree.set(Double(s.blocksFree))
        blocksTotal.set(Double(s.blocksTotal))
        blocksCached.set(Double(s.blocksCached))
        prefixQueries.set(Double(s.prefixQueryTokens))
        prefixHits.set(Double(s.prefixHitTokens))
        prefixHitRate.set(s.prefixQueryTokens > 0 ? Double(s.prefixHitTokens) / Double(s.prefixQueryTokens) : 0)
        protocolWaiting.set(Double(s.waiting))
        protocolRunning.set(Double(s.running))
        // recurrent models have no block pool: nothing to fill
        protocolKVUsage.set(s.blocksTotal > 0 ? Double(s.blocksUsed) / Double(s.blocksTotal) : 0)
        if let disk = s.promptCache {
            for (name, value, help) in [
                ("swiftlet_prompt_cache_hit_tokens", disk.hitTokens, "Prompt tokens read from the disk prompt cache instead of computed."),
                ("swiftlet_prompt_cache_read_bytes", disk.bytesRead, "Bytes read from the disk prompt cache."),
                ("swiftlet_prompt_cache_written_bytes", disk.bytesWritten, "Bytes written to the disk prompt cache."),
                ("swiftlet_prompt_cache_rejected_files", disk.rejectedFiles, "Disk prompt cache files refused (corrupt or another model) and deleted."),
                ("swiftlet_prompt_cache_files", disk.files, "Files in the disk prompt cache."),
                ("swiftlet_prompt_cache_bytes", disk.bytes, "Bytes in the disk prompt cache."),
            ] {
                registry.makeGauge(name: name, help: help).set(Double(value))
            }
        }
    }

    func setModelLoaded(_ loaded: Bool) { modelLoaded.set(Double(loaded ? 1 : 0)) }

    /// The loaded engine's fixed facts: its KV cache layout (`vllm:cache_config_info`, which the
    /// endpoint picker's prefix-cache scorer reads) and its LoRA adapters: none, and none can be
    /// loaded (`max_lora` 0), stamped with the time the set was settled.
    func engineLoaded(_ engine: Generator, at time: Date = Date()) {
        setModelLoaded(true)
        if engine.blockCount > 0 {
            registry.makeGauge(name: "vllm:cache_config_info",
                               labels: [("block_size", String(engine.configuration.blockSize)),
                                        ("num_gpu_blocks", String(engine.blockCount))],
                               help: "KV cache configuration in the labels; the value is 1.").set(1.0)
        }
        registry.makeGauge(name: "vllm:lora_requests_info",
                           labels: [("max_lora", "0"), ("running_lora_adapters", ""), ("waiting_lora_adapters", "")],
                           help: "LoRA adapters in the labels; the value is the time they last changed (Unix seconds).")
            .set(time.timeIntervalSince1970)
    }

    public func render() -> String { registry.emitToString() }
}

/// The generator's events as metrics and log lines.
struct ServerObserver: GeneratorObserver {
    let metrics: ServerMetrics
    let logger: Logger
    /// The scheduler gauges describe one engine: the first model's.
    var observesScheduler = true

    func firstToken(after waiting: Duration) { metrics.timeToFirstToken(waiting) }
    func nextToken(after interval: Duration) { metrics.interTokenLatency(interval) }
    func stepFinished(_ snapshot: Generator.Snapshot) { if observesScheduler { metrics.updateScheduler(snapshot) } }

    func forwardPassFailed(_ error: any Error, sequences: Int) {
        logger.error("forward pass failed", metadata: ["error": "\(error)", "sequences": "\(sequences)"])
    }

    func sequenceFinished(_ r: SequenceReport) {
        metrics.generatedTokens(r.usage.completionTokens)
        metrics.drafts(r.usage.timings)
        metrics.sequenceFinished(reason: r.reason, promptTokens: r.usage.promptTokens, cachedTokens: r.usage.cachedTokens)
        logger.info("sequence finished", metadata: [
            "request": "\(r.requestID)", "index": "\(r.index)", "reason": "\(r.reason.rawValue)",
            "prompt_tokens": "\(r.usage.promptTokens)", "cached_tokens": "\(r.usage.cachedTokens)",
            "completion_tokens": "\(r.usage.completionTokens)", "preemptions": "\(r.preemptions)",
            "seconds": "\(String(format: "%.3f", r.duration.seconds))",
        ])
    }
}
