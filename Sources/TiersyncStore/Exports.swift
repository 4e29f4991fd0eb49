// The storage seam's value types and protocols (TiersyncStorage) are part of what this
// engine's API speaks, so a module using the SQLite engine sees them without a second import.
@_exported import TiersyncStorage
