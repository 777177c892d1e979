import Foundation

/// Limits that keep a hostile or broken template from hanging or exhausting memory.
struct RenderLimits {
    var maxIterations = 1_000_000
    var maxCallDepth = 64
    var maxOutputScalars = 16 << 20
    var maxRange = 1_000_000
}

enum Flow {
    case normal, breakLoop, continueLoop
}

/// Evaluates a parsed template. One instance per render; not shared between threads.
final class Interpreter {
    private var scopes: [[String: Value]]
    let limits: RenderLimits
    private let now: Date
    private var iterations = 0
    private var callDepth = 0
    private var outputScalars = 0

    init(context: [String: Value], now: Date, limits: RenderLimits = RenderLimits()) {
        var globals: [String: Value] = [:]
        for name in ["range", "namespace", "raise_exception", "strftime_now", "dict"] { globals[name] = .builtin(name) }
        scopes = [globals, context]
        self.now = now
        self.limits = limits
    }

    // MARK: - Errors

    func fail(_ message: String, _ pos: SourcePos) -> ChatTemplateError {
        ChatTemplateError(kind: .render, message: message, line: pos.line, column: pos.column)
    }

    /// Runs `body`, giving positionless value errors the position `pos`.
    func at<T>(_ pos: SourcePos, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as ValueError { throw fail(e.message, pos) }
    }

    // MARK: - Scopes

    func lookup(_ name: String) -> Value {
        for scope in scopes.reversed() {
            if let v = scope[name] { return v }
        }
        return .undefined(name)
    }

    func assign(_ name: String, _ value: Value) {
        scopes[scopes.count - 1][name] = value
    }

    // MARK: - Statements

    func render(_ nodes: [Node]) throws -> String {
        var out = ""
        let flow = try exec(nodes, into: &out)
        _ = flow
        return out
    }

    func emit(_ s: String, into out: inout String, _ pos: SourcePos) throws {
        outputScalars += s.unicodeScalars.count
        if outputScalars > limits.maxOutputScalars {
            throw fail("output exceeds \(limits.maxOutputScalars) characters", pos)
        }
        out += s
    }

    func exec(_ nodes: [Node], into out: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let s):
                try emit(s, into: &out, SourcePos(line: 0, column: 0))
            case .output(let e, let pos):
                try emit(try eval(e).str, into: &out, pos)
            case .conditional(let branches, let otherwise, _):
                var taken = false
                for (condition, body) in branches where try eval(condition).truthy {
                    taken = true
                    let flow = try exec(body, into: &out)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try exec(otherwise, into: &out)
                    if flow != .normal { return flow }
                }
            case .forLoop(let loop):
                try execFor(loop, into: &out)
            case .assign(let target, let e, let pos):
                try assign(target, try evalKeepingMarkup(e), pos)
            case .assignBlock(let target, let filters, let body, let pos):
                var captured = ""
                _ = try exec(body, into: &captured)
                var v = Value.string(captured)
                for (name, args, fpos) in filters { v = try applyFilter(name, v, args, fpos) }
                try assign(target, v, pos)
            case .macro(let m):
                assign(m.name, .macro(m))
            case .callBlock(let call, let params, let body, let pos):
                guard case .call(let callee, let args, _) = call else { break }
                let f = try eval(callee)
                let caller = Value.caller(body: body, parameters: params, scopes: scopes)
                let v = try callValue(f, try evalArgs(args), pos, caller: caller)
                try emit(v.str, into: &out, pos)
            case .filterBlock(let filters, let body, let pos):
                var captured = ""
                _ = try exec(body, into: &captured)
                var v = Value.string(captured)
                for (name, args, fpos) in filters { v = try applyFilter(name, v, args, fpos) }
                try emit(v.str, into: &out, pos)
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    func assign(_ target: AssignTarget, _ value: Value, _ pos: SourcePos) throws {
        switch target {
        case .names(let names):
            if names.count == 1 {
                assign(names[0], value)
                return
            }
            let items = try at(pos) { try iterate(value) }
            guard items.count == names.count else {
                throw fail("cannot unpack \(items.count) values into \(names.count) names", pos)
            }
            for (n, v) in zip(names, items) { assign(n, v) }
        case .attribute(let object, let attribute):
            guard case .namespace(let ns) = lookup(object) else {
                throw fail("cannot assign attribute '\(attribute)' on '\(object)': only namespace() objects take attributes", pos)
            }
            ns.attributes[attribute] = value
        }
    }

    func execFor(_ loop: ForLoop, into out: inout String) throws {
        let source = try eval(loop.iterable)
        var items = try at(loop.iterable.pos) { try iterate(source) }
        scopes.append([:])
        defer { scopes.removeLast() }

        func bind(_ item: Value) throws {
            if loop.targets.count == 1 {
                assign(loop.targets[0], item)
            } else {
                let parts = try at(loop.pos) { try iterate(item) }
                guard parts.count == loop.targets.count else {
                    throw fail("cannot unpack \(parts.count) values into \(loop.targets.count) loop variables", loop.pos)
                }
                for (n, v) in zip(loop.targets, parts) { assign(n, v) }
            }
        }

        if let condition = loop.condition {
            var kept: [Value] = []
            for item in items {
                try countIteration(loop.pos)
                try bind(item)
                if try eval(condition).truthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            _ = try exec(loop.otherwise, into: &out)
            return
        }
        let n = items.count
        for (index, item) in items.enumerated() {
            try countIteration(loop.pos)
            // Each iteration starts with a fresh scope: a `set` in one iteration is not
            // visible in the next (nor after the loop), as in Jinja.
            scopes[scopes.count - 1] = [:]
            try bind(item)
            var info = ValueDict()
            info["index"] = .int(index + 1)
            info["index0"] = .int(index)
            info["revindex"] = .int(n - index)
            info["revindex0"] = .int(n - index - 1)
            info["first"] = .bool(index == 0)
            info["last"] = .bool(index == n - 1)
            info["length"] = .int(n)
            info["depth"] = .int(1)
            info["depth0"] = .int(0)
            info["previtem"] = index > 0 ? items[index - 1] : .undefined("previtem")
            info["nextitem"] = index < n - 1 ? items[index + 1] : .undefined("nextitem")
            info["cycle"] = .method(.int(index), "__cycle")
            assign("loop", .dict(info))
            let flow = try exec(loop.body, into: &out)
            if flow == .breakLoop { break }
        }
    }

    func countIteration(_ pos: SourcePos) throws {
        iterations += 1
        if iterations > limits.maxIterations {
            throw fail("too many loop iterations (limit \(limits.maxIterations))", pos)
        }
    }

    // MARK: - Expressions

    struct Args {
        var positional: [Value] = []
        var named: [(String, Value)] = []

        func get(_ index: Int, _ name: String) -> Value? {
            if let v = named.first(where: { $0.0 == name })?.1 { return v }
            return index < positional.count ? positional[index] : nil
        }

        func string(_ index: Int, _ name: String) throws -> String? {
            guard let v = get(index, name), !v.isNone, !v.isUndefined else { return nil }
            guard case .string(let s) = v else { throw ValueError("argument '\(name)' must be a string, not \(v.typeName)") }
            return s
        }

        func int(_ index: Int, _ name: String) throws -> Int? {
            guard let v = get(index, name), !v.isNone, !v.isUndefined else { return nil }
            guard let n = v.intValue else { throw ValueError("argument '\(name)' must be an integer, not \(v.typeName)") }
            return n
        }

        func bool(_ index: Int, _ name: String) -> Bool? { get(index, name).map(\.truthy) }
    }

    func evalArgs(_ args: [Argument]) throws -> Args {
        var result = Args()
        for a in args {
            switch a {
            case .positional(let e): result.positional.append(try eval(e))
            case .named(let n, let e): result.named.append((n, try eval(e)))
            }
        }
        return result
    }

    /// The expression's value as a plain value (markup strings become ordinary strings).
    func eval(_ e: Expr) throws -> Value { try evalKeepingMarkup(e).plain }

    /// The expression's value, still marked when it is markup (`safe`, `escape`): kept through
    /// variables, `+`, `and` / `or` and conditionals, as jinja2's `Markup` is.
    func evalKeepingMarkup(_ e: Expr) throws -> Value {
        switch e {
        case .literal(let l, _):
            switch l {
            case .none: return .none
            case .bool(let b): return .bool(b)
            case .int(let n): return .int(n)
            case .double(let d): return .double(d)
            case .string(let s): return .string(s)
            }
        case .name(let n, _):
            return lookup(n)
        case .list(let items, _), .tuple(let items, _):
            return .array(try items.map(eval))
        case .dict(let pairs, _):
            var d = ValueDict()
            for (k, v) in pairs {
                let key = try eval(k)
                try at(k.pos) { try d.insert(key, try eval(v)) }
            }
            return .dict(d)
        case .attribute(let base, let name, _):
            return getAttribute(try eval(base), name)
        case .item(let base, let index, let pos):
            let b = try eval(base)
            let i = try eval(index)
            return try at(pos) { try getItem(b, i) }
        case .slice(let base, let start, let stop, let step, let pos):
            let b = try eval(base)
            func bound(_ e: Expr?) throws -> Int? {
                guard let e else { return nil }
                let v = try eval(e)
                if v.isNone { return nil }
                guard let n = v.intValue else { throw fail("slice indices must be integers, not \(v.typeName)", e.pos) }
                return n
            }
            let st = try bound(start), sp = try bound(stop), stepValue = try bound(step) ?? 1
            guard stepValue != 0 else { throw fail("slice step cannot be zero", pos) }
            switch b {
            case .array(let items):
                return .array(sliceIndices(count: items.count, start: st, stop: sp, step: stepValue).map { items[$0] })
            case .string(let s):
                let scalars = Array(s.unicodeScalars)
                var out = String.UnicodeScalarView()
                for k in sliceIndices(count: scalars.count, start: st, stop: sp, step: stepValue) { out.append(scalars[k]) }
                return .string(String(out))
            default: return .undefined("slice")
            }
        case .call(let callee, let args, let pos):
            if case .attribute(let objectExpr, let name, _) = callee {
                let object = try eval(objectExpr)
                if let m = methodValue(object, name) {
                    return try callValue(m, try evalArgs(args), pos)
                }
                let f = getAttribute(object, name)
                return try callValue(f, try evalArgs(args), pos)
            }
            let f = try eval(callee)
            return try callValue(f, try evalArgs(args), pos)
        case .filter(let base, let name, let args, let pos):
            let value = try evalKeepingMarkup(base)
            if let marked = markupFilter(name, value) { return marked }
            return try applyFilter(name, value.plain, args, pos)
        case .test(let base, let name, let args, let negated, let pos):
            let v = try eval(base)
            let result = try applyTest(name, v, try evalArgs(args), pos)
            return .bool(negated ? !result : result)
        case .unary(let op, let operand, let pos):
            let v = try eval(operand)
            switch op {
            case "not": return .bool(!v.truthy)
            case "-":
                switch v {
                case .int(let n): return n == .min ? .double(-Double(n)) : .int(-n)
                case .double(let d): return .double(-d)
                case .bool(let b): return .int(b ? -1 : 0)
                default: throw fail("bad operand type for unary -: '\(v.typeName)'", pos)
                }
            default:
                guard v.number != nil else { throw fail("bad operand type for unary +: '\(v.typeName)'", pos) }
                return v
            }
        case .binary(let op, let l, let r, let pos):
            if op == "and" {
                let a = try evalKeepingMarkup(l)
                return a.truthy ? try evalKeepingMarkup(r) : a
            }
            if op == "or" {
                let a = try evalKeepingMarkup(l)
                return a.truthy ? a : try evalKeepingMarkup(r)
            }
            let a = try evalKeepingMarkup(l), b = try evalKeepingMarkup(r)
            if op == "+", let joined = markupConcatenation(a, b) { return joined }
            return try at(pos) { try binary(op, a.plain, b.plain) }
        case .conditional(let then, let condition, let otherwise, _):
            if try eval(condition).truthy { return try evalKeepingMarkup(then) }
            return try otherwise.map(evalKeepingMarkup) ?? .undefined("else")
        }
    }

    /// `safe`, `escape` and `forceescape` make markup (jinja2's `Markup`); nil for other filters.
    func markupFilter(_ name: String, _ value: Value) -> Value? {
        switch name {
        case "safe": return .markup(value.str)
        case "escape", "e": if case .markup = value { return value }; return .markup(htmlEscape(value.str))
        case "forceescape": return .markup(htmlEscape(value.str))
        default: return nil
        }
    }

    /// `+` with markup on one side: the plain string side is HTML-escaped and the result is
    /// markup, as Python's `Markup.__add__` / `__radd__` do (transformers' `tojson` returns a
    /// plain string, so `'...'|safe + x|tojson` escapes the JSON's quotes). nil otherwise.
    func markupConcatenation(_ a: Value, _ b: Value) -> Value? {
        func part(_ v: Value) -> String? {
            switch v {
            case .markup(let s): return s
            case .string(let s): return htmlEscape(s)
            default: return nil
            }
        }
        guard a.isMarkup || b.isMarkup, let x = part(a), let y = part(b) else { return nil }
        return .markup(x + y)
    }

    func binary(_ op: String, _ a: Value, _ b: Value) throws -> Value {
        switch op {
        case "==": return .bool(pyEqual(a, b))
        case "!=": return .bool(!pyEqual(a, b))
        case "<", ">", "<=", ">=":
            let (x, y) = op == "<" || op == "<=" ? (a, b) : (b, a)
            guard let less = pyLess(x, y) else {
                throw ValueError("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
            }
            return .bool(op.count == 2 ? (less || pyEqual(x, y)) : less)
        case "in": return .bool(try contains(b, a))
        case "not in": return .bool(!(try contains(b, a)))
        case "~": return .string(a.str + b.str)
        case "+":
            switch (a, b) {
            case (.string(let x), .string(let y)): return .string(x + y)
            case (.array(let x), .array(let y)): return .array(x + y)
            default: return try arithmetic(op, a, b)
            }
        case "*":
            switch (a, b) {
            case (.string(let s), .int(let n)), (.int(let n), .string(let s)):
                guard n <= 0 || n <= limits.maxOutputScalars / max(s.unicodeScalars.count, 1) else { throw ValueError("string repetition too large") }
                return .string(n > 0 ? String(repeating: s, count: n) : "")
            case (.array(let xs), .int(let n)), (.int(let n), .array(let xs)):
                guard n <= 0 || n <= limits.maxRange / max(xs.count, 1) else { throw ValueError("list repetition too large") }
                return .array(n > 0 ? Array([[Value]](repeating: xs, count: n).joined()) : [])
            default: return try arithmetic(op, a, b)
            }
        case "%":
            if case .string(let f) = a {
                if case .array(let items) = b { return .string(try percentFormat(f, items)) }
                return .string(try percentFormat(f, [b]))
            }
            return try arithmetic(op, a, b)
        default:
            return try arithmetic(op, a, b)
        }
    }

    func arithmetic(_ op: String, _ a: Value, _ b: Value) throws -> Value {
        let unsupported = ValueError("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
        if let x = a.intValue, let y = b.intValue {
            switch op {
            case "+": let (r, o) = x.addingReportingOverflow(y); if !o { return .int(r) }
            case "-": let (r, o) = x.subtractingReportingOverflow(y); if !o { return .int(r) }
            case "*": let (r, o) = x.multipliedReportingOverflow(by: y); if !o { return .int(r) }
            case "/":
                guard y != 0 else { throw ValueError("division by zero") }
                return .double(Double(x) / Double(y))
            case "//":
                guard y != 0 else { throw ValueError("integer division or modulo by zero") }
                var q = x / y
                if (x % y != 0) && ((x < 0) != (y < 0)) { q -= 1 }
                return .int(q)
            case "%":
                guard y != 0 else { throw ValueError("integer division or modulo by zero") }
                var r = x % y
                if r != 0 && ((r < 0) != (y < 0)) { r += y }
                return .int(r)
            case "**":
                if y >= 0 {
                    var result = 1, base = x, e = y
                    var overflow = false
                    while e > 0 && !overflow {
                        if e & 1 == 1 { let (r, o) = result.multipliedReportingOverflow(by: base); result = r; overflow = overflow || o }
                        e >>= 1
                        if e > 0 { let (r, o) = base.multipliedReportingOverflow(by: base); base = r; overflow = overflow || o }
                    }
                    if !overflow { return .int(result) }
                }
                return .double(Foundation.pow(Double(x), Double(y)))
            default: throw unsupported
            }
            throw ValueError("integer overflow in \(op)")
        }
        guard let x = a.number, let y = b.number else { throw unsupported }
        switch op {
        case "+": return .double(x + y)
        case "-": return .double(x - y)
        case "*": return .double(x * y)
        case "/":
            guard y != 0 else { throw ValueError("float division by zero") }
            return .double(x / y)
        case "//":
            guard y != 0 else { throw ValueError("float divmod()") }
            return .double((x / y).rounded(.down))
        case "%":
            guard y != 0 else { throw ValueError("float modulo") }
            let r = x.truncatingRemainder(dividingBy: y)
            return .double(r != 0 && ((r < 0) != (y < 0)) ? r + y : r)
        case "**": return .double(Foundation.pow(x, y))
        default: throw unsupported
        }
    }

    func contains(_ container: Value, _ item: Value) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else { throw ValueError("'in <string>' requires string as left operand, not \(item.typeName)") }
            return sub.isEmpty || s.contains(sub)
        case .array(let items): return items.contains { pyEqual($0, item) }
        case .generator(let g):
            // consumes up to the match, as Python does
            while let x = g.next() { if pyEqual(x, item) { return true } }
            return false
        case .dict(let d):
            _ = try ValueDict.Key(item)  // Python: unhashable types are an error here
            return d.lookup(item) != nil
        case .namespace(let ns):
            if case .string(let k) = item { return ns.attributes[k] != nil }
            return false
        case .undefined: return false
        default: throw ValueError("argument of type '\(container.typeName)' is not iterable")
        }
    }

    /// Items of an iterable: list items, dict keys, string characters; undefined is empty.
    func iterate(_ v: Value) throws -> [Value] {
        switch v {
        case .array(let items): return items
        case .generator(let g): return g.drain()
        case .dict(let d): return d.keys
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        case .namespace(let ns): return ns.attributes.keys
        default: throw ValueError("'\(v.typeName)' object is not iterable")
        }
    }

    // MARK: - Attributes and items

    private static let stringMethods: Set<String> = [
        "strip", "lstrip", "rstrip", "startswith", "endswith", "split", "rsplit", "upper", "lower", "replace",
        "title", "capitalize", "format", "join", "find", "rfind", "count", "isdigit", "isalpha", "isalnum",
        "isspace", "islower", "isupper", "splitlines", "removeprefix", "removesuffix", "index", "swapcase",
    ]
    private static let dictMethods: Set<String> = ["get", "items", "keys", "values"]

    /// Python methods reachable as attributes (Jinja tries attributes before keys).
    func methodValue(_ object: Value, _ name: String) -> Value? {
        switch object {
        case .string where Interpreter.stringMethods.contains(name): return .method(object, name)
        case .dict where Interpreter.dictMethods.contains(name): return .method(object, name)
        case .array where ["index", "count"].contains(name): return .method(object, name)
        default: return nil
        }
    }

    func getAttribute(_ object: Value, _ name: String) -> Value {
        if let m = methodValue(object, name) { return m }
        switch object {
        case .dict(let d): return d[name] ?? .undefined(name)
        case .namespace(let ns): return ns.attributes[name] ?? .undefined(name)
        default: return .undefined(name)
        }
    }

    func getItem(_ object: Value, _ index: Value) throws -> Value {
        switch (object, index) {
        case (.array(let items), _):
            guard let i = index.intValue else {
                if case .string(let s) = index { return getAttribute(object, s) }
                return .undefined(index.str)
            }
            let k = i < 0 ? i + items.count : i
            return k >= 0 && k < items.count ? items[k] : .undefined("[\(i)]")
        case (.string(let s), _):
            guard let i = index.intValue else {
                if case .string(let name) = index { return getAttribute(object, name) }
                return .undefined(index.str)
            }
            let scalars = Array(s.unicodeScalars)
            let k = i < 0 ? i + scalars.count : i
            return k >= 0 && k < scalars.count ? .string(String(scalars[k])) : .undefined("[\(i)]")
        case (.dict(let d), _):
            if let v = d.lookup(index) { return v }
            if case .string(let s) = index { return getAttribute(object, s) }
            return .undefined(index.str)
        case (.namespace(let ns), .string(let key)):
            return ns.attributes[key] ?? .undefined(key)
        default:
            // Jinja answers a subscript Python rejects (`5[0]`, a generator's `[0]`) with
            // undefined; only using that value fails.
            if case .string(let s) = index { return getAttribute(object, s) }
            return .undefined(index.str)
        }
    }

    // MARK: - Calls

    func callValue(_ f: Value, _ args: Args, _ pos: SourcePos, caller: Value? = nil) throws -> Value {
        switch f {
        case .builtin(let name): return try callBuiltin(name, args, pos)
        case .method(let object, let name): return try at(pos) { try callMethod(object, name, args, pos) }
        case .macro(let m): return try callMacro(m.name, m.parameters, m.body, args, pos, scopes: nil, caller: caller)
        case .caller(let body, let params, let saved):
            return try callMacro("caller", params, body, args, pos, scopes: saved, caller: nil)
        case .undefined(let name): throw fail("'\(name)' is undefined", pos)
        default: throw fail("'\(f.typeName)' object is not callable", pos)
        }
    }

    func callMacro(_ name: String, _ params: [(String, Expr?)], _ body: [Node], _ args: Args, _ pos: SourcePos,
                           scopes saved: [[String: Value]]?, caller: Value?) throws -> Value
    {
        callDepth += 1
        defer { callDepth -= 1 }
        guard callDepth <= limits.maxCallDepth else {
            throw fail("macro calls nested too deeply (limit \(limits.maxCallDepth)); is '\(name)' recursive?", pos)
        }
        let outer = scopes
        defer { scopes = outer }
        scopes = saved ?? Array(outer.prefix(2))
        scopes.append([:])
        var extraPositional: [Value] = []
        for (k, v) in args.positional.enumerated() {
            if k < params.count { assign(params[k].0, v) } else { extraPositional.append(v) }
        }
        var extraNamed = ValueDict()
        for (n, v) in args.named {
            if params.contains(where: { $0.0 == n }) { assign(n, v) } else { extraNamed[n] = v }
        }
        for (n, def) in params where scopes[scopes.count - 1][n] == nil {
            assign(n, try def.map(eval) ?? .undefined(n))
        }
        assign("varargs", .array(extraPositional))
        assign("kwargs", .dict(extraNamed))
        if let caller { assign("caller", caller) }
        var out = ""
        _ = try exec(body, into: &out)
        return .string(out)
    }

    func callBuiltin(_ name: String, _ args: Args, _ pos: SourcePos) throws -> Value {
        switch name {
        case "raise_exception":
            let message = args.get(0, "message")?.str ?? "raise_exception called"
            throw ChatTemplateError(kind: .raised, message: message, line: pos.line, column: pos.column)
        case "range":
            let ints = try args.positional.map { v -> Int in
                guard let n = v.intValue else { throw fail("range() arguments must be integers, not \(v.typeName)", pos) }
                return n
            }
            let (start, stop, step): (Int, Int, Int)
            switch ints.count {
            case 1: (start, stop, step) = (0, ints[0], 1)
            case 2: (start, stop, step) = (ints[0], ints[1], 1)
            case 3: (start, stop, step) = (ints[0], ints[1], ints[2])
            default: throw fail("range() takes 1 to 3 arguments", pos)
            }
            guard step != 0 else { throw fail("range() arg 3 must not be zero", pos) }
            let span = step > 0 ? (Double(stop) - Double(start)) / Double(step) : (Double(start) - Double(stop)) / -Double(step)
            guard span <= Double(limits.maxRange) else { throw fail("range() too large (limit \(limits.maxRange))", pos) }
            let count = max(0, Int(span.rounded(.up)))
            return .array((0..<count).map { .int(start + $0 * step) })
        case "namespace":
            let ns = Namespace()
            for v in args.positional {
                if case .dict(let d) = v { for (k, x) in d.pairs { try at(pos) { try ns.attributes.insert(k, x) } } }
            }
            for (k, v) in args.named { ns.attributes[k] = v }
            return .namespace(ns)
        case "dict":
            var d = ValueDict()
            for v in args.positional {
                if case .dict(let other) = v { for (k, x) in other.pairs { try at(pos) { try d.insert(k, x) } } }
            }
            for (k, v) in args.named { d[k] = v }
            return .dict(d)
        case "strftime_now":
            guard case .string(let f)? = args.get(0, "format") else { throw fail("strftime_now() needs a format string", pos) }
            return .string(strftime(f, now))
        default:
            throw fail("'\(name)' is not callable", pos)
        }
    }

    func callMethod(_ object: Value, _ name: String, _ args: Args, _ pos: SourcePos) throws -> Value {
        if name == "__cycle" {
            guard case .int(let index) = object, !args.positional.isEmpty else { throw ValueError("loop.cycle() needs arguments") }
            return args.positional[index % args.positional.count]
        }
        switch object {
        case .string(let s): return try stringMethod(s, name, args)
        case .dict(let d):
            switch name {
            case "get":
                guard let key = args.get(0, "key") else { throw ValueError("get() needs a key") }
                return d.lookup(key) ?? args.get(1, "default") ?? .none
            case "items": return .array(d.pairs.map { .array([$0.0, $0.1]) })
            case "keys": return .array(d.keys)
            case "values": return .array(d.values)
            default: break
            }
        case .array(let items):
            guard let x = args.get(0, "value") else { throw ValueError("\(name)() needs an argument") }
            if name == "count" { return .int(items.filter { pyEqual($0, x) }.count) }
            guard let k = items.firstIndex(where: { pyEqual($0, x) }) else { throw ValueError("\(x.repr) is not in list") }
            return .int(k)
        default: break
        }
        throw ValueError("'\(object.typeName)' object has no method '\(name)'")
    }

    func stringMethod(_ s: String, _ name: String, _ args: Args) throws -> Value {
        switch name {
        case "strip": return .string(pyStrip(s, chars: try args.string(0, "chars"), leading: true, trailing: true))
        case "lstrip": return .string(pyStrip(s, chars: try args.string(0, "chars"), leading: true, trailing: false))
        case "rstrip": return .string(pyStrip(s, chars: try args.string(0, "chars"), leading: false, trailing: true))
        case "upper": return .string(pyUpper(s))
        case "lower": return .string(pyLower(s))
        case "title": return .string(pyTitle(s))
        case "capitalize": return .string(pyCapitalize(s))
        case "swapcase": return .string(String(s.map { $0.isUppercase ? Character($0.lowercased()) : Character($0.uppercased()) }))
        case "startswith", "endswith":
            guard let arg = args.get(0, "prefix") else { throw ValueError("\(name)() takes at least 1 argument") }
            let candidates: [Value]
            if case .array(let items) = arg { candidates = items } else { candidates = [arg] }
            for c in candidates {
                guard case .string(let p) = c else { throw ValueError("\(name) first arg must be str or a tuple of str, not \(c.typeName)") }
                let hit = name == "startswith"
                    ? s.unicodeScalars.starts(with: p.unicodeScalars)
                    : s.unicodeScalars.reversed().starts(with: p.unicodeScalars.reversed())
                if hit { return .bool(true) }
            }
            return .bool(false)
        case "split", "rsplit":
            let sep = try args.string(0, "sep")
            let maxSplit = try args.int(1, "maxsplit") ?? -1
            if name == "rsplit", maxSplit >= 0 {
                // Split from the right: reverse, split, reverse back.
                let rev = String(String.UnicodeScalarView(s.unicodeScalars.reversed()))
                let revSep = sep.map { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) }
                let parts = try pySplit(rev, sep: revSep, maxSplit: maxSplit)
                return .array(parts.reversed().map { .string(String(String.UnicodeScalarView($0.unicodeScalars.reversed()))) })
            }
            return .array(try pySplit(s, sep: sep, maxSplit: maxSplit).map { .string($0) })
        case "splitlines":
            var lines = s.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            if lines.last == "" { lines.removeLast() }
            return .array(lines.map { .string($0) })
        case "replace":
            guard let old = try args.string(0, "old"), let new = try args.string(1, "new") else {
                throw ValueError("replace() takes 2 string arguments")
            }
            return .string(pyReplace(s, old, new, count: try args.int(2, "count") ?? -1))
        case "format":
            var named: [String: Value] = [:]
            for (k, v) in args.named { named[k] = v }
            return .string(try braceFormat(s, args.positional, named))
        case "join":
            guard let v = args.get(0, "iterable") else { throw ValueError("join() takes 1 argument") }
            return .string(try iterate(v).map { item -> String in
                guard case .string(let t) = item else { throw ValueError("sequence item: expected str instance, \(item.typeName) found") }
                return t
            }.joined(separator: s))
        case "find", "rfind", "index", "count":
            guard let sub = try args.string(0, "sub") else { throw ValueError("\(name)() takes 1 string argument") }
            let hay = Array(s.unicodeScalars), needle = Array(sub.unicodeScalars)
            var hits: [Int] = []
            if needle.count <= hay.count {
                var i = 0
                while i + needle.count <= hay.count {
                    if Array(hay[i..<i + needle.count]) == needle {
                        hits.append(i)
                        if name == "count" { i += max(needle.count, 1); continue }
                    }
                    i += 1
                }
            }
            switch name {
            case "count": return .int(hits.count)
            case "rfind": return .int(hits.last ?? -1)
            case "index":
                guard let f = hits.first else { throw ValueError("substring not found") }
                return .int(f)
            default: return .int(hits.first ?? -1)
            }
        case "removeprefix":
            let p = try args.string(0, "prefix") ?? ""
            return .string(s.hasPrefix(p) ? String(s.dropFirst(p.count)) : s)
        case "removesuffix":
            let p = try args.string(0, "suffix") ?? ""
            return .string(s.hasSuffix(p) && !p.isEmpty ? String(s.dropLast(p.count)) : s)
        case "isdigit": return .bool(!s.isEmpty && s.allSatisfy(\.isNumber))
        case "isalpha": return .bool(!s.isEmpty && s.allSatisfy(\.isLetter))
        case "isalnum": return .bool(!s.isEmpty && s.allSatisfy { $0.isLetter || $0.isNumber })
        case "isspace": return .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(isPythonSpace))
        case "islower": return .bool(s.contains(where: \.isCased) && !s.contains(where: \.isUppercase))
        case "isupper": return .bool(s.contains(where: \.isCased) && !s.contains(where: \.isLowercase))
        default: throw ValueError("'str' object has no method '\(name)'")
        }
    }
}
