extension Int64 {
    /// `self + other`, held at `Int64.max` or `.min` instead of trapping: numerators and
    /// denominators arrive from other nodes (their snapshots) and from timestamps nodes wrote,
    /// and a sum of them must not stop the process that adds them.
    @inline(__always)
    func addingSaturated(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }
}
