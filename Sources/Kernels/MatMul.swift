/// y[t][r] = dot(W[r], x[t]) for every token t and output row r.
/// `input` holds `tokens` rows of `weight.columns` floats; `output` holds `tokens` rows of `weight.rows`.
public func matmul(_ weight: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                   output: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    let columns = weight.columns, rows = weight.rows
    nonisolated(unsafe) let x = input, y = output
    pool.parallelChunks(rows, granularity: 16) { range in
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: columns)
        defer { scratch.deallocate() }
        for r in range {
            dequantizeRow(weight.type, weight.row(r), into: scratch, count: columns)
            for t in 0..<tokens {
                var sum: Float = 0
                let xt = x + t * columns
                for i in 0..<columns { sum += scratch[i] * xt[i] }
                y[t * rows + r] = sum
            }
        }
    }
}
