import Foundation
import Testing
@testable import AffinityPlot

/// Issue "Seeing the embeddings": the charts every page draws with.
@Suite struct PlotTests {
    @Test func escapingKeepsMarkupOut() {
        #expect(SVG.escape("<b>\"Tom & Jerry's\"</b>") == "&lt;b&gt;&quot;Tom &amp; Jerry&#39;s&quot;&lt;/b&gt;")
        let page = HTML.table([.init("title"), .init("n", numeric: true)], [["<script>", "3"]])
        #expect(!page.contains("<script>"))
        #expect(page.contains("&lt;script&gt;"))
        #expect(page.contains("<td class=\"num\">3</td>"))
    }

    @Test func linearTicksAreRoundAndInsideTheAxis() {
        let axis = Axis(covering: [0.12, 0.38], padding: 0)
        let ticks = axis.ticks()
        #expect(ticks.map(\.text) == ["0.15", "0.20", "0.25", "0.30", "0.35"])
        #expect(ticks.allSatisfy { $0.value >= axis.min && $0.value <= axis.max + 1e-12 })
        let log = Axis(covering: [3, 4_000], log: true)
        #expect(log.ticks().map(\.text) == ["1", "10", "100", "1000", "10000"])
    }

    @Test func scatterGivesEveryPointItsHoverTitleAndALegend() {
        let points = [ScatterPoint(x: 0, y: 0, category: 0, label: "Toy Story (1995)"),
                      ScatterPoint(x: 1, y: 1, category: 1, label: "Heat & Dust"),
                      ScatterPoint(x: 2, y: 0.5, category: nil, label: "")]
        let svg = scatterPlot(points, categories: ["Animation", "Drama"], title: "map")
        #expect(svg.components(separatedBy: "<circle").count - 1 == 3)
        #expect(svg.contains("<title>Toy Story (1995)</title>"))
        #expect(svg.contains("<title>Heat &amp; Dust</title>"))
        #expect(svg.contains(">Animation</text>") && svg.contains(">Drama</text>") && svg.contains(">other</text>"))
        // Uncategorised points are drawn first, under the coloured ones.
        #expect(svg.range(of: Palette.other)!.lowerBound < svg.range(of: Palette.category(0))!.lowerBound)
    }

    @Test func histogramCountsClampToTheEndBins() {
        #expect(histogramCounts([0, 0.05, 0.1, 0.55, 1, 1.5, -1, .nan], bins: 10, range: 0...1) == [3, 1, 0, 0, 0, 1, 0, 0, 0, 2])
    }

    @Test func heatMapHasOneCellPerValueAndReadableText() {
        let svg = heatMap([[1, -0.5], [0.25, .nan]], rowLabels: ["a", "b"], columnLabels: ["x", "y"], title: "h", centre: 0)
        #expect(svg.components(separatedBy: "<title>").count - 1 == 4)
        #expect(svg.contains("b x y: n/a"))
        #expect(Palette.textColour(on: "#FFFFFF") == "#000000")
        #expect(Palette.textColour(on: "#000000") == "#FFFFFF")
    }

    @Test func coloursAreDistinctAndScalesHitTheirEnds() {
        #expect(Set(Palette.categorical).count == Palette.categorical.count)
        #expect(Palette.sequential(0) == "#440154")
        #expect(Palette.sequential(1) == "#FDE725")
        #expect(Palette.diverging(0) == "#F7F7F7")
        #expect(Palette.diverging(-5) == Palette.diverging(-1))
    }

    @Test func barChartDrawsOneBarPerFiniteValue() {
        let svg = barChart([BarGroup(label: "1", values: [0.5, 0.25]), BarGroup(label: "2", values: [.nan, 0.1])],
                           series: ["EASE", "iALS"], title: "t", xTitle: "decile", yTitle: "share")
        // Three bars (the NaN draws none), each with its hover title; the legend's swatches have none.
        #expect(svg.components(separatedBy: "<title>").count - 1 == 3)
        #expect(svg.contains("<title>EASE, 1: 0.500</title>"))
        #expect(!svg.contains("EASE, 2"))
    }
}
