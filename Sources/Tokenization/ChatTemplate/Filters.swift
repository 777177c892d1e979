import Foundation
import JSON

extension Interpreter {
    // MARK: - Filters

    func applyFilter(_ name: String, _ value: Value, _ argExprs: [Argument], _ pos: SourcePos) throws -> Value {
        let args = try evalArgs(argExprs)
        return try at(pos) { try filter(name, value, args, pos) }
    }

    /// `attribute` arguments: `"a.b"` paths, integer parts index lists.
    private func attributePath(_ v: Value, _ path: Value) throws -> Value {
        if let n = path.intValue { return try getItem(v, .int(n)) }
        var current = v
        for part in path.str.split(separator: ".") {
            if let n = Int(part) { current = try getItem(current, .int(n)) } else { current = getAttribute(current, String(part)) }
        }
        return current
    }

    private func sortKey(_ v: Value, caseSensitive: Bool) -> Value {
        if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    private func sorted(_ items: [Value], caseSensitive: Bool, reverse: Bool, key: (Value) throws -> Value) throws -> [Value] {
        let keyed = try items.map { (try sortKey(key($0), caseSensitive: caseSensitive), $0) }
        var failure: ValueError? = nil
        let result = keyed.enumerated().sorted { a, b in
            guard let less = pyLess(a.element.0, b.element.0) else {
                failure = ValueError("'<' not supported between instances of '\(a.element.0.typeName)' and '\(b.element.0.typeName)'")
                return false
            }
            if less { return !reverse }
            if pyEqual(a.element.0, b.element.0) { return a.offset < b.offset }
            return reverse
        }
        if let failure { throw failure }
        return result.map { $0.element.1 }
    }

    private func filter(_ name: String, _ value: Value, _ args: Args, _ pos: SourcePos) throws -> Value {
        switch name {
        case "trim":
            return .string(pyStrip(value.str, chars: try args.string(0, "chars"), leading: true, trailing: true))
        case "length", "count":
            switch value {
            case .string(let s): return .int(s.unicodeScalars.count)
            case .array(let a): return .int(a.count)
            case .dict(let d): return .int(d.count)
            case .namespace(let ns): return .int(ns.attributes.count)
            case .undefined: return .int(0)
            default: throw ValueError("object of type '\(value.typeName)' has no len()")
            }
        case "tojson":
            // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)
            var indent: Int? = nil
            if let v = args.get(1, "indent"), !v.isNone {
                guard let n = v.intValue else { throw ValueError("tojson indent must be an integer") }
                indent = n
            }
            var format = JSONFormat(indent: indent)
            format.ensureASCII = args.bool(0, "ensure_ascii") ?? false
            format.sortKeys = args.bool(3, "sort_keys") ?? false
            if let v = args.get(2, "separators"), !v.isNone {
                guard case .array(let seps) = v, seps.count == 2, case .string(let item) = seps[0], case .string(let key) = seps[1] else {
                    throw ValueError("tojson separators must be a pair of strings")
                }
                format.itemSeparator = item
                format.keySeparator = key
            }
            return .string(try value.json().jsonString(format))
        case "string": return .string(value.str)
        case "upper": return .string(pyUpper(value.str))
        case "lower": return .string(pyLower(value.str))
        case "capitalize": return .string(pyCapitalize(value.str))
        case "title": return .string(jinjaTitle(value.str))
        case "default", "d":
            let fallback = args.get(0, "default_value") ?? .string("")
            let boolean = args.bool(1, "boolean") ?? false
            if value.isUndefined || (boolean && !value.truthy) { return fallback }
            return value
        case "join":
            let sep = args.get(0, "d")?.str ?? ""
            var items = try iterate(value)
            if let attr = args.get(1, "attribute") { items = try items.map { try attributePath($0, attr) } }
            return .string(items.map(\.str).joined(separator: sep))
        case "first":
            if case .dict(let d) = value { return d.keys.first ?? .undefined("first") }
            if case .generator(let g) = value { return g.next() ?? .undefined("first") }
            return try iterate(value).first ?? .undefined("first")
        case "last":
            if case .generator = value { throw ValueError("'generator' object is not reversible") }
            return try iterate(value).last ?? .undefined("last")
        case "list": return .array(try iterate(value))
        case "items":
            switch value {
            case .dict(let d): return .generator(PyGenerator(d.pairs.map { .array([$0.0, $0.1]) }))
            case .namespace(let ns): return .generator(PyGenerator(ns.attributes.pairs.map { .array([$0.0, $0.1]) }))
            case .undefined: return .generator(PyGenerator([]))
            default: throw ValueError("items filter expects a mapping, got \(value.typeName)")
            }
        case "dictsort":
            guard case .dict(let d) = value else { throw ValueError("dictsort filter expects a mapping, got \(value.typeName)") }
            let caseSensitive = args.bool(0, "case_sensitive") ?? false
            let byValue = (try args.string(1, "by") ?? "key") == "value"
            let reverse = args.bool(2, "reverse") ?? false
            let pairs = d.pairs.map { Value.array([$0.0, $0.1]) }
            return .array(try sorted(pairs, caseSensitive: caseSensitive, reverse: reverse) { pair in
                guard case .array(let kv) = pair else { return pair }
                return byValue ? kv[1] : kv[0]
            })
        case "sort":
            let reverse = args.bool(0, "reverse") ?? false
            let caseSensitive = args.bool(1, "case_sensitive") ?? false
            let attr = args.get(2, "attribute")
            return .array(try sorted(try iterate(value), caseSensitive: caseSensitive, reverse: reverse) { v in
                try attr.map { try attributePath(v, $0) } ?? v
            })
        case "reverse":
            if case .string(let s) = value { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .generator(PyGenerator(try iterate(value).reversed()))
        case "unique":
            let caseSensitive = args.bool(0, "case_sensitive") ?? false
            let attr = args.get(1, "attribute")
            var seen: [Value] = []
            var out: [Value] = []
            for v in try iterate(value) {
                let k = sortKey(try attr.map { try attributePath(v, $0) } ?? v, caseSensitive: caseSensitive)
                if !seen.contains(where: { pyEqual($0, k) }) {
                    seen.append(k)
                    out.append(v)
                }
            }
            return .generator(PyGenerator(out))
        // Jinja skips a false sequence (none, empty) in these filters instead of iterating it.
        case "map":
            let items = value.truthy ? try iterate(value) : []
            if let attr = args.named.first(where: { $0.0 == "attribute" })?.1 {
                let fallback = args.named.first(where: { $0.0 == "default" })?.1
                return .generator(PyGenerator(try items.map { v in
                    let r = try attributePath(v, attr)
                    if r.isUndefined, let fallback { return fallback }
                    return r
                }))
            }
            guard case .string(let filterName)? = args.positional.first else { throw ValueError("map() needs a filter name or attribute=") }
            let rest = Args(positional: Array(args.positional.dropFirst()), named: args.named)
            return .generator(PyGenerator(try items.map { try filter(filterName, $0, rest, pos) }))
        case "select", "reject":
            let keep = name == "select"
            let items = value.truthy ? try iterate(value) : []
            guard case .string(let testName)? = args.positional.first else {
                return .generator(PyGenerator(items.filter { $0.truthy == keep }))
            }
            let rest = Args(positional: Array(args.positional.dropFirst()), named: args.named)
            return .generator(PyGenerator(try items.filter { try test(testName, $0, rest, pos) == keep }))
        case "selectattr", "rejectattr":
            let keep = name == "selectattr"
            guard let attr = args.positional.first else { throw ValueError("\(name)() needs an attribute name") }
            let items = value.truthy ? try iterate(value) : []
            if args.positional.count < 2 {
                return .generator(PyGenerator(try items.filter { try attributePath($0, attr).truthy == keep }))
            }
            guard case .string(let testName) = args.positional[1] else { throw ValueError("\(name)() test name must be a string") }
            let rest = Args(positional: Array(args.positional.dropFirst(2)), named: args.named)
            return .generator(PyGenerator(try items.filter { try test(testName, try attributePath($0, attr), rest, pos) == keep }))
        case "replace":
            guard let old = try args.string(0, "old"), let new = try args.string(1, "new") else {
                throw ValueError("replace filter takes 2 string arguments")
            }
            return .string(pyReplace(value.str, old, new, count: try args.int(2, "count") ?? -1))
        case "int":
            let fallback = args.get(0, "default") ?? .int(0)
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return Int(exactly: d.rounded(.towardZero)).map { .int($0) } ?? fallback
            case .string(let s):
                let t = pyStrip(s, chars: nil, leading: true, trailing: true).replacingOccurrences(of: "_", with: "")
                if let n = Int(t) { return .int(n) }
                if let d = Double(t), let n = Int(exactly: d.rounded(.towardZero)) { return .int(n) }
                return fallback
            default: return fallback
            }
        case "float":
            let fallback = args.get(0, "default") ?? .double(0)
            switch value {
            case .int(let n): return .double(Double(n))
            case .bool(let b): return .double(b ? 1 : 0)
            case .double: return value
            case .string(let s): return Double(pyStrip(s, chars: nil, leading: true, trailing: true)).map { .double($0) } ?? fallback
            default: return fallback
            }
        case "abs":
            switch value {
            case .int(let n): return n == .min ? .double(-Double(n)) : .int(abs(n))
            case .double(let d): return .double(abs(d))
            case .bool(let b): return .int(b ? 1 : 0)
            default: throw ValueError("bad operand type for abs(): '\(value.typeName)'")
            }
        case "round":
            guard let x = value.number else { throw ValueError("round filter expects a number, got \(value.typeName)") }
            let precision = try args.int(0, "precision") ?? 0
            let method = try args.string(1, "method") ?? "common"
            let scale = Foundation.pow(10.0, Double(precision))
            // 'common' is Python's round(): halves go to the even neighbour.
            let rule: FloatingPointRoundingRule = method == "ceil" ? .up : method == "floor" ? .down : .toNearestOrEven
            return .double((x * scale).rounded(rule) / scale)
        case "sum":
            var items = try iterate(value)
            if let attr = args.get(0, "attribute"), !attr.isNone { items = try items.map { try attributePath($0, attr) } }
            var total = args.get(1, "start") ?? .int(0)
            for v in items { total = try arithmetic("+", total, v) }
            return total
        case "min", "max":
            let caseSensitive = args.bool(0, "case_sensitive") ?? false
            let attr = args.get(1, "attribute")
            let s = try sorted(try iterate(value), caseSensitive: caseSensitive, reverse: name == "max") { v in
                try attr.map { try attributePath(v, $0) } ?? v
            }
            return s.first ?? .undefined(name)
        case "indent":
            let width: String
            if case .string(let w)? = args.get(0, "width") { width = w } else { width = String(repeating: " ", count: min(max(try args.int(0, "width") ?? 4, 0), 1024)) }
            let first = args.bool(1, "first") ?? false
            let blank = args.bool(2, "blank") ?? false
            let lines = value.str.split(separator: "\n", omittingEmptySubsequences: false)
            var out: [String] = []
            for (k, line) in lines.enumerated() {
                if k == 0 && !first { out.append(String(line)); continue }
                out.append(line.isEmpty && !blank ? "" : width + line)
            }
            return .string(out.joined(separator: "\n"))
        case "wordcount":
            return .int(try pySplit(value.str, sep: nil, maxSplit: -1).count)
        case "format":
            return .string(try percentFormat(value.str, args.positional))
        case "safe":
            return value
        case "escape", "e", "forceescape":
            return .string(htmlEscape(value.str))
        case "batch":
            guard let size = try args.int(0, "linecount"), size > 0 else { throw ValueError("batch needs a positive size") }
            let items = try iterate(value)
            return .generator(PyGenerator(stride(from: 0, to: items.count, by: size).map { .array(Array(items[$0..<min($0 + size, items.count)])) }))
        case "center":
            let width = min(try args.int(0, "width") ?? 80, 4096)
            let s = value.str
            let pad = max(0, width - s.count)
            return .string(String(repeating: " ", count: pad / 2) + s + String(repeating: " ", count: pad - pad / 2))
        default:
            throw ValueError("unknown filter '\(name)'")
        }
    }

    // MARK: - Tests

    func applyTest(_ name: String, _ value: Value, _ args: Args, _ pos: SourcePos) throws -> Bool {
        try at(pos) { try test(name, value, args, pos) }
    }

    private func test(_ name: String, _ value: Value, _ args: Args, _ pos: SourcePos) throws -> Bool {
        let other = args.positional.first
        func needOther() throws -> Value {
            guard let other else { throw ValueError("test '\(name)' needs an argument") }
            return other
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": return value.isNone
        case "string": if case .string = value { return true }; return false
        case "mapping": if case .dict = value { return true }; if case .namespace = value { return true }; return false
        case "iterable":
            switch value {
            case .string, .array, .generator, .dict, .undefined, .namespace: return true
            default: return false
            }
        case "sequence":
            switch value {
            case .string, .array, .dict, .undefined: return true
            default: return false
            }
        case "number": return value.number != nil
        case "integer": if case .int = value { return true }; return false
        case "float": if case .double = value { return true }; return false
        case "boolean": if case .bool = value { return true }; return false
        case "true": if case .bool(true) = value { return true }; return false
        case "false": if case .bool(false) = value { return true }; return false
        case "callable":
            switch value {
            case .macro, .caller, .builtin, .method: return true
            default: return false
            }
        case "equalto", "eq", "==", "sameas": return pyEqual(value, try needOther())
        case "ne", "!=": return !pyEqual(value, try needOther())
        case "lt", "<", "lessthan", "gt", ">", "greaterthan", "le", "<=", "ge", ">=":
            let o = try needOther()
            let op: String
            switch name {
            case "lt", "<", "lessthan": op = "<"
            case "gt", ">", "greaterthan": op = ">"
            case "le", "<=": op = "<="
            default: op = ">="
            }
            return try binary(op, value, o).truthy
        case "in": return try binary("in", value, try needOther()).truthy
        case "odd", "even":
            guard let n = value.intValue else { throw ValueError("test '\(name)' expects an integer, got \(value.typeName)") }
            return (n % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard let n = value.intValue, let d = try needOther().intValue, d != 0 else {
                throw ValueError("divisibleby expects non-zero integers")
            }
            return n % d == 0
        case "lower": if case .string(let s) = value { return s == s.lowercased() }; return false
        case "upper": if case .string(let s) = value { return s == s.uppercased() }; return false
        default: throw ValueError("unknown test '\(name)'")
        }
    }
}
