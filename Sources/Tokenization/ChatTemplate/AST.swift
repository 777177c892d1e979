/// Parsed template: expressions and statements, each carrying its source position.

enum Literal: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
}

enum Argument: Sendable {
    case positional(Expr)
    case named(String, Expr)
}

indirect enum Expr: Sendable {
    case literal(Literal, SourcePos)
    case name(String, SourcePos)
    case list([Expr], SourcePos)
    case tuple([Expr], SourcePos)
    case dict([(Expr, Expr)], SourcePos)
    case attribute(Expr, String, SourcePos)
    case item(Expr, Expr, SourcePos)
    case slice(Expr, Expr?, Expr?, Expr?, SourcePos)
    case call(Expr, [Argument], SourcePos)
    case filter(Expr, String, [Argument], SourcePos)
    case test(Expr, String, [Argument], negated: Bool, SourcePos)
    case unary(String, Expr, SourcePos)
    case binary(String, Expr, Expr, SourcePos)
    case conditional(then: Expr, condition: Expr, otherwise: Expr?, SourcePos)

    var pos: SourcePos {
        switch self {
        case .literal(_, let p), .name(_, let p), .list(_, let p), .tuple(_, let p), .dict(_, let p),
            .attribute(_, _, let p), .item(_, _, let p), .slice(_, _, _, _, let p), .call(_, _, let p),
            .filter(_, _, _, let p), .test(_, _, _, _, let p), .unary(_, _, let p), .binary(_, _, _, let p),
            .conditional(_, _, _, let p):
            return p
        }
    }
}

enum AssignTarget: Sendable {
    case names([String])
    case attribute(String, String)   // ns.attr
}

struct MacroDefinition: Sendable {
    var name: String
    var parameters: [(String, Expr?)]
    var body: [Node]
    var pos: SourcePos
}

struct ForLoop: Sendable {
    var targets: [String]
    var iterable: Expr
    var condition: Expr?
    var body: [Node]
    var otherwise: [Node]
    var pos: SourcePos
}

indirect enum Node: Sendable {
    case text(String)
    case output(Expr, SourcePos)
    case conditional([(Expr, [Node])], otherwise: [Node], SourcePos)
    case forLoop(ForLoop)
    case assign(AssignTarget, Expr, SourcePos)
    case assignBlock(AssignTarget, filters: [(String, [Argument], SourcePos)], body: [Node], SourcePos)
    case macro(MacroDefinition)
    case callBlock(call: Expr, parameters: [(String, Expr?)], body: [Node], SourcePos)
    case filterBlock(filters: [(String, [Argument], SourcePos)], body: [Node], SourcePos)
    case breakLoop(SourcePos)
    case continueLoop(SourcePos)
}
