import Foundation

/// Self-contained SVG charts (no dependencies, no JavaScript): the one place Affinity draws. Used by
/// `affinity sweep`, `index sweep`, `tradeoff`, `analyze`, `report` and the service's dashboard.
///
/// Every chart returns one `<svg>` element with a `viewBox`, so it scales inside an HTML page and
/// also opens on its own in a browser. Text is escaped here; callers pass plain strings.
public enum SVG {
    /// `s` escaped for SVG/HTML text and attribute values.
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A number as SVG coordinates want it: one decimal, no exponent.
    static func f(_ v: Double) -> String { String(format: "%.1f", v.isFinite ? v : 0) }

    static func open(width: Double, height: Double, title: String) -> String {
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
        s += "font-family=\"sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"\(escape(title))\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        if !title.isEmpty { s += "<text x=\"10\" y=\"22\" font-size=\"14\" font-weight=\"bold\">\(escape(title))</text>\n" }
        return s
    }
}

/// Colours that stay distinguishable for the common colour-vision deficiencies.
public enum Palette {
    /// Okabe & Ito's eight categorical colours (black last), the usual colour-blind-safe set.
    public static let categorical = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
    /// The colour for "everything else" in a categorical legend.
    public static let other = "#BBBBBB"

    /// Categorical colour `n` (wraps around).
    public static func category(_ n: Int) -> String { categorical[((n % categorical.count) + categorical.count) % categorical.count] }

    /// Viridis anchors (perceptually uniform, readable in grey and for colour-blind readers).
    static let viridis: [(Double, Double, Double)] = [
        (0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530), (0.207, 0.372, 0.553), (0.164, 0.471, 0.558),
        (0.128, 0.567, 0.551), (0.135, 0.659, 0.518), (0.267, 0.749, 0.441), (0.478, 0.821, 0.318), (0.741, 0.873, 0.150),
        (0.993, 0.906, 0.144),
    ]

    /// A sequential colour for `t` in [0, 1] (viridis).
    public static func sequential(_ t: Double) -> String { interpolate(viridis, t) }

    /// Blue - white - orange (both ends stay apart for red-green deficiencies): `t` in [-1, 1].
    public static func diverging(_ t: Double) -> String {
        let stops: [(Double, Double, Double)] = [(0.020, 0.443, 0.690), (0.573, 0.773, 0.871), (0.969, 0.969, 0.969),
                                                  (0.992, 0.722, 0.388), (0.702, 0.345, 0.024)]
        return interpolate(stops, (max(-1, min(1, t.isFinite ? t : 0)) + 1) / 2)
    }

    static func interpolate(_ stops: [(Double, Double, Double)], _ t: Double) -> String {
        let x = max(0, min(1, t.isFinite ? t : 0)) * Double(stops.count - 1)
        let i = min(Int(x), stops.count - 2), w = x - Double(i)
        let a = stops[i], b = stops[i + 1]
        func c(_ u: Double, _ v: Double) -> Int { Int(((u + (v - u) * w) * 255).rounded()) }
        return String(format: "#%02X%02X%02X", c(a.0, b.0), c(a.1, b.1), c(a.2, b.2))
    }

    /// Black or white, whichever reads on `hex` (a `#RRGGBB` colour).
    public static func textColour(on hex: String) -> String {
        let v = UInt32(hex.dropFirst(), radix: 16) ?? 0
        let r = Double((v >> 16) & 0xFF), g = Double((v >> 8) & 0xFF), b = Double(v & 0xFF)
        return 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#000000" : "#FFFFFF"
    }
}

/// One axis: a data range mapped onto pixels, linear or log10, with "nice" ticks.
public struct Axis: Sendable {
    public var min: Double
    public var max: Double
    public var log: Bool

    /// An axis covering `values` (padded a little when linear, whole decades when log).
    public init(covering values: [Double], log: Bool = false, padding: Double = 0.05, includeZero: Bool = false) {
        self.log = log
        let t = values.filter(\.isFinite).map { log ? Foundation.log10(Swift.max($0, 1e-12)) : $0 }
        var lo = t.min() ?? 0, hi = t.max() ?? 1
        if includeZero && !log { lo = Swift.min(lo, 0); hi = Swift.max(hi, 0) }
        if log {
            lo = lo.rounded(.down); hi = hi.rounded(.up)
        } else {
            let pad = Swift.max((hi - lo) * padding, 1e-3)
            if !(includeZero && lo == 0) { lo -= pad }
            hi += pad
        }
        if hi <= lo { hi = lo + 1 }
        min = lo
        max = hi
    }

    /// Position of `v` in [0, 1] along the axis.
    public func fraction(_ v: Double) -> Double {
        let t = log ? Foundation.log10(Swift.max(v, 1e-12)) : v
        return (t - min) / (max - min)
    }

    /// Tick values (in data units) and their labels.
    public func ticks() -> [(value: Double, text: String)] {
        if log {
            return (Int(min)...Int(max)).map { e -> (value: Double, text: String) in
                let v = pow(10.0, Double(e))
                let text: String = e >= -2 && e < 0 ? String(format: "%g", v) : (e >= 0 && e < 5 ? String(Int(v)) : "1e\(e)")
                return (v, text)
            }
        }
        // The round step (1, 2 or 5 times a power of ten) that gives closest to six ticks.
        let span: Double = max - min
        let magnitude: Double = pow(10.0, Foundation.log10(span / 6).rounded(.down))
        let step: Double = [1.0, 2.0, 5.0, 10.0].map { $0 * magnitude }.min { abs(span / $0 - 6) < abs(span / $1 - 6) }!
        let decimals = Swift.max(0, Int((-Foundation.log10(step)).rounded(.up)))
        let format = "%.\(decimals)f"
        return stride(from: (min / step).rounded(.up) * step, through: max + step * 1e-9, by: step).map { v -> (value: Double, text: String) in
            (v, String(format: format, abs(v) < step * 1e-9 ? 0 : v))
        }
    }
}

/// The plotting area of an x-y chart: margins, axes, tick labels and axis titles.
struct Frame {
    var width = 640.0, height = 420.0, left = 70.0, bottom = 50.0, top = 40.0, right = 20.0
    var x: Axis
    var y: Axis

    func px(_ v: Double) -> Double { left + x.fraction(v) * (width - left - right) }
    func py(_ v: Double) -> Double { height - bottom - y.fraction(v) * (height - top - bottom) }

    func axes(xTitle: String, yTitle: String, xTicks: Bool = true) -> String {
        let f = SVG.f
        var s = "<line x1=\"\(f(left))\" y1=\"\(f(height - bottom))\" x2=\"\(f(width - right))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(height - bottom))\" stroke=\"black\"/>\n"
        s += "<text x=\"\(f((left + width - right) / 2))\" y=\"\(f(height - 12))\" text-anchor=\"middle\">\(SVG.escape(xTitle))</text>\n"
        s += "<text x=\"18\" y=\"\(f(height / 2))\" transform=\"rotate(-90 18 \(f(height / 2)))\" text-anchor=\"middle\">\(SVG.escape(yTitle))</text>\n"
        for t in y.ticks() where t.value >= y.min - 1e-12 {
            s += "<line x1=\"\(f(left - 4))\" y1=\"\(f(py(t.value)))\" x2=\"\(f(left))\" y2=\"\(f(py(t.value)))\" stroke=\"black\"/>"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(py(t.value) + 4))\" text-anchor=\"end\">\(t.text)</text>\n"
        }
        if xTicks {
            for t in x.ticks() where t.value >= x.min - 1e-12 {
                s += "<line x1=\"\(f(px(t.value)))\" y1=\"\(f(height - bottom))\" x2=\"\(f(px(t.value)))\" y2=\"\(f(height - bottom + 4))\" stroke=\"black\"/>"
                s += "<text x=\"\(f(px(t.value)))\" y=\"\(f(height - bottom + 16))\" text-anchor=\"middle\">\(t.text)</text>\n"
            }
        }
        return s
    }

    /// A legend of coloured swatches in the top-right corner.
    func legend(_ entries: [(name: String, colour: String)], line: Bool) -> String {
        guard !entries.isEmpty else { return "" }
        let longest = entries.map(\.name.count).max() ?? 0
        let boxWidth = Swift.min(Double(longest) * 6.6 + 34, width * 0.45)
        let x0 = width - right - boxWidth
        var s = "<rect x=\"\(SVG.f(x0 - 4))\" y=\"\(SVG.f(top - 12))\" width=\"\(SVG.f(boxWidth + 4))\" height=\"\(SVG.f(16 * Double(entries.count) + 6))\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n"
        for (n, e) in entries.enumerated() {
            let ly = top + 16 * Double(n)
            if line {
                s += "<line x1=\"\(SVG.f(x0))\" y1=\"\(SVG.f(ly))\" x2=\"\(SVG.f(x0 + 20))\" y2=\"\(SVG.f(ly))\" stroke=\"\(e.colour)\" stroke-width=\"2\"/>"
            } else {
                s += "<rect x=\"\(SVG.f(x0 + 5))\" y=\"\(SVG.f(ly - 5))\" width=\"10\" height=\"10\" fill=\"\(e.colour)\"/>"
            }
            s += "<text x=\"\(SVG.f(x0 + 25))\" y=\"\(SVG.f(ly + 4))\">\(SVG.escape(e.name))</text>\n"
        }
        return s
    }
}
