#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// A child process started with `posix_spawn`, for the tests' `tiersync` runs.
///
/// Not Foundation's `Process`: on Linux its `run()` lists `/proc/self/fd` to close the
/// parent's descriptors in the child and copies each directory entry's whole 256-byte name,
/// reading past glibc's buffer; it crashes the test process now and then
/// (swift-corelibs-foundation#5472, fixed after Swift 6.3.1; seen here once in a full run
/// of the suite, with hundreds of children started by tests running side by side). Here the
/// child closes every descriptor above stderr itself (`posix_spawn_file_actions_addclosefrom_np`,
/// glibc 2.34), and nothing of `/proc` is read.
public final class SpawnedProcess: Sendable {
    /// How a child ended, as Foundation's `Process` says it.
    public enum TerminationReason: Sendable, Equatable { case exit, uncaughtSignal }

    public let processIdentifier: Int32
    /// The raw status `waitpid` gave once the child was reaped.
    private let reaped = Mutex<Int32?>(nil)

    /// Starts `executable` with `arguments`; stdin reads `stdin` (/dev/null when nil), stdout
    /// and stderr go to the descriptors given (duplicated in the child; the caller closes its
    /// own).
    public init(executable: String, arguments: [String], environment: [String: String]? = nil,
                currentDirectory: String? = nil, stdin: Int32? = nil, stdout: Int32, stderr: Int32) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let stdin {
            posix_spawn_file_actions_adddup2(&actions, stdin, 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)
        guard let closeFrom = Self.closeFrom, closeFrom(&actions, 3) == 0 else {
            throw TestFailure("posix_spawn_file_actions_addclosefrom_np is missing (glibc 2.34 or later is needed)")
        }
        if let currentDirectory {
            guard let chdir = Self.changeDirectory, chdir(&actions, currentDirectory) == 0 else {
                throw TestFailure("posix_spawn_file_actions_addchdir_np is missing or refused \(currentDirectory)")
            }
        }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let env = environment ?? ProcessInfo.processInfo.environment
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        // Children start with SIGPIPE's default action, whatever this process set (it
        // ignores it for the stdin it writes; an ignored disposition is inherited).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF))
        var pid = pid_t()
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw TestFailure("cannot start \(executable): \(String(cString: strerror(rc)))") }
        processIdentifier = pid
    }

    private typealias FileAction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private typealias FileActionPath = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    // GNU extensions the Glibc module does not declare: looked up by name.
    private static let closeFrom: FileAction? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: FileAction.self) }
    private static let changeDirectory: FileActionPath? = dlsym(nil, "posix_spawn_file_actions_addchdir_np").map { unsafeBitCast($0, to: FileActionPath.self) }

    /// The wait status, reaping the child if it has ended (never blocks).
    private func status() -> Int32? {
        reaped.withLock { held in
            if let held { return held }
            var status: Int32 = 0
            let r = waitpid(processIdentifier, &status, WNOHANG)
            if r == processIdentifier { held = status }
            // Reaped by someone else (nothing here waits for any child but its own): it has
            // ended, how is not known; never "running" for ever.
            if r == -1, errno == ECHILD { held = Self.unknownEnd }
            return held
        }
    }

    public var isRunning: Bool { status() == nil }

    /// Blocks until the child has ended.
    public func waitUntilExit() {
        while status() == nil { usleep(2_000) }
    }

    /// Asks the child to end (SIGTERM), as `Process.terminate()`. Nothing reaps it until
    /// its status is asked for: see ``terminateAndWait(grace:)``.
    public func terminate() {
        if isRunning { kill(processIdentifier, SIGTERM) }
    }

    /// SIGTERM, then SIGKILL after `grace` seconds, and waits: the child is reaped, not left
    /// a zombie until the test process ends (Foundation's `Process` reaped its children itself).
    public func terminateAndWait(grace: Double = 5) {
        guard isRunning else { return }
        kill(processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while isRunning, Date() < deadline { usleep(10_000) }
        if isRunning { kill(processIdentifier, SIGKILL) }
        waitUntilExit()
    }

    /// Runs `executable` to its end: writes `input` to its stdin (from a thread of its own, so
    /// a child that answers before it has read everything cannot stall it), and returns its
    /// exit status and what it wrote to stdout (and stderr, with `mergingErrors`; otherwise
    /// stderr goes to this process's). Blocks the calling thread: see ``runToEndAsync``.
    public static func runToEnd(executable: String, arguments: [String], input: Data? = nil, currentDirectory: String? = nil,
                                mergingErrors: Bool = true) throws -> (status: Int32, output: Data) {
        let output = try pipe()
        var inputEnds: (read: Int32, write: Int32)?
        let child: SpawnedProcess
        do {
            defer { close(output.write) }
            if input != nil { inputEnds = try pipe() }
            defer { if let inputEnds { close(inputEnds.read) } }
            child = try SpawnedProcess(executable: executable, arguments: arguments, currentDirectory: currentDirectory,
                                       stdin: inputEnds?.read, stdout: output.write, stderr: mergingErrors ? output.write : 2)
        } catch {
            close(output.read)
            if let inputEnds { close(inputEnds.write) }
            throw error
        }
        Self.ignoreBrokenPipes
        if let input, let writer = inputEnds?.write {
            let handle = FileHandle(fileDescriptor: writer, closeOnDealloc: true)
            Thread.detachNewThread {
                try? handle.write(contentsOf: input)
                try? handle.close()
            }
        }
        let data = FileHandle(fileDescriptor: output.read, closeOnDealloc: true).readDataToEndOfFile()
        child.waitUntilExit()
        return (child.terminationStatus, data)
    }

    /// A write to a child that has ended fails with EPIPE instead of killing the test process.
    private static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// ``runToEnd`` on a thread of its own, so an async test never blocks a cooperative thread.
    public static func runToEndAsync(executable: String, arguments: [String], input: Data? = nil,
                                     mergingErrors: Bool = true) async throws -> (status: Int32, output: Data) {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try runToEnd(executable: executable, arguments: arguments, input: input, mergingErrors: mergingErrors) })
            }
        }
    }

    /// Stands for an end `waitpid` did not report (ECHILD).
    private static let unknownEnd: Int32 = -1

    /// The exit code, or the signal that ended it (as `Process.terminationStatus`); 0 while
    /// running; -1 when the end is not known (reaped elsewhere: never read as a clean exit).
    public var terminationStatus: Int32 {
        guard let s = status() else { return 0 }
        if s == Self.unknownEnd { return -1 }
        return s & 0x7f == 0 ? (s >> 8) & 0xff : s & 0x7f
    }

    public var terminationReason: TerminationReason {
        guard let s = status(), s != Self.unknownEnd else { return .exit }
        return s & 0x7f == 0 ? .exit : .uncaughtSignal
    }

    /// A pipe for a child's output: both ends closed on exec (the child gets its dup of the
    /// write end; every child here closes what it inherits past stderr anyway).
    public static func pipe() throws -> (read: Int32, write: Int32) {
        var ends: [Int32] = [0, 0]
        guard Glibc.pipe(&ends) == 0 else { throw TestFailure("pipe: \(String(cString: strerror(errno)))") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return (ends[0], ends[1])
    }

    /// Reads `descriptor` up to and including its first newline (or its end) and closes it.
    /// A child's first line read this way is whole before the pipe closes: closed after part
    /// of it, the child's next write fails (Python's `print` wrote "locked" and then failed
    /// on "\n" with a broken pipe, ending the child that held a lock for a test).
    public static func readFirstLine(closing descriptor: Int32) -> String {
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        var data = Data()
        while !data.contains(UInt8(ascii: "\n")) {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            data += chunk
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Opens `path` for the child's output (appending; closed on exec here: the child gets its dup).
    public static func outputFile(_ path: String) throws -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TestFailure("cannot open \(path): \(String(cString: strerror(errno)))") }
        return fd
    }
}
