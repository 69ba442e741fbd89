import Foundation

/// One point of a scatter plot: its position, its category (an index into the plot's categories,
/// or nil for "other") and the text a browser shows when the pointer rests on it.
public struct ScatterPoint: Sendable {
    public var x: Double
    public var y: Double
    public var category: Int?
    public var label: String
    public init(x: Double, y: Double, category: Int?, label: String) {
        self.x = x
        self.y = y
        self.category = category
        self.label = label
    }
}

/// An SVG scatter plot (a t-SNE or PCA map): one dot per point coloured by category, the point's
/// label as its hover title, a legend of the categories. Points of no category are drawn first, in
/// grey, so coloured ones stay visible. Axes carry no ticks when `axisTitles` is nil (map
/// coordinates mean nothing on their own).
public func scatterPlot(_ points: [ScatterPoint], categories: [String], title: String, axisTitles: (x: String, y: String)? = nil,
                        otherName: String = "other", size: (width: Double, height: Double) = (720, 600), radius: Double = 2.6) -> String {
    var frame = Frame(x: Axis(covering: points.map(\.x), padding: 0.03), y: Axis(covering: points.map(\.y), padding: 0.03))
    frame.width = size.width
    frame.height = size.height
    if axisTitles == nil { frame.left = 20; frame.bottom = 20 }
    var s = SVG.open(width: frame.width, height: frame.height, title: title)
    if let axisTitles { s += frame.axes(xTitle: axisTitles.x, yTitle: axisTitles.y) }
    let ordered = points.filter { $0.category == nil } + points.filter { $0.category != nil }
    for p in ordered {
        let colour = p.category.map(Palette.category) ?? Palette.other
        s += "<circle cx=\"\(SVG.f(frame.px(p.x)))\" cy=\"\(SVG.f(frame.py(p.y)))\" r=\"\(SVG.f(radius))\" fill=\"\(colour)\" fill-opacity=\"0.8\">"
        s += p.label.isEmpty ? "</circle>\n" : "<title>\(SVG.escape(p.label))</title></circle>\n"
    }
    var legend = categories.enumerated().map { (name: $0.element, colour: Palette.category($0.offset)) }
    if points.contains(where: { $0.category == nil }) { legend.append((otherName, Palette.other)) }
    s += frame.legend(legend, line: false)
    return s + "</svg>\n"
}

/// One group of bars: a label on the x axis and one value per series.
public struct BarGroup: Sendable {
    public var label: String
    public var values: [Double]
    public init(label: String, values: [Double]) {
        self.label = label
        self.values = values
    }
}

/// An SVG bar chart: groups along x, one bar per series in each group, a legend when there is more
/// than one series. Values are drawn from zero; each bar's value is its hover title.
public func barChart(_ groups: [BarGroup], series: [String], title: String, xTitle: String, yTitle: String,
                     size: (width: Double, height: Double) = (640, 420), valueFormat: String = "%.3f") -> String {
    var frame = Frame(x: Axis(covering: [0, 1], padding: 0), y: Axis(covering: groups.flatMap(\.values), padding: 0.08, includeZero: true))
    frame.width = size.width
    frame.height = size.height
    var s = SVG.open(width: frame.width, height: frame.height, title: title)
    s += frame.axes(xTitle: xTitle, yTitle: yTitle, xTicks: false)
    let plotWidth = frame.width - frame.left - frame.right
    let groupWidth = plotWidth / Double(max(groups.count, 1))
    let barWidth = groupWidth * 0.8 / Double(max(series.count, 1))
    let step = max(1, Int((Double(groups.count) * 7 * Double(groups.map(\.label.count).max() ?? 1) / plotWidth).rounded(.up)))
    for (g, group) in groups.enumerated() {
        let x0 = frame.left + Double(g) * groupWidth + groupWidth * 0.1
        for (n, v) in group.values.enumerated() where v.isFinite {
            let top = frame.py(max(v, 0)), zero = frame.py(0)
            s += "<rect x=\"\(SVG.f(x0 + Double(n) * barWidth))\" y=\"\(SVG.f(min(top, zero)))\" width=\"\(SVG.f(max(barWidth - 1, 1)))\" "
            s += "height=\"\(SVG.f(abs(zero - top)))\" fill=\"\(Palette.category(n))\">"
            let name = series.indices.contains(n) ? series[n] + ", " : ""
            s += "<title>\(SVG.escape(name + group.label)): \(String(format: valueFormat, v))</title></rect>\n"
        }
        if g % step == 0 {
            s += "<text x=\"\(SVG.f(x0 + groupWidth * 0.4))\" y=\"\(SVG.f(frame.height - frame.bottom + 16))\" text-anchor=\"middle\">\(SVG.escape(group.label))</text>\n"
        }
    }
    if series.count > 1 { s += frame.legend(series.enumerated().map { ($0.element, Palette.category($0.offset)) }, line: false) }
    return s + "</svg>\n"
}

/// Counts of `values` in `bins` equal-width bins over `range` (values outside it go to the end bins).
public func histogramCounts(_ values: [Double], bins: Int, range: ClosedRange<Double>) -> [Int] {
    precondition(bins > 0, "a histogram needs at least one bin")
    var counts = [Int](repeating: 0, count: bins)
    let width = (range.upperBound - range.lowerBound) / Double(bins)
    for v in values where v.isFinite {
        let position = width > 0 ? ((v - range.lowerBound) / width).rounded(.down) : 0
        counts[Int(min(max(position, 0), Double(bins - 1)))] += 1
    }
    return counts
}

/// An SVG histogram of several series over the same bins (share of each series' values per bin).
public func histogramPlot(_ series: [(name: String, values: [Double])], bins: Int, range: ClosedRange<Double>, title: String,
                          xTitle: String, size: (width: Double, height: Double) = (640, 360)) -> String {
    let counts = series.map { histogramCounts($0.values, bins: bins, range: range) }
    let width = (range.upperBound - range.lowerBound) / Double(bins)
    let groups = (0..<bins).map { b in
        BarGroup(label: String(format: "%.2g", range.lowerBound + Double(b) * width),
                 values: counts.enumerated().map { n, c in series[n].values.isEmpty ? 0 : Double(c[b]) / Double(series[n].values.count) })
    }
    return barChart(groups, series: series.map(\.name), title: title, xTitle: xTitle + " (bin start)", yTitle: "share of users", size: size)
}

/// An SVG heat map of `values` (rows x columns), each cell coloured on a diverging scale centred on
/// `centre` (or a sequential one when `centre` is nil), its value written in the cell and in its
/// hover title, with a colour bar.
public func heatMap(_ values: [[Double]], rowLabels: [String], columnLabels: [String], title: String,
                    centre: Double? = nil, cellSize: Double = 34, valueFormat: String = "%.2f") -> String {
    let finite = values.flatMap { $0 }.filter(\.isFinite)
    let lo = finite.min() ?? 0, hi = finite.max() ?? 1
    let labelWidth = Double(rowLabels.map(\.count).max() ?? 4) * 7 + 10
    let columnLabelHeight = Double(columnLabels.map(\.count).max() ?? 4) * 6 + 10
    let left = labelWidth + 10, top = 34 + columnLabelHeight
    let width = left + cellSize * Double(columnLabels.count) + 90
    let height = top + cellSize * Double(rowLabels.count) + 20
    func colour(_ v: Double) -> String {
        if let centre {
            let span = max(hi - centre, centre - lo, 1e-12)
            return Palette.diverging((v - centre) / span)
        }
        return Palette.sequential(hi > lo ? (v - lo) / (hi - lo) : 0.5)
    }
    var s = SVG.open(width: width, height: height, title: title)
    for (c, label) in columnLabels.enumerated() {
        let x = left + cellSize * (Double(c) + 0.5)
        s += "<text x=\"\(SVG.f(x))\" y=\"\(SVG.f(top - 6))\" transform=\"rotate(-60 \(SVG.f(x)) \(SVG.f(top - 6)))\" font-size=\"11\">\(SVG.escape(label))</text>\n"
    }
    for (r, row) in values.enumerated() {
        let y = top + cellSize * Double(r)
        s += "<text x=\"\(SVG.f(left - 6))\" y=\"\(SVG.f(y + cellSize / 2 + 4))\" text-anchor=\"end\" font-size=\"11\">\(SVG.escape(rowLabels[r]))</text>\n"
        for (c, v) in row.enumerated() {
            let x = left + cellSize * Double(c)
            let fill = v.isFinite ? colour(v) : "#FFFFFF"
            s += "<rect x=\"\(SVG.f(x))\" y=\"\(SVG.f(y))\" width=\"\(SVG.f(cellSize))\" height=\"\(SVG.f(cellSize))\" fill=\"\(fill)\" stroke=\"white\">"
            s += "<title>\(SVG.escape(rowLabels[r])) x \(SVG.escape(columnLabels[c])): \(v.isFinite ? String(format: valueFormat, v) : "n/a")</title></rect>"
            if v.isFinite && cellSize >= 30 {
                s += "<text x=\"\(SVG.f(x + cellSize / 2))\" y=\"\(SVG.f(y + cellSize / 2 + 3))\" text-anchor=\"middle\" font-size=\"9\" fill=\"\(Palette.textColour(on: fill))\">\(String(format: valueFormat, v))</text>"
            }
            s += "\n"
        }
    }
    // Colour bar.
    let barX = left + cellSize * Double(columnLabels.count) + 20, barHeight = max(cellSize * Double(rowLabels.count), 60)
    for step in 0..<20 {
        let t = 1 - Double(step) / 19
        let v = lo + (hi - lo) * t
        s += "<rect x=\"\(SVG.f(barX))\" y=\"\(SVG.f(top + barHeight * Double(step) / 20))\" width=\"14\" height=\"\(SVG.f(barHeight / 20 + 0.5))\" fill=\"\(colour(v))\"/>"
    }
    s += "\n<text x=\"\(SVG.f(barX + 18))\" y=\"\(SVG.f(top + 8))\" font-size=\"10\">\(String(format: valueFormat, hi))</text>"
    s += "<text x=\"\(SVG.f(barX + 18))\" y=\"\(SVG.f(top + barHeight))\" font-size=\"10\">\(String(format: valueFormat, lo))</text>\n"
    return s + "</svg>\n"
}
