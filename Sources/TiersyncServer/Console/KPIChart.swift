import TiersyncKPI

/// A KPI as a horizontal bar chart in SVG, rendered on the server: one bar per node (the
/// viewer's node and the nodes just below it, each its subtree's value), the target as a
/// dashed line, bars that miss the target in another colour. Accessible: `role="img"` with a
/// title and a description listing every value; labels are XML-escaped (KPI names and node
/// ids come from governance and the tree).
enum KPIChart {
    static let width = 640.0, labelWidth = 150.0, barHeight = 22.0, gap = 8.0

    /// Rows of one KPI and period, in display order.
    static func svg(kpi: String, name: String, unit: KPIUnit, rows: [KPIRow], id: String) -> String {
        let values = rows.compactMap(\.value)
        let target = rows.compactMap(\.target).first
        let top = max(values.max() ?? 0, target?.value ?? 0, unit == .percent ? 100 : 1) * 1.1
        let plot = width - labelWidth - 70
        let height = Double(rows.count) * (barHeight + gap) + gap + 18
        func x(_ v: Double) -> Double { labelWidth + plot * v / top }
        // A coordinate as a whole pixel. Values and targets come from nodes' KPI snapshots
        // (any double a node wrote, -1e300 included): `Int(_:)` of one outside Int's range
        // trapped, and the hub died for every tenant at each view of the page.
        func px(_ v: Double) -> Int { v.isFinite ? Int(min(max(v, -1e6), 1e6)) : 0 }
        // As the CLI and the API's table write them (`KPIReport.format`: two decimals, more
        // where rounding would put a value on the other side of its target); the console
        // wrote one decimal, and 79.96 % read as 80.0 % beside a missed target of 80 %.
        func format(_ v: Double?, against target: KPITarget? = nil) -> String {
            guard let v else { return "no data" }
            return KPIReport.format(v, unit, against: target)
        }
        let description = rows.map { "\($0.node): \(format($0.value, against: $0.target))" }.joined(separator: "; ")
            + (target.map { "; target \($0.comparison == .atLeast ? "at least" : "at most") \(format($0.value))" } ?? "")
        var out = """
        <svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby="\(id)-title \(id)-desc" class="kpi-chart" data-kpi="\(escape(kpi))" \
        viewBox="0 0 \(Int(width)) \(Int(height))" width="\(Int(width))" height="\(Int(height))">
        <title id="\(id)-title">\(escape(name))</title>
        <desc id="\(id)-desc">\(escape(description))</desc>

        """
        for (i, row) in rows.enumerated() {
            let y = gap + Double(i) * (barHeight + gap)
            let value = row.value ?? 0
            let colour = row.met == false ? "#b42318" : "#2f6fad"
            out += """
            <text x="\(Int(labelWidth - 8))" y="\(Int(y + barHeight * 0.7))" text-anchor="end" font-size="13" fill="#1d232b">\(escape(row.node))</text>
            <rect class="bar" data-node="\(escape(row.node))" x="\(Int(labelWidth))" y="\(Int(y))" width="\(max(0, px(x(value) - labelWidth)))" height="\(Int(barHeight))" fill="\(colour)"/>
            <text x="\(px(x(value) + 6))" y="\(Int(y + barHeight * 0.7))" font-size="12" fill="#1d232b">\(escape(format(row.value, against: row.target)))</text>

            """
        }
        if let target {
            let tx = px(x(target.value))
            out += """
            <line class="target" x1="\(tx)" y1="0" x2="\(tx)" y2="\(Int(height - 16))" stroke="#1d232b" stroke-dasharray="4 3"/>
            <text x="\(tx)" y="\(Int(height - 3))" text-anchor="middle" font-size="11" fill="#1d232b">target \(escape(format(target.value)))</text>

            """
        }
        return out + "</svg>"
    }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
