import Engine
import Foundation
import Hummingbird
import JSON

/// LoRA adapters over HTTP, in llama-server's shapes: `GET /lora-adapters` lists the first
/// model's adapters (`id`, `path`, `scale`, `task_name`, `prompt_prefix`), `POST /lora-adapters`
/// (`[{"id", "scale"}]`) sets the scales of requests that do not name theirs (adapters left out
/// get 0), and a completion's `"lora": [{"id", "scale"}]` sets its own (again, the rest 0; an
/// empty list keeps the server's).
/// Requests with different adapter mixes run in the same batches.
extension OpenAIServer {
    func addLoRARoutes(to router: Router<ServerRequestContext>) {
        router.get("/lora-adapters") { _, _ in try listAdapters() }
        router.post("/lora-adapters") { request, _ in try await setAdapterScales(request) }
    }

    func listAdapters() throws -> Response {
        let engine = try loadedEngine()
        let scales = engine.adapterScales
        let entries: [JSONValue] = engine.model.adapters.enumerated().map { id, adapter in
            .object(["id": .number(JSONNumber(id)), "path": .string(adapter.path), "scale": .number(JSONNumber(scales[id])),
                     "task_name": .string(adapter.taskName), "prompt_prefix": .string(adapter.promptPrefix)])
        }
        return json(.array(entries))
    }

    func setAdapterScales(_ request: Request) async throws -> Response {
        let body: JSONValue
        do { body = try JSONValue(parsing: try await readBody(request)) } catch let error as APIError { throw error } catch {
            throw APIError(status: 400, message: "the request body is not valid JSON: \(error)")
        }
        let engine = try loadedEngine()
        let scales = try Self.loraScales(body, param: "body", adapters: engine.model.adapters.count)
        do { try engine.setAdapterScales(scales) } catch { throw APIError.invalid("body", error.description) }
        return json(.object(["success": .bool(true)]))
    }

    /// `[{"id", "scale"}, …]` as one scale per adapter (ids not listed: 0). An id the model has
    /// no adapter for, or a scale that is not a finite number, is a 400 naming the entry.
    static func loraScales(_ value: JSONValue, param: String, adapters: Int) throws -> [Float] {
        guard case .array(let entries) = value else {
            throw APIError.invalid(param, "'\(param)' must be an array of objects with 'id' and 'scale' fields")
        }
        var scales = [Float](repeating: 0, count: adapters)
        for (i, entry) in entries.enumerated() {
            let at = "\(param)[\(i)]"
            guard case .object = entry, let id = entry["id"]?.intValue else {
                throw APIError.invalid(at, "'\(at)' must be an object with an integer 'id' and a number 'scale'")
            }
            guard (0..<adapters).contains(id) else {
                throw APIError.invalid(at, "'\(at)': no LoRA adapter has id \(id) (this server has \(adapters))")
            }
            guard let scale = entry["scale"]?.doubleValue.map({ Float($0) }), scale.isFinite else {
                throw APIError.invalid(at, "'\(at).scale' must be a finite number")
            }
            scales[id] = scale
        }
        return scales
    }
}
