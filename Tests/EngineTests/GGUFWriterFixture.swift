import GGUF

enum GGUFWriterFixture {
    static func make() -> GGUFWriter {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("test.list", .array(.string, [.string("a"), .string("bc")]))
        w.set("test.float", .float32(0.25))
        w.addTensor(name: "w", shape: [3, 2], floats: [0, 1, 2, 3, 4, 5])
        w.addTensor(name: "q", type: .q8_0, shape: [32, 2], data: [UInt8](repeating: 0, count: 68))
        return w
    }
}
