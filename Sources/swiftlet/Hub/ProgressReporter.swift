import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Download progress on standard error: a redrawn bar with bytes, rate and time left on a
/// terminal; otherwise (logs, CI, pipes) a plain line every 10 % and at the end.
final class ProgressReporter: @unchecked Sendable {
    let label: String
    let interactive: Bool
    private var total: Int?
    private var startBytes = 0
    private var done = 0
    private var started = Date()
    private var lastDraw = Date.distantPast
    private var lastDecile = -1
    private var open = false

    init(label: String, interactive: Bool = isatty(STDERR_FILENO) == 1) {
        self.label = label
        self.interactive = interactive
    }

    func start(done: Int, total: Int?) {
        self.total = total
        startBytes = done
        self.done = done
        started = Date()
        if done > 0, !interactive { printError("\(label): resuming at \(formatBytes(done))") }
        draw(force: true)
    }

    func update(done: Int) {
        self.done = done
        draw(force: false)
    }

    /// A message between redraws (e.g. a lost connection), on its own line.
    func note(_ message: String) {
        if interactive && open { FileHandle.standardError.write(Data("\n".utf8)); open = false }
        printError("\(label): \(message)")
    }

    func finish() {
        draw(force: true)
        if interactive && open { FileHandle.standardError.write(Data("\n".utf8)) }
        open = false
    }

    private func draw(force: Bool) {
        let now = Date()
        let seconds = now.timeIntervalSince(started)
        let rate = seconds > 0 ? Double(done - startBytes) / seconds : 0
        var text = formatBytes(done)
        var fraction: Double?
        if let total, total > 0 {
            fraction = min(1, Double(done) / Double(total))
            text += " / " + formatBytes(total)
        }
        text += "  " + formatBytes(Int(rate)) + "/s"
        if let total, rate > 0, done < total { text += "  ETA " + Self.duration(Double(total - done) / rate) }
        if interactive {
            guard force || now.timeIntervalSince(lastDraw) >= 0.1 else { return }
            lastDraw = now
            var bar = ""
            if let fraction {
                let width = 24, filled = Int(fraction * Double(width))
                bar = String(format: "%3d%% [", Int(fraction * 100)) + String(repeating: "=", count: filled)
                    + String(repeating: " ", count: width - filled) + "] "
            }
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + label + " " + bar + text).utf8))
            open = true
        } else {
            let decile = fraction.map { Int($0 * 10) } ?? Int(done >> 26)
            guard decile != lastDecile else { return }
            lastDecile = decile
            printError("\(label): " + (fraction.map { "\(Int($0 * 100))% " } ?? "") + text)
        }
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
