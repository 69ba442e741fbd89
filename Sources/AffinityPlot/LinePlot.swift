import Foundation

/// One line of a plot: points in drawing order, each with an optional label.
public struct PlotSeries: Sendable {
    public var name: String
    public var points: [(x: Double, y: Double, label: String)]
    public init(name: String, points: [(x: Double, y: Double, label: String)]) {
        self.name = name
        self.points = points
    }
}

/// An SVG line plot: one or more series, linear or log10 axes, tick labels, a legend when there is
/// more than one series.
public func linePlot(_ series: [PlotSeries], title: String, xTitle: String, yTitle: String, xLog: Bool = false, yLog: Bool = false,
                     size: (width: Double, height: Double) = (640, 420)) -> String {
    var frame = Frame(x: Axis(covering: series.flatMap { $0.points.map(\.x) }, log: xLog),
                      y: Axis(covering: series.flatMap { $0.points.map(\.y) }, log: yLog, padding: 0.08))
    frame.width = size.width
    frame.height = size.height
    var s = SVG.open(width: frame.width, height: frame.height, title: title)
    s += frame.axes(xTitle: xTitle, yTitle: yTitle)
    for (n, line) in series.enumerated() {
        let colour = Palette.category(n)
        let path = line.points.map { "\(SVG.f(frame.px($0.x))),\(SVG.f(frame.py($0.y)))" }.joined(separator: " ")
        s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\"/>\n"
        for p in line.points {
            s += "<circle cx=\"\(SVG.f(frame.px(p.x)))\" cy=\"\(SVG.f(frame.py(p.y)))\" r=\"3\" fill=\"\(colour)\"/>"
            if !p.label.isEmpty {
                s += "<text x=\"\(SVG.f(frame.px(p.x) + 5))\" y=\"\(SVG.f(frame.py(p.y) - 5))\">\(SVG.escape(p.label))</text>"
            }
            s += "\n"
        }
    }
    if series.count > 1 { s += frame.legend(series.enumerated().map { ($0.element.name, Palette.category($0.offset)) }, line: true) }
    return s + "</svg>\n"
}
