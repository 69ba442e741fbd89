import Foundation

/// One line of a plot: points in drawing order, each with an optional label.
struct PlotSeries {
    var name: String
    var points: [(x: Double, y: Double, label: String)]
}

/// A small self-contained SVG line plot (no dependencies): one or more series, linear or log10 axes,
/// tick labels, a legend when there is more than one series.
func linePlot(_ series: [PlotSeries], title: String, xTitle: String, yTitle: String, xLog: Bool = false, yLog: Bool = false) -> String {
    let w = 640.0, h = 420.0, left = 70.0, bottom = 50.0, top = 40.0, right = 20.0
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    func tx(_ v: Double) -> Double { xLog ? log10(max(v, 1e-12)) : v }
    func ty(_ v: Double) -> Double { yLog ? log10(max(v, 1e-12)) : v }
    let xs = series.flatMap { $0.points.map { tx($0.x) } }, ys = series.flatMap { $0.points.map { ty($0.y) } }
    var minX = xs.min() ?? 0, maxX = xs.max() ?? 1, minY = ys.min() ?? 0, maxY = ys.max() ?? 1
    if xLog { minX = floor(minX); maxX = ceil(maxX) } else { let pad = max((maxX - minX) * 0.05, 1e-3); minX -= pad; maxX += pad }
    if yLog { minY = floor(minY); maxY = ceil(maxY) } else { let pad = max((maxY - minY) * 0.08, 1e-3); minY -= pad; maxY += pad }
    if maxX <= minX { maxX = minX + 1 }
    if maxY <= minY { maxY = minY + 1 }
    func px(_ v: Double) -> Double { left + (tx(v) - minX) / (maxX - minX) * (w - left - right) }
    func py(_ v: Double) -> Double { h - bottom - (ty(v) - minY) / (maxY - minY) * (h - top - bottom) }
    var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
    s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"\(left)\" y=\"24\" font-size=\"14\">\(title)</text>\n"
    s += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
    s += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"black\"/>\n"
    s += "<text x=\"\(w / 2)\" y=\"\(h - 12)\" text-anchor=\"middle\">\(xTitle)</text>\n"
    s += "<text x=\"18\" y=\"\(h / 2)\" transform=\"rotate(-90 18 \(h / 2))\" text-anchor=\"middle\">\(yTitle)</text>\n"
    func ticks(_ lo: Double, _ hi: Double, log: Bool) -> [(value: Double, text: String)] {
        if log {
            return (Int(lo)...Int(hi)).map { e -> (value: Double, text: String) in
                let v = pow(10.0, Double(e))
                let text: String = e >= -2 && e < 0 ? String(format: "%g", v) : (e >= 0 && e < 5 ? String(Int(v)) : "1e\(e)")
                return (v, text)
            }
        }
        let raw: Double = (hi - lo) / 5
        let magnitude: Double = pow(10.0, floor(log10(raw)))
        let step: Double = [1.0, 2.0, 5.0, 10.0].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        let format = step < 0.1 ? "%.2f" : "%.1f"
        return stride(from: (lo / step).rounded(.up) * step, through: hi, by: step).map { v -> (value: Double, text: String) in
            (v, String(format: format, v))
        }
    }
    for t in ticks(minY, maxY, log: yLog) {
        s += "<text x=\"\(left - 6)\" y=\"\(py(t.value) + 4)\" text-anchor=\"end\">\(t.text)</text>\n"
    }
    for t in ticks(minX, maxX, log: xLog) {
        s += "<text x=\"\(px(t.value))\" y=\"\(h - bottom + 16)\" text-anchor=\"middle\">\(t.text)</text>\n"
    }
    for (n, line) in series.enumerated() {
        let color = colors[n % colors.count]
        let path = line.points.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
        s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
        for p in line.points {
            s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"/>", px(p.x), py(p.y), color)
            if !p.label.isEmpty { s += String(format: "<text x=\"%.1f\" y=\"%.1f\">%@</text>", px(p.x) + 5, py(p.y) - 5, p.label) }
            s += "\n"
        }
        if series.count > 1 {
            let ly = top + 16 * Double(n)
            s += "<line x1=\"\(w - right - 150)\" y1=\"\(ly)\" x2=\"\(w - right - 130)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            s += "<text x=\"\(w - right - 125)\" y=\"\(ly + 4)\">\(line.name)</text>\n"
        }
    }
    return s + "</svg>\n"
}
