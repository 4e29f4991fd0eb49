#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Keeps a copy of the input being run, and writes it to a file if the process dies of a
/// trap, a stack overflow or an abort — then hands the signal on to the handler installed
/// before (the Swift runtime's backtracer prints the stack), so the crash looks as it
/// would without the fuzzer.
enum CrashCapture {
    nonisolated(unsafe) private static var buffer: UnsafeMutablePointer<UInt8> = .allocate(capacity: 1)
    nonisolated(unsafe) private static var capacity = 1
    nonisolated(unsafe) private static var length = 0
    nonisolated(unsafe) private static var path: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) private static var message: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) private static var messageLength = 0
    nonisolated(unsafe) private static var previous: UnsafeMutablePointer<sigaction> = .allocate(capacity: 65)
    static let signals: [Int32] = [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGABRT, SIGFPE]

    /// Installs the handlers; a crash writes the current input to `file`.
    static func install(file: String, replayHint: String) {
        path = strdup(file)
        let text = "\ntiersync-fuzz: CRASH — the input being run is in \(file)\n  replay: \(replayHint)\n"
        message = strdup(text)
        messageLength = text.utf8.count
        // Handlers run on a stack of their own, so a stack overflow can be caught.
        let altSize = 256 * 1024
        var alt = stack_t()
        alt.ss_sp = UnsafeMutableRawPointer.allocate(byteCount: altSize, alignment: 16)
        alt.ss_size = altSize
        alt.ss_flags = 0
        sigaltstack(&alt, nil)
        for sig in signals {
            var action = sigaction()
            #if canImport(Glibc)
            action.__sigaction_handler.sa_sigaction = handler
            #else
            action.__sigaction_u.__sa_sigaction = handler
            #endif
            action.sa_flags = SA_SIGINFO | SA_ONSTACK
            sigemptyset(&action.sa_mask)
            sigaction(sig, &action, previous + Int(sig))
        }
    }

    /// Standard output a line at a time, also into a file or pipe (a CI log): a crash
    /// then loses nothing printed before it.
    static func lineBufferOutput() {
        setvbuf(stdout, nil, _IOLBF, 0)
    }

    /// The input about to run (copied; no allocation when it fits the buffer).
    static func set(_ bytes: [UInt8]) {
        if bytes.count > capacity {
            buffer.deallocate()
            capacity = max(bytes.count, capacity * 2)
            buffer = .allocate(capacity: capacity)
        }
        bytes.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { buffer.update(from: base, count: src.count) }
        }
        length = bytes.count
    }

    private static let handler: @convention(c) (Int32, UnsafeMutablePointer<siginfo_t>?, UnsafeMutableRawPointer?) -> Void = { sig, _, _ in
        // Only async-signal-safe calls here: open, write, close, sigaction.
        if let path = CrashCapture.path {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            if fd >= 0 {
                var written = 0
                while written < CrashCapture.length {
                    let n = write(fd, CrashCapture.buffer + written, CrashCapture.length - written)
                    if n <= 0 { break }
                    written += n
                }
                close(fd)
            }
        }
        if let message = CrashCapture.message { _ = write(2, message, CrashCapture.messageLength) }
        // Hand on: the faulting instruction runs again (or abort re-raises) under the
        // previous handler.
        sigaction(sig, CrashCapture.previous + Int(sig), nil)
        if sig == SIGABRT { raise(sig) }
    }
}
