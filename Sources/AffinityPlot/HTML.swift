import Foundation

/// Self-contained HTML pages (inline CSS, no network, no framework) for the report and the
/// service's dashboard: one stylesheet, escaping and tables in one place.
public enum HTML {
    /// `s` escaped for HTML text and attribute values.
    public static func escape(_ s: String) -> String { SVG.escape(s) }

    /// The shared stylesheet.
    public static let style = """
    body { font-family: -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 20px 40px; color: #222; }
    h1 { font-size: 24px; margin-top: 24px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
    h3 { font-size: 15px; margin-bottom: 6px; }
    table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
    th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 10px; text-align: left; vertical-align: top; }
    th { background: #f4f4f4; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
    .note { color: #555; font-size: 13px; } .warn { color: #8a4b00; font-size: 13px; }
    .grid { display: flex; flex-wrap: wrap; gap: 16px; } .grid > div { flex: 0 1 auto; }
    svg { max-width: 100%; height: auto; } code { background: #f4f4f4; padding: 1px 4px; }
    input, select, button { font-size: 14px; padding: 4px 8px; margin: 2px; }
    .card { border: 1px solid #ddd; border-radius: 6px; padding: 10px 16px; margin: 10px 0; }
    .stat { display: inline-block; margin-right: 28px; } .stat b { font-size: 20px; display: block; }
    """

    /// A whole page: `body` is already HTML. `script` (optional) is inline JavaScript.
    public static func page(title: String, body: String, script: String? = nil) -> String {
        var s = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        s += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        s += "<title>\(escape(title))</title>\n<style>\n\(style)\n</style>\n</head>\n<body>\n\(body)\n"
        if let script { s += "<script>\n\(script)\n</script>\n" }
        return s + "</body>\n</html>\n"
    }

    /// A column of a table: its header and whether it holds numbers (right-aligned).
    public struct Column: Sendable {
        public var title: String
        public var numeric: Bool
        public init(_ title: String, numeric: Bool = false) {
            self.title = title
            self.numeric = numeric
        }
    }

    /// A table of plain-text cells (escaped here).
    public static func table(_ columns: [Column], _ rows: [[String]], id: String? = nil) -> String {
        var s = "<table\(id.map { " id=\"\(escape($0))\"" } ?? "")>\n<tr>"
        for c in columns { s += "<th\(c.numeric ? " class=\"num\"" : "")>\(escape(c.title))</th>" }
        s += "</tr>\n"
        for row in rows {
            s += "<tr>"
            for (n, cell) in row.enumerated() {
                let numeric = n < columns.count && columns[n].numeric
                s += "<td\(numeric ? " class=\"num\"" : "")>\(escape(cell))</td>"
            }
            s += "</tr>\n"
        }
        return s + "</table>\n"
    }
}
