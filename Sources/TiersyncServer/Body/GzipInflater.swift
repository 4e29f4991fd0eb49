import CZlib
import NIOCore

/// Inflates a gzip request body with an exact size limit, refusing anything that is not
/// one complete gzip member.
///
/// CompressNIO's `decompress(with:maxSize:)` checks its limit against buffer capacities
/// that the allocator rounds up (bodies inflating to 65 and 80 MiB passed a 64 MiB limit),
/// and it treats running out of input as the end, so a stream cut before its CRC and
/// length trailer was accepted. This reads zlib's own verdict: only `Z_STREAM_END`, which
/// zlib returns after checking the trailer, ends a body.
enum GzipInflater {
    enum Failure: Error, Equatable {
        /// Inflated past the limit (the output is not kept).
        case tooLarge
        /// Not gzip, corrupt, truncated (no trailer), or followed by other bytes.
        case malformed(String)
    }

    /// Output is produced in slices of this size; the limit is checked after each.
    static let slice = 256 * 1024

    static func inflate(_ input: ByteBuffer, maxSize: Int) throws(Failure) -> ByteBuffer {
        var stream = z_stream()
        // 16 + 15: a gzip header and trailer around a deflate stream with a 32 KiB window.
        guard inflateInit2_(&stream, 16 + 15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .malformed("the hub could not start a gzip decoder")
        }
        defer { inflateEnd(&stream) }
        var output = ByteBuffer()
        var slice = [UInt8](repeating: 0, count: slice)
        let outcome: Result<Int, Failure> = input.withUnsafeReadableBytes { raw in
            guard let base = raw.baseAddress, raw.count > 0 else { return .failure(.malformed("the gzip body is empty")) }
            stream.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(clamping: raw.count)
            while true {
                let (status, produced) = slice.withUnsafeMutableBytes { out -> (Int32, Int) in
                    stream.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
                    stream.avail_out = uInt(out.count)
                    let status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    return (status, out.count - Int(stream.avail_out))
                }
                guard output.readableBytes + produced <= maxSize else { return .failure(.tooLarge) }
                output.writeBytes(slice[0..<produced])
                switch status {
                case Z_STREAM_END:
                    return .success(Int(stream.avail_in))
                case Z_OK:
                    continue
                case Z_BUF_ERROR:
                    // No progress possible with a fresh output slice: the input ran out.
                    return .failure(.malformed("the gzip data is cut off before its end (no trailer)"))
                default:
                    // Z_DATA_ERROR (bad header, corrupt data, CRC or length mismatch), Z_NEED_DICT.
                    return .failure(.malformed("the body is not valid gzip data"))
                }
            }
        }
        switch outcome {
        case .failure(let failure):
            throw failure
        case .success(let leftover):
            guard leftover == 0 else { throw .malformed("\(leftover) bytes follow the gzip data") }
            return output
        }
    }
}
