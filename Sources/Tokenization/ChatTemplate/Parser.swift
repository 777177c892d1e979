/// Recursive-descent parser for the Jinja subset, following Jinja's operator precedence:
/// conditional < or < and < not < comparisons / in / not in < + - < ~ < * / // % < ** <
/// unary - + < postfix (attribute, subscript, call, filter `|`, test `is`).
struct Parser {
    private let tokens: [Token]
    private var p = 0
    private var depth = 0
    private static let maxDepth = 200

    init(tokens: [Token]) { self.tokens = tokens }

    private var current: Token { tokens[p] }

    private func error(_ message: String, at pos: SourcePos? = nil) -> ChatTemplateError {
        let pos = pos ?? current.pos
        return ChatTemplateError(kind: .syntax, message: message, line: pos.line, column: pos.column)
    }

    private static func describe(_ k: TokenKind) -> String {
        switch k {
        case .text: return "text"
        case .outputBegin: return "'{{'"
        case .outputEnd: return "'}}'"
        case .statementBegin: return "'{%'"
        case .statementEnd: return "'%}'"
        case .name(let n): return "'\(n)'"
        case .string(let s): return "string '\(s)'"
        case .int(let n): return "'\(n)'"
        case .float(let d): return "'\(d)'"
        case .op(let o): return "'\(o)'"
        case .end: return "end of template"
        }
    }

    private mutating func advance() -> Token {
        let t = tokens[p]
        if p < tokens.count - 1 { p += 1 }
        return t
    }

    private func isOp(_ o: String) -> Bool {
        if case .op(o) = current.kind { return true }
        return false
    }

    private func isName(_ n: String) -> Bool {
        if case .name(n) = current.kind { return true }
        return false
    }

    private func peekIsName(_ n: String, offset: Int) -> Bool {
        guard p + offset < tokens.count, case .name(n) = tokens[p + offset].kind else { return false }
        return true
    }

    private mutating func expectOp(_ o: String) throws {
        guard isOp(o) else { throw error("expected '\(o)', found \(Parser.describe(current.kind))") }
        _ = advance()
    }

    private mutating func expectName() throws -> String {
        guard case .name(let n) = current.kind else {
            throw error("expected a name, found \(Parser.describe(current.kind))")
        }
        _ = advance()
        return n
    }

    private mutating func expectStatementEnd() throws {
        guard case .statementEnd = current.kind else {
            throw error("expected '%}', found \(Parser.describe(current.kind))")
        }
        _ = advance()
    }

    // MARK: - Statements

    mutating func parseTemplate() throws -> [Node] {
        let (nodes, stop) = try parseBody(until: [])
        if let stop { throw error("unexpected '\(stop.name)' without a matching block", at: stop.pos) }
        return nodes
    }

    /// Parses nodes until a statement whose keyword is in `until` (left unconsumed after its
    /// keyword: the caller reads the rest of that tag) or the end of the template.
    private mutating func parseBody(until: Set<String>) throws -> ([Node], (name: String, pos: SourcePos)?) {
        var nodes: [Node] = []
        while true {
            let t = current
            switch t.kind {
            case .end:
                return (nodes, nil)
            case .text(let s):
                _ = advance()
                nodes.append(.text(s))
            case .outputBegin:
                _ = advance()
                let e = try parseExpression()
                guard case .outputEnd = current.kind else {
                    throw error("expected '}}', found \(Parser.describe(current.kind))")
                }
                _ = advance()
                nodes.append(.output(e, e.pos))
            case .statementBegin:
                _ = advance()
                guard case .name(let keyword) = current.kind else {
                    throw error("expected a statement name, found \(Parser.describe(current.kind))")
                }
                if until.contains(keyword) {
                    let pos = current.pos
                    _ = advance()
                    return (nodes, (keyword, pos))
                }
                nodes.append(try parseStatement())
            default:
                throw error("unexpected \(Parser.describe(t.kind))")
            }
        }
    }

    private mutating func parseStatement() throws -> Node {
        let pos = current.pos
        let keyword = try expectName()
        depth += 1
        defer { depth -= 1 }
        guard depth < Parser.maxDepth else { throw error("blocks nested too deeply", at: pos) }
        switch keyword {
        case "if": return try parseIf(pos)
        case "for": return try parseFor(pos)
        case "set": return try parseSet(pos)
        case "macro": return try parseMacro(pos)
        case "call": return try parseCallBlock(pos)
        case "filter":
            let filters = try parseFilterChain()
            try expectStatementEnd()
            let body = try parseBlockBody(ends: ["endfilter"], opener: "filter", pos)
            return .filterBlock(filters: filters, body: body, pos)
        case "break", "continue":
            try expectStatementEnd()
            return keyword == "break" ? .breakLoop(pos) : .continueLoop(pos)
        case "generation":
            // transformers' assistant-mask marker: renders its body unchanged.
            try expectStatementEnd()
            let body = try parseBlockBody(ends: ["endgeneration"], opener: "generation", pos)
            return .conditional([(.literal(.bool(true), pos), body)], otherwise: [], pos)
        case "endif", "endfor", "endset", "endmacro", "endcall", "endfilter", "endgeneration", "else", "elif":
            throw error("unexpected '\(keyword)' without a matching block", at: pos)
        case "include", "import", "from", "extends", "block":
            throw error("'\(keyword)' is not supported in chat templates", at: pos)
        default:
            throw error("unknown statement '\(keyword)'", at: pos)
        }
    }

    private mutating func parseBlockBody(ends: Set<String>, opener: String, _ pos: SourcePos) throws -> [Node] {
        let (body, stop) = try parseBody(until: ends)
        guard stop != nil else {
            throw error("'\(opener)' block is never closed (expected '\(ends.sorted().joined(separator: "' or '"))')", at: pos)
        }
        try expectStatementEnd()
        return body
    }

    private mutating func parseIf(_ pos: SourcePos) throws -> Node {
        var branches: [(Expr, [Node])] = []
        var condition = try parseExpression()
        try expectStatementEnd()
        while true {
            let (body, stop) = try parseBody(until: ["elif", "else", "endif"])
            guard let stop else { throw error("'if' block is never closed (expected 'endif')", at: pos) }
            branches.append((condition, body))
            switch stop.name {
            case "elif":
                condition = try parseExpression()
                try expectStatementEnd()
            case "else":
                try expectStatementEnd()
                let (other, end) = try parseBody(until: ["endif", "elif", "else"])
                guard let end else { throw error("'if' block is never closed (expected 'endif')", at: pos) }
                guard end.name == "endif" else { throw error("unexpected '\(end.name)' after 'else'", at: end.pos) }
                try expectStatementEnd()
                return .conditional(branches, otherwise: other, pos)
            default:
                try expectStatementEnd()
                return .conditional(branches, otherwise: [], pos)
            }
        }
    }

    private mutating func parseFor(_ pos: SourcePos) throws -> Node {
        var targets = [try expectName()]
        while isOp(",") {
            _ = advance()
            targets.append(try expectName())
        }
        guard isName("in") else { throw error("expected 'in' in for loop, found \(Parser.describe(current.kind))") }
        _ = advance()
        let iterable = try parseConditionalFree()
        var condition: Expr? = nil
        if isName("if") {
            _ = advance()
            condition = try parseOr()
        }
        if isName("recursive") { throw error("recursive loops are not supported") }
        try expectStatementEnd()
        let (body, stop) = try parseBody(until: ["else", "endfor"])
        guard let stop else { throw error("'for' block is never closed (expected 'endfor')", at: pos) }
        var otherwise: [Node] = []
        try expectStatementEnd()
        if stop.name == "else" {
            otherwise = try parseBlockBody(ends: ["endfor"], opener: "for", pos)
        }
        return .forLoop(ForLoop(targets: targets, iterable: iterable, condition: condition, body: body,
                                otherwise: otherwise, pos: pos))
    }

    private mutating func parseAssignTarget() throws -> AssignTarget {
        let first = try expectName()
        if isOp(".") {
            _ = advance()
            return .attribute(first, try expectName())
        }
        var names = [first]
        while isOp(",") {
            _ = advance()
            names.append(try expectName())
        }
        return .names(names)
    }

    private mutating func parseSet(_ pos: SourcePos) throws -> Node {
        let target = try parseAssignTarget()
        if isOp("=") {
            _ = advance()
            var value = try parseExpression()
            if isOp(",") {
                var items = [value]
                while isOp(",") {
                    _ = advance()
                    items.append(try parseExpression())
                }
                value = .tuple(items, value.pos)
            }
            try expectStatementEnd()
            return .assign(target, value, pos)
        }
        var filters: [(String, [Argument], SourcePos)] = []
        if isOp("|") {
            _ = advance()
            filters = try parseFilterChain()
        }
        try expectStatementEnd()
        let body = try parseBlockBody(ends: ["endset"], opener: "set", pos)
        return .assignBlock(target, filters: filters, body: body, pos)
    }

    private mutating func parseParameters() throws -> [(String, Expr?)] {
        var params: [(String, Expr?)] = []
        try expectOp("(")
        while !isOp(")") {
            let name = try expectName()
            var def: Expr? = nil
            if isOp("=") {
                _ = advance()
                def = try parseExpression()
            }
            params.append((name, def))
            if !isOp(")") { try expectOp(",") }
        }
        _ = advance()
        return params
    }

    private mutating func parseMacro(_ pos: SourcePos) throws -> Node {
        let name = try expectName()
        let params = try parseParameters()
        try expectStatementEnd()
        let body = try parseBlockBody(ends: ["endmacro"], opener: "macro", pos)
        return .macro(MacroDefinition(name: name, parameters: params, body: body, pos: pos))
    }

    private mutating func parseCallBlock(_ pos: SourcePos) throws -> Node {
        var params: [(String, Expr?)] = []
        if isOp("(") { params = try parseParameters() }
        let call = try parseExpression()
        guard case .call = call else { throw error("expected a macro call after 'call'", at: call.pos) }
        try expectStatementEnd()
        let body = try parseBlockBody(ends: ["endcall"], opener: "call", pos)
        return .callBlock(call: call, parameters: params, body: body, pos)
    }

    /// `name(args) | name | ...` (after a `|` or in `{% filter %}`).
    private mutating func parseFilterChain() throws -> [(String, [Argument], SourcePos)] {
        var filters: [(String, [Argument], SourcePos)] = []
        while true {
            let pos = current.pos
            var name = try expectName()
            while isOp(".") {
                _ = advance()
                name += "." + (try expectName())
            }
            let args = isOp("(") ? try parseArguments() : []
            filters.append((name, args, pos))
            guard isOp("|") else { return filters }
            _ = advance()
        }
    }

    // MARK: - Expressions

    private mutating func enter() throws {
        depth += 1
        if depth > Parser.maxDepth { throw error("expression nested too deeply") }
    }

    mutating func parseExpression() throws -> Expr {
        try enter()
        defer { depth -= 1 }
        let pos = current.pos
        let value = try parseOr()
        if isName("if") {
            _ = advance()
            let condition = try parseOr()
            var otherwise: Expr? = nil
            if isName("else") {
                _ = advance()
                otherwise = try parseExpression()
            }
            return .conditional(then: value, condition: condition, otherwise: otherwise, pos)
        }
        return value
    }

    /// An expression without a trailing `x if c` (for loop iterables, where `if` filters).
    private mutating func parseConditionalFree() throws -> Expr { try parseOr() }

    private mutating func parseOr() throws -> Expr {
        var left = try parseAnd()
        while isName("or") {
            let pos = advance().pos
            left = .binary("or", left, try parseAnd(), pos)
        }
        return left
    }

    private mutating func parseAnd() throws -> Expr {
        var left = try parseNot()
        while isName("and") {
            let pos = advance().pos
            left = .binary("and", left, try parseNot(), pos)
        }
        return left
    }

    private mutating func parseNot() throws -> Expr {
        if isName("not") {
            let pos = advance().pos
            try enter()
            defer { depth -= 1 }
            return .unary("not", try parseNot(), pos)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> Expr {
        var left = try parseMath1()
        while true {
            let pos = current.pos
            if case .op(let o) = current.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                _ = advance()
                left = .binary(o, left, try parseMath1(), pos)
            } else if isName("in") {
                _ = advance()
                left = .binary("in", left, try parseMath1(), pos)
            } else if isName("not"), peekIsName("in", offset: 1) {
                _ = advance()
                _ = advance()
                left = .binary("not in", left, try parseMath1(), pos)
            } else {
                return left
            }
        }
    }

    private mutating func parseMath1() throws -> Expr {
        var left = try parseConcat()
        while case .op(let o) = current.kind, o == "+" || o == "-" {
            let pos = advance().pos
            left = .binary(o, left, try parseConcat(), pos)
        }
        return left
    }

    private mutating func parseConcat() throws -> Expr {
        var left = try parseMath2()
        while isOp("~") {
            let pos = advance().pos
            left = .binary("~", left, try parseMath2(), pos)
        }
        return left
    }

    private mutating func parseMath2() throws -> Expr {
        var left = try parsePow()
        while case .op(let o) = current.kind, ["*", "/", "//", "%"].contains(o) {
            let pos = advance().pos
            left = .binary(o, left, try parsePow(), pos)
        }
        return left
    }

    private mutating func parsePow() throws -> Expr {
        var left = try parseUnary()
        while isOp("**") {
            let pos = advance().pos
            left = .binary("**", left, try parseUnary(), pos)
        }
        return left
    }

    /// `-x | f` filters the negated value (Jinja applies filters after the whole unary).
    private mutating func parseUnary(withFilter: Bool = true) throws -> Expr {
        if case .op(let o) = current.kind, o == "-" || o == "+" {
            let pos = advance().pos
            try enter()
            defer { depth -= 1 }
            let e = Expr.unary(o, try parseUnary(withFilter: false), pos)
            return withFilter ? try parseFilterAndTest(e) : e
        }
        let e = try parsePostfix(try parsePrimary())
        return withFilter ? try parseFilterAndTest(e) : e
    }

    private mutating func parseFilterAndTest(_ base: Expr) throws -> Expr {
        var e = base
        while true {
            if isOp("|") {
                _ = advance()
                for (name, args, pos) in try parseFilterChainSingle() { e = .filter(e, name, args, pos) }
            } else if isName("is") {
                let pos = advance().pos
                var negated = false
                if isName("not") {
                    _ = advance()
                    negated = true
                }
                let name: String
                switch current.kind {
                case .name(let n): name = n; _ = advance()
                case .op("=="): name = "=="; _ = advance()
                default: throw error("expected a test name after 'is', found \(Parser.describe(current.kind))")
                }
                var args: [Argument] = []
                if isOp("(") {
                    args = try parseArguments()
                } else if startsPrimary() {
                    // `x is divisibleby 3`, `x is sameas none`: one bare argument.
                    args = [.positional(try parsePostfix(try parsePrimary()))]
                }
                e = .test(e, name, args, negated: negated, pos)
            } else {
                return e
            }
        }
    }

    private func startsPrimary() -> Bool {
        switch current.kind {
        case .string, .int, .float: return true
        case .name(let n): return !["and", "or", "not", "in", "is", "if", "else", "recursive"].contains(n)
        case .op(let o): return o == "(" || o == "[" || o == "{"
        default: return false
        }
    }

    private mutating func parseFilterChainSingle() throws -> [(String, [Argument], SourcePos)] {
        let pos = current.pos
        var name = try expectName()
        while isOp(".") {
            _ = advance()
            name += "." + (try expectName())
        }
        let args = isOp("(") ? try parseArguments() : []
        return [(name, args, pos)]
    }

    private mutating func parseArguments() throws -> [Argument] {
        try expectOp("(")
        try enter()
        defer { depth -= 1 }
        var args: [Argument] = []
        while !isOp(")") {
            if case .name(let n) = current.kind, p + 1 < tokens.count, case .op("=") = tokens[p + 1].kind {
                _ = advance()
                _ = advance()
                args.append(.named(n, try parseExpression()))
            } else {
                args.append(.positional(try parseExpression()))
            }
            if !isOp(")") { try expectOp(",") }
        }
        _ = advance()
        return args
    }

    private mutating func parsePostfix(_ base: Expr) throws -> Expr {
        var e = base
        while true {
            if isOp(".") {
                let pos = advance().pos
                switch current.kind {
                case .name(let n):
                    _ = advance()
                    e = .attribute(e, n, pos)
                case .int(let n):
                    _ = advance()
                    e = .item(e, .literal(.int(n), pos), pos)
                default:
                    throw error("expected an attribute name after '.', found \(Parser.describe(current.kind))")
                }
            } else if isOp("[") {
                let pos = advance().pos
                try enter()
                defer { depth -= 1 }
                e = try parseSubscript(e, pos)
            } else if isOp("(") {
                let pos = current.pos
                e = .call(e, try parseArguments(), pos)
            } else {
                return e
            }
        }
    }

    private mutating func parseSubscript(_ base: Expr, _ pos: SourcePos) throws -> Expr {
        var parts: [Expr?] = []
        var current: Expr? = nil
        var isSlice = false
        while !isOp("]") {
            if isOp(":") {
                _ = advance()
                parts.append(current)
                current = nil
                isSlice = true
                continue
            }
            if current != nil { throw error("expected ':' or ']' in subscript") }
            current = try parseExpression()
        }
        _ = advance()
        if !isSlice {
            guard let index = current else { throw error("empty subscript", at: pos) }
            return .item(base, index, pos)
        }
        parts.append(current)
        guard parts.count <= 3 else { throw error("too many ':' in slice", at: pos) }
        while parts.count < 3 { parts.append(nil) }
        return .slice(base, parts[0], parts[1], parts[2], pos)
    }

    private mutating func parsePrimary() throws -> Expr {
        try enter()
        defer { depth -= 1 }
        let t = current
        switch t.kind {
        case .string(var s):
            _ = advance()
            // Adjacent string literals concatenate, as in Python.
            while case .string(let more) = current.kind {
                s += more
                _ = advance()
            }
            return .literal(.string(s), t.pos)
        case .int(let n):
            _ = advance()
            return .literal(.int(n), t.pos)
        case .float(let d):
            _ = advance()
            return .literal(.double(d), t.pos)
        case .name(let n):
            _ = advance()
            switch n {
            case "true", "True": return .literal(.bool(true), t.pos)
            case "false", "False": return .literal(.bool(false), t.pos)
            case "none", "None": return .literal(.none, t.pos)
            default: return .name(n, t.pos)
            }
        case .op("("):
            _ = advance()
            if isOp(")") {
                _ = advance()
                return .tuple([], t.pos)
            }
            let first = try parseExpression()
            if isOp(")") {
                _ = advance()
                return first
            }
            var items = [first]
            while isOp(",") {
                _ = advance()
                if isOp(")") { break }
                items.append(try parseExpression())
            }
            try expectOp(")")
            return .tuple(items, t.pos)
        case .op("["):
            _ = advance()
            var items: [Expr] = []
            while !isOp("]") {
                items.append(try parseExpression())
                if !isOp("]") { try expectOp(",") }
            }
            _ = advance()
            return .list(items, t.pos)
        case .op("{"):
            _ = advance()
            var pairs: [(Expr, Expr)] = []
            while !isOp("}") {
                let k = try parseExpression()
                try expectOp(":")
                pairs.append((k, try parseExpression()))
                if !isOp("}") { try expectOp(",") }
            }
            _ = advance()
            return .dict(pairs, t.pos)
        default:
            throw error("expected an expression, found \(Parser.describe(t.kind))")
        }
    }
}
