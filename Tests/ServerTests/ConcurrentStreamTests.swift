import Engine
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
@testable import Server
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The server and the engine under concurrent streams, half of whose clients hang up
/// mid-stream: the finished streams end with [DONE], and once the engine is idle no sequence
/// and no KV block is left behind. `scripts/sanitize` runs this under ThreadSanitizer.
@Suite(.serialized) struct ConcurrentStreamTests {
    static let modelPresent = FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)

    /// One HTTP/1.1 exchange on a plain socket, on its own thread (blocking reads must not hold
    /// the concurrency pool the server's handlers run on). With `hangUpAfter`, the socket is
    /// closed as soon as that many bytes of the response arrived; otherwise it is read to the end.
    static func exchange(port: Int, request: String, hangUpAfter: Int?) async -> String {
        await withCheckedContinuation { continuation in
            let thread = Thread {
                continuation.resume(returning: blockingExchange(port: port, request: request, hangUpAfter: hangUpAfter))
            }
            thread.start()
        }
    }

    static func blockingExchange(port: Int, request: String, hangUpAfter: Int?) -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return "socket failed" }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return "connect failed" }
        let bytes = Array(request.utf8)
        guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else { return "send failed" }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            received += buffer[..<n]
            if let hangUpAfter, received.count >= hangUpAfter { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    @Test(.enabled(if: modelPresent, "needs SmolLM2 in the model cache (swiftlet pull smollm2)"))
    func streamsAndDisconnectsLeaveNothingBehind() async throws {
        let metrics = ServerMetrics()
        let server = OpenAIServer(configuration: ServerConfiguration(), state: ServerState(), metrics: metrics,
                                  logger: Logger(label: "test"))
        let model = try LoadedModel(path: TestSupport.smolLM2Path)
        let engine = try Generator(model: model, configuration: .init(contextLength: 256, parallel: 4, maxQueue: 16),
                                   observer: ServerObserver(metrics: metrics, logger: Logger(label: "test")))
        server.state.engine = engine
        metrics.engineLoaded(engine)
        let app = Application(router: server.makeRouter(), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try #require(client.port)
            let results = await withTaskGroup(of: (Bool, String).self) { group in
                for i in 0..<6 {
                    let body = #"{"model":"\#(model.name)","stream":true,"max_tokens":\#(6 + i),"ignore_eos":true,"seed":\#(i),"#
                        + #""messages":[{"role":"user","content":"Count to \#(i + 3), please."}]}"#
                    let request = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
                    let hangsUp = i % 2 == 1
                    group.addTask {
                        // a client that hangs up does so once its stream has started (headers and a first chunk)
                        (hangsUp, await Self.exchange(port: port, request: request, hangUpAfter: hangsUp ? 400 : nil))
                    }
                }
                var all: [(Bool, String)] = []
                for await r in group { all.append(r) }
                return all
            }
            for (hungUp, response) in results {
                #expect(response.hasPrefix("HTTP/1.1 200"), "\(response.prefix(200))")
                if !hungUp { #expect(response.contains("data: [DONE]"), "\(response.suffix(300))") }
            }
            // cancelled sequences are dropped at the engine's next step
            let deadline = ContinuousClock.now + .seconds(60)
            while engine.outstandingSequences > 0 || engine.currentSnapshot.running > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(engine.outstandingSequences == 0)
            #expect(engine.currentSnapshot.running == 0)
            #expect(engine.currentSnapshot.blocksUsed == 0, "KV blocks still held by finished or cancelled sequences")
        }
        await engine.shutdown()
    }
}
