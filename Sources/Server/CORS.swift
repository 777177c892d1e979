import Foundation
import HTTPTypes
import Hummingbird

/// `--cors-origin`: CORS headers for the listed origins only (`*`: any origin). Without the
/// flag the middleware is not installed, so no response carries CORS headers and browsers on
/// other origins cannot read the API.
struct AllowedOriginsCORS: RouterMiddleware {
    typealias Context = ServerRequestContext
    let origins: Set<String>
    let cors: CORSMiddleware<ServerRequestContext>

    /// The headers browser clients send: the OpenAI and Anthropic SDKs' own, and X-Session-ID for affinity.
    static let allowedHeaders: [HTTPField.Name] = [.accept, .authorization, .contentType, .origin]
        + ["x-api-key", "x-session-id", "openai-organization", "openai-project", "anthropic-version", "anthropic-beta",
           "anthropic-dangerous-direct-browser-access", "x-stainless-arch", "x-stainless-lang", "x-stainless-os",
           "x-stainless-package-version", "x-stainless-runtime", "x-stainless-runtime-version",
           "x-stainless-retry-count", "x-stainless-timeout", "x-stainless-helper-method"].compactMap { HTTPField.Name($0) }

    init(origins: [String]) {
        self.origins = Set(origins)
        cors = CORSMiddleware(allowOrigin: origins.contains("*") ? .all : .originBased,
                              allowHeaders: Self.allowedHeaders, allowMethods: [.get, .post, .options],
                              exposedHeaders: ["Retry-After"], maxAge: .seconds(600))
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        // A request from an origin not on the list gets no CORS headers (and a preflight no 2xx):
        // the browser keeps the response from the page.
        guard let origin = request.headers[.origin], origins.contains("*") || origins.contains(origin) else {
            return try await next(request, context)
        }
        return try await cors.handle(request, context: context, next: next)
    }
}

extension ServerConfiguration {
    /// The origins of `--cors-origin` values, each one origin or a comma-separated list:
    /// `*`, or `scheme://host[:port]` as a browser sends it in `Origin` (no path, no trailing slash).
    public static func corsOrigins(parsing values: [String]) throws -> [String] {
        var origins: [String] = []
        for value in values {
            for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                let origin = part.trimmingCharacters(in: .whitespaces)
                if origin == "*" { origins.append(origin); continue }
                guard let schemeEnd = origin.range(of: "://"), !origin[..<schemeEnd.lowerBound].isEmpty,
                      case let host = origin[schemeEnd.upperBound...], !host.isEmpty,
                      !host.contains("/"), !origin.contains(where: \.isWhitespace)
                else {
                    throw ServerConfigurationError("--cors-origin: '\(origin)' is not an origin (scheme://host[:port], or *)")
                }
                origins.append(origin)
            }
        }
        return origins
    }
}
