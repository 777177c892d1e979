import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
@testable import Server
import Testing

/// `--cors-origin`: CORS headers only for the origins named, none without the flag.
@Suite struct CORSTests {
    func app(origins: [String], apiKey: String? = nil) -> some ApplicationProtocol {
        var config = ServerConfiguration()
        config.corsOrigins = origins
        config.apiKey = apiKey
        let server = OpenAIServer(configuration: config, state: ServerState(), metrics: ServerMetrics(), logger: Logger(label: "test"))
        return Application(router: server.makeRouter())
    }

    @Test func noHeadersWithoutTheFlag() async throws {
        try await app(origins: []).test(.router) { client in
            try await client.execute(uri: "/health", method: .get, headers: [.origin: "http://localhost:3000"]) { r in
                #expect(r.status == .ok)
                #expect(r.headers[.accessControlAllowOrigin] == nil)
            }
            try await client.execute(uri: "/v1/chat/completions", method: .options,
                                     headers: [.origin: "http://localhost:3000", .accessControlRequestMethod: "POST"]) { r in
                #expect(r.headers[.accessControlAllowOrigin] == nil)
                #expect(r.headers[.accessControlAllowMethods] == nil)
            }
        }
    }

    /// A listed origin gets its preflight answered (before the API key is checked: browsers send
    /// none there) and its responses marked readable; any other origin gets no CORS headers.
    @Test func onlyListedOriginsGetHeaders() async throws {
        let origins = try ServerConfiguration.corsOrigins(parsing: ["http://localhost:3000, https://app.example", "https://b.example:8443"])
        #expect(origins == ["http://localhost:3000", "https://app.example", "https://b.example:8443"])
        try await app(origins: origins, apiKey: "k").test(.router) { client in
            try await client.execute(uri: "/v1/chat/completions", method: .options,
                                     headers: [.origin: "https://app.example", .accessControlRequestMethod: "POST",
                                               .accessControlRequestHeaders: "authorization, content-type"]) { r in
                #expect(r.status == .noContent)
                #expect(r.headers[.accessControlAllowOrigin] == "https://app.example")
                #expect(r.headers[.accessControlAllowMethods]?.contains("POST") == true)
                #expect(r.headers[.accessControlAllowHeaders]?.lowercased().contains("authorization") == true)
                #expect(r.headers[.vary] == "Origin")
            }
            try await client.execute(uri: "/health", method: .get, headers: [.origin: "http://localhost:3000"]) { r in
                #expect(r.headers[.accessControlAllowOrigin] == "http://localhost:3000")
            }
            // the key is still required on the API itself
            try await client.execute(uri: "/v1/models", method: .get, headers: [.origin: "http://localhost:3000"]) { r in
                #expect(r.status == .unauthorized)
                #expect(r.headers[.accessControlAllowOrigin] == "http://localhost:3000")
            }
            try await client.execute(uri: "/health", method: .get, headers: [.origin: "https://evil.example"]) { r in
                #expect(r.status == .ok)
                #expect(r.headers[.accessControlAllowOrigin] == nil)
            }
            try await client.execute(uri: "/v1/chat/completions", method: .options,
                                     headers: [.origin: "https://evil.example", .accessControlRequestMethod: "POST"]) { r in
                #expect(r.status.kind != .successful)
                #expect(r.headers[.accessControlAllowOrigin] == nil)
            }
        }
    }

    @Test func wildcardAllowsAnyOrigin() async throws {
        try await app(origins: ["*"]).test(.router) { client in
            try await client.execute(uri: "/health", method: .get, headers: [.origin: "https://anything.example"]) { r in
                #expect(r.headers[.accessControlAllowOrigin] == "*")
            }
        }
    }

    @Test func badOriginsAreRefused() {
        for bad in ["localhost:3000", "http://", "https://app.example/", "https://app.example/path", "", "http://a b"] {
            #expect(throws: ServerConfigurationError.self, "\(bad)") { try ServerConfiguration.corsOrigins(parsing: [bad]) }
        }
    }
}
