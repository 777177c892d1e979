import Engine
import Testing

/// `ByteCount`: SI units are powers of 1000, IEC units powers of 1024, for every option.
@Suite struct ByteCountTests {
    func bytes(_ text: String) throws -> Int { try ByteCount.parse(text, option: "--mem-budget") }

    @Test(arguments: [
        ("4096", 4096), ("0", 0), ("12B", 12), ("12 b", 12),
        ("2K", 2_000), ("2KB", 2_000), ("2kb", 2_000), ("2KiB", 2_048), ("2kib", 2_048),
        ("3M", 3_000_000), ("3MB", 3_000_000), ("3 mb", 3_000_000), ("3MiB", 3 << 20), ("3 MiB", 3 << 20),
        ("5G", 5_000_000_000), ("5GB", 5_000_000_000), ("5GiB", 5 << 30), ("5gIb", 5 << 30),
        ("7T", 7_000_000_000_000), ("7TB", 7_000_000_000_000), ("7TiB", 7 << 40),
        ("1.5GiB", 3 << 29), ("1.5GB", 1_500_000_000), ("0.5K", 500), ("  32MB  ", 32_000_000),
        ("1.1GB", 1_100_000_000), ("0.3KiB", 307), ("2.5", 2), ("0.000001MB", 1),
    ])
    func readsEveryUnit(_ text: String, _ expected: Int) throws {
        #expect(try bytes(text) == expected)
    }

    @Test(arguments: ["", " ", "lots", "MB", "-1M", "+1M", "1.", ".5M", "1.2.3M", "1e6", "12XB", "1 M B x", "1MiBs", "1_000", "0x10"])
    func rejectsBadText(_ text: String) throws {
        let error = try #require(throws: ByteCount.ParseError.self) { try bytes(text) }
        #expect(error.kind == .malformed)
        #expect(error.option == "--mem-budget" && error.text == text)
        #expect(error.description.hasPrefix("--mem-budget: cannot read '\(text)': "))
    }

    @Test func namesTheUnknownUnit() throws {
        let error = try #require(throws: ByteCount.ParseError.self) { try bytes("12XB") }
        #expect(error.description.contains("unknown unit 'xb'"))
    }

    @Test(arguments: ["9223372036854775808", "99999999999999999999", "8388608TiB", "9223372036854775807K", "9223372.036854775808TB"])
    func rejectsOverflow(_ text: String) throws {
        let error = try #require(throws: ByteCount.ParseError.self) { try bytes(text) }
        #expect(error.kind == .tooLarge)
    }

    @Test func largestValues() throws {
        #expect(try bytes("9223372036854775807") == Int.max)
        #expect(try bytes("8388607TiB") == 8_388_607 << 40)
        #expect(try bytes("9223372.036854775807TB") == Int.max)
    }
}
