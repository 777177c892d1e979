import Foundation

/// A MODEL argument that names something to download rather than a local file:
/// `hf.co/USER/REPO[:QUANT]`, `huggingface.co/USER/REPO[:QUANT]`, `USER/REPO[:QUANT]` (the forms
/// `ollama pull` and `llama-server -hf` take) or an `https://…/FILE.gguf` link.
public enum RemoteModel: Equatable, Sendable, CustomStringConvertible {
    case hub(repository: String, quant: String?)
    case url(URL)

    /// nil when `text` has none of the forms above (a prompt, a typo, a local name).
    public init?(parsing text: String) {
        if text.hasPrefix("https://") || text.hasPrefix("http://") {
            guard let url = URL(string: text), let host = url.host, !host.isEmpty else { return nil }
            // https://huggingface.co/USER/REPO is the repository page: treat it as the repository.
            let parts = url.path.split(separator: "/").map(String.init)
            if Self.hubHosts.contains(host.lowercased()), parts.count == 2,
               let hub = RemoteModel(repositoryText: parts.joined(separator: "/")) {
                self = hub
                return
            }
            guard url.path.lowercased().hasSuffix(".gguf") else { return nil }
            self = .url(url)
            return
        }
        var rest = Substring(text)
        for host in Self.hubHosts where rest.lowercased().hasPrefix(host + "/") {
            rest = rest.dropFirst(host.count + 1)
            break
        }
        guard let hub = RemoteModel(repositoryText: String(rest)) else { return nil }
        self = hub
    }

    private init?(repositoryText text: String) {
        let pieces = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let repository = pieces[0]
        let names = repository.split(separator: "/", omittingEmptySubsequences: false)
        // The Hub's repository ids: OWNER/NAME of letters, digits, '-', '_' and '.'; DIR/FILE.gguf is a path.
        guard names.count == 2, !repository.lowercased().hasSuffix(".gguf"), !repository.contains(".."), names.allSatisfy({ !$0.isEmpty && $0.count <= 96 && $0.allSatisfy(Self.isNameCharacter) }),
              names[0].first?.isLetter == true || names[0].first?.isNumber == true else { return nil }
        var quant: String?
        if pieces.count == 2 {
            guard !pieces[1].isEmpty, pieces[1].allSatisfy(Self.isNameCharacter) else { return nil }
            quant = pieces[1].uppercased()
        }
        self = .hub(repository: repository, quant: quant)
    }

    static let hubHosts = ["hf.co", "huggingface.co"]

    private static func isNameCharacter(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == ".")
    }

    public var description: String {
        switch self {
        case .hub(let repository, let quant): "hf.co/\(repository)" + (quant.map { ":\($0)" } ?? "")
        case .url(let url): url.absoluteString
        }
    }
}

/// A file of a Hub repository, as the model-info API lists it (`siblings` with `blobs=true`).
public struct HubFile: Sendable, Equatable {
    public let path: String
    public let size: Int?
    /// The LFS object's sha256 (`lfs.sha256`); nil for files kept in git itself.
    public let sha256: String?

    public init(path: String, size: Int?, sha256: String?) {
        self.path = path
        self.size = size
        self.sha256 = sha256
    }
}

/// Picks the GGUF file (or the parts of a split GGUF) for a quantization tag.
///
/// The label of a file is the last quantization name in its path (`…-Q4_K_M.gguf`,
/// `Q8_0/…-00001-of-00002.gguf`, `…-UD-Q4_K_XL.gguf`). A label equal to the tag wins. Otherwise
/// the closest one is taken: the label whose bits per weight are nearest to the tag's (llama.cpp's
/// nominal sizes; an unknown label such as Q4_K_XL counts as its digit + 0.5), the larger one on
/// a tie, so a missing Q4_K_M becomes Q4_K_S or Q5_K_S rather than Q2_K. Vision projectors
/// (`mmproj`) are never picked.
public enum QuantSelection {
    public static let defaultQuant = "Q4_K_M"

    static let bitsPerWeight: [String: Double] = [
        "IQ1_S": 1.56, "IQ1_M": 1.75, "TQ1_0": 1.69, "IQ2_XXS": 2.06, "TQ2_0": 2.06, "IQ2_XS": 2.31, "IQ2_S": 2.5,
        "IQ2_M": 2.7, "Q2_K_S": 2.97, "IQ3_XXS": 3.06, "IQ3_XS": 3.3, "Q2_K": 3.35, "IQ3_S": 3.44, "Q3_K_S": 3.5,
        "IQ3_M": 3.66, "Q3_K_M": 3.91, "IQ4_XS": 4.25, "MXFP4": 4.25, "Q3_K_L": 4.27, "Q4_0": 4.5, "IQ4_NL": 4.5,
        "Q4_K_S": 4.58, "Q4_K_M": 4.89, "Q4_1": 5.0, "Q5_0": 5.5, "Q5_K_S": 5.54, "Q5_K_M": 5.7, "Q5_1": 6.0,
        "Q6_K": 6.56, "Q8_0": 8.5, "F16": 16, "BF16": 16, "F32": 32,
    ]

    /// One GGUF model in the repository: a single file, or the parts of a split file in order.
    public struct Candidate: Sendable, Equatable {
        public let label: String?
        public let files: [HubFile]
    }

    public struct Choice: Sendable, Equatable {
        public let candidate: Candidate
        /// Whether the label is the tag asked for (false: the closest one stood in for it).
        public let exact: Bool
        /// Every label the repository offers, for messages.
        public let available: [String]
    }

    public enum SelectionError: Error, CustomStringConvertible, Equatable {
        case noGGUF(repository: String)
        case incompleteSplit(first: String, missing: [Int])

        public var description: String {
            switch self {
            case .noGGUF(let r): "the repository \(r) holds no .gguf model file"
            case .incompleteSplit(let first, let missing):
                "the split model \(first) is incomplete: part\(missing.count == 1 ? "" : "s") \(missing.map(String.init).joined(separator: ", ")) missing"
            }
        }
    }

    /// The label of a GGUF path, uppercased (nil when its name carries none).
    public static func label(of path: String) -> String? {
        let stem = splitPart(of: path).map(\.base) ?? path
        let range = NSRange(stem.startIndex..., in: stem)
        guard let match = labelPattern.matches(in: stem, range: range).last,
              let r = Range(match.range(at: 1), in: stem) else { return nil }
        return stem[r].uppercased()
    }

    /// `…-00002-of-00005.gguf` → (the path without the part suffix, 2, 5).
    public static func splitPart(of path: String) -> (base: String, number: Int, count: Int)? {
        let range = NSRange(path.startIndex..., in: path)
        guard let match = splitPattern.firstMatch(in: path, range: range),
              let whole = Range(match.range, in: path), let n = Range(match.range(at: 1), in: path),
              let c = Range(match.range(at: 2), in: path),
              let number = Int(path[n]), let count = Int(path[c]), number >= 1, count >= 1 else { return nil }
        return (String(path[..<whole.lowerBound]) + ".gguf", number, count)
    }

    private static let labelPattern = try! NSRegularExpression(
        pattern: "(?<![A-Za-z0-9])(I?Q[0-9](?:_[A-Za-z0-9]+)*|TQ[0-9]_[0-9]|BF16|F16|F32|MXFP4)(?![A-Za-z0-9])",
        options: [.caseInsensitive])
    private static let splitPattern = try! NSRegularExpression(
        pattern: "-([0-9]{5})-of-([0-9]{5})\\.gguf$", options: [.caseInsensitive])

    static func bits(_ label: String) -> Double? {
        if let b = bitsPerWeight[label] { return b }
        let digits = label.drop { !$0.isNumber }.prefix { $0.isNumber }
        return Double(digits).map { $0 + 0.5 }
    }

    /// The repository's GGUF models, split parts grouped and checked for completeness.
    public static func candidates(in files: [HubFile]) throws -> [Candidate] {
        var groups: [String: [(Int, Int, HubFile)]] = [:]
        var order: [String] = []
        for file in files where file.path.lowercased().hasSuffix(".gguf")
            && !file.path.lowercased().contains("mmproj") {
            let part = splitPart(of: file.path)
            let key = part?.base ?? file.path
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append((part?.number ?? 1, part?.count ?? 1, file))
        }
        return try order.sorted().map { key in
            let parts = groups[key]!.sorted { $0.0 < $1.0 }
            let count = parts[0].1
            let present = Set(parts.map(\.0))
            let missing = (1...max(count, 1)).filter { !present.contains($0) }
            guard missing.isEmpty, parts.count == count else {
                throw SelectionError.incompleteSplit(first: parts[0].2.path, missing: missing)
            }
            return Candidate(label: label(of: key), files: parts.map(\.2))
        }
    }

    /// The model for `requested` (default Q4_K_M) among `files` of `repository`.
    public static func choose(_ requested: String?, from files: [HubFile], repository: String) throws -> Choice {
        let candidates = try candidates(in: files)
        guard !candidates.isEmpty else { throw SelectionError.noGGUF(repository: repository) }
        let tag = (requested ?? defaultQuant).uppercased()
        let available = Array(Set(candidates.compactMap(\.label))).sorted {
            (bits($0) ?? 0, $0) < (bits($1) ?? 0, $1)
        }
        if let exact = candidates.first(where: { $0.label == tag }) {
            return Choice(candidate: exact, exact: true, available: available)
        }
        let target = bits(tag) ?? bits(defaultQuant)!
        let labelled = candidates.filter { $0.label.flatMap(bits) != nil }
        guard let closest = labelled.min(by: { a, b in
            let da = abs(bits(a.label!)! - target), db = abs(bits(b.label!)! - target)
            return da != db ? da < db : bits(a.label!)! > bits(b.label!)!
        }) else {
            return Choice(candidate: candidates[0], exact: false, available: available)
        }
        return Choice(candidate: closest, exact: false, available: available)
    }
}
