/// Text people type for other people to read: a queue's new name, a token's name, release
/// notes, the reason for a decision.
public enum DisplayText {
    /// Whether `text` holds a character that breaks or disguises what is shown, or that a
    /// store cannot keep: a control character (NUL included: PostgreSQL refuses it, and
    /// SQLite kept the text only up to it), a line or paragraph separator, or a bidirectional
    /// embedding, override or isolate (U+202E makes a name read backwards). The marks Hebrew
    /// and Arabic text needs (U+200E, U+200F, U+061C) are allowed. `allowingLineBreaks`:
    /// newline, carriage return and tab are allowed (notes, reasons).
    public static func hasUnsafeCharacters(_ text: String, allowingLineBreaks: Bool) -> Bool {
        text.unicodeScalars.contains { scalar in
            if allowingLineBreaks, scalar == "\n" || scalar == "\r" || scalar == "\t" { return false }
            if [0x200E, 0x200F, 0x061C].contains(scalar.value) { return false }
            return [.control, .lineSeparator, .paragraphSeparator].contains(scalar.properties.generalCategory) || scalar.properties.isBidiControl
        }
    }
}
