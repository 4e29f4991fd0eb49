import TiersyncCore

/// The refusal of a change whose data was erased, the same on every engine.
public enum ErasureRefusal {
    /// `linked`: the erased record (table, id) the change names, when it is not the change's own.
    public static func rejection(table: String, id: String, erasureID: String, linked: (table: String, id: String)? = nil) -> ChangeRejection {
        guard let linked else {
            return ChangeRejection(.erased, "record \(table)/\(id) was erased (\(erasureID)): its data cannot come back",
                                   erased: ErasedReference(erasure: erasureID, table: table, id: id))
        }
        return ChangeRejection(.erased, "record \(table)/\(id) names \(linked.table)/\(linked.id), which was erased (\(erasureID)): data about it cannot come back",
                               erased: ErasedReference(erasure: erasureID, table: linked.table, id: linked.id))
    }
}
