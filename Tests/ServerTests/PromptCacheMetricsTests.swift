import Engine
@testable import Server
import Testing

/// `--prompt-cache` on `/metrics`: what the disk cache served, wrote, refused and holds.
@Suite struct PromptCacheMetricsTests {
    @Test func diskCacheCountersAreExported() {
        let metrics = ServerMetrics()
        var snapshot = Generator.Snapshot()
        metrics.updateScheduler(snapshot)
        #expect(PrometheusText(metrics.render()).value("swiftlet_prompt_cache_hit_tokens") == nil, "no cache, no series")
        var disk = PromptDiskCache.Statistics()
        disk.hitTokens = 2048
        disk.bytesRead = 3_000_000
        disk.bytesWritten = 5_000_000
        disk.rejectedFiles = 2
        disk.files = 14
        disk.bytes = 5_100_000
        snapshot.promptCache = disk
        metrics.updateScheduler(snapshot)
        let text = PrometheusText(metrics.render())
        #expect(text.value("swiftlet_prompt_cache_hit_tokens") == 2048)
        #expect(text.value("swiftlet_prompt_cache_read_bytes") == 3_000_000)
        #expect(text.value("swiftlet_prompt_cache_written_bytes") == 5_000_000)
        #expect(text.value("swiftlet_prompt_cache_rejected_files") == 2)
        #expect(text.value("swiftlet_prompt_cache_files") == 14)
        #expect(text.value("swiftlet_prompt_cache_bytes") == 5_100_000)
    }
}
