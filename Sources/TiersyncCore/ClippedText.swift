extension String {
    /// The string as an answer or a log may repeat it: whole when it has at most
    /// `maxBytes` UTF-8 bytes, else its first characters within that many bytes and how long
    /// it was. Whatever a node sends is echoed through this: a push of 10,000 changes each
    /// naming a 6,300-character table came back as a 128 MB refusal before.
    public func clipped(toUTF8 maxBytes: Int) -> String {
        let total = utf8.count
        guard total > maxBytes else { return self }
        var kept = 0
        var end = startIndex
        for character in self {
            let size = character.utf8.count
            guard kept + size <= maxBytes else { break }
            kept += size
            end = index(after: end)
        }
        return String(self[..<end]) + "…(\(total) bytes)"
    }
}
