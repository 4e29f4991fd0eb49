import ArgumentParser
import Foundation
import TiersyncCore
import TiersyncStore

/// An in-process fuzzer for what the hub reads from clients: the wire decoders (push
/// bodies, pull pages, trails), the store's canonical JSON parsers, `JSONDecoder` on the
/// request types, and the push handler's validation in the store. It needs no special
/// toolchain flags: it generates and mutates its inputs itself, from a seed it prints.
///
/// First it replays the seed corpus (every file, once per pusher); then, for `--seconds`,
/// it runs generated inputs: arbitrary bytes, valid push batches, and valid batches or
/// corpus seeds mutated structurally (hostile numbers, wrong types, unknown and repeated
/// keys, deep nesting, long strings, invalid UTF-8, …) and byte by byte. Each input is
/// checked against invariants (``DecoderTargets``, ``StoreTarget``), not only for crashes.
/// An input that breaks one is written to `--artifacts`; a crash writes the input being
/// run there before the process dies.
@main
struct TiersyncFuzz: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiersync-fuzz",
        abstract: "Fuzz the wire decoders and the push handler's validation, checking invariants.",
        discussion: """
            Replay a failure with the seed it printed (--seed N; iteration numbers follow from it), \
            or with the input file it wrote (--replay FILE).
            """)

    @Option(help: "Seconds to generate inputs for, after the corpus (0: the corpus only).")
    var seconds: Double = 60

    @Option(help: "The run's seed (default: a random one, printed).")
    var seed: UInt64?

    @Option(help: "A directory of seed inputs to replay and mutate (repeatable). Default: fixtures/fuzz/push if present.")
    var corpus: [String] = []

    @Option(help: "Where to write inputs that break an invariant or crash.")
    var artifacts = ".build/fuzz-artifacts"

    @Option(help: "Run only these input files (each once per pusher), then stop.")
    var replay: [String] = []

    @Option(help: "Stop after this many generated inputs.")
    var iterations: Int?

    @Flag(help: "Fail on inputs the byte-level decoder and JSONDecoder read differently (counted otherwise).")
    var strictDifferential = false

    @Option(help: "A file listing known defects, one per line (# comments): failure signatures (e.g. nonfinite-number) or corpus file names. Their failures are reported, not failed.")
    var knownFailures: String?

    @Option(help: .hidden) var selfTestCrash: String?

    func run() async throws {
        // Lines as they come, also into a CI log (a crash must not lose what was printed).
        CrashCapture.lineBufferOutput()
        let seed = self.seed ?? UInt64.random(in: 0...UInt64.max)
        try FileManager.default.createDirectory(atPath: artifacts, withIntermediateDirectories: true)
        let crashFile = (artifacts as NSString).appendingPathComponent("crash-seed-\(seed).bin")
        CrashCapture.install(file: crashFile, replayHint: "tiersync-fuzz --replay \(crashFile)")
        print("tiersync-fuzz: seed \(seed) (replay this run: tiersync-fuzz --seed \(seed) --seconds \(format(seconds)))")
        #if DEBUG
        print("build: debug")
        #endif

        let known = try knownFailures.map(Self.readKnown) ?? []
        if let kind = selfTestCrash {
            // Checks the crash capture: the marker input must land in the crash file.
            CrashCapture.set(Array("self-test \(kind)".utf8))
            if kind == "overflow" { print(Self.recurse(1)) }
            let values: [Int] = []
            print(values[Int(seed % 7) + 1])
        }
        var run = FuzzRun(artifacts: artifacts, seed: seed, strictDifferential: strictDifferential, knownSignatures: known)
        if !replay.isEmpty {
            for file in replay {
                let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: file)))
                await run.replay(bytes, name: file, known: false)
            }
            run.store.cleanUp()
            run.report()
            if run.failed { throw ExitCode(1) }
            return
        }

        let directories = corpus.isEmpty ? (FileManager.default.fileExists(atPath: "fixtures/fuzz/push") ? ["fixtures/fuzz/push"] : []) : corpus
        var seeds: [[UInt8]] = []
        for directory in directories {
            let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { !$0.hasPrefix(".") }.sorted()
            for name in names {
                let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: (directory as NSString).appendingPathComponent(name))))
                seeds.append(bytes)
                CrashCapture.set(bytes)
                await run.replay(bytes, name: (directory as NSString).appendingPathComponent(name), known: run.knownSignatures.contains(name))
            }
        }
        print("corpus: \(seeds.count) files replayed from \(directories.joined(separator: ", ")), \(run.failures.count) failures")

        let start = ContinuousClock.now
        let deadline = start + .milliseconds(Int64(seconds * 1000))
        var iteration: UInt64 = 0
        while ContinuousClock.now < deadline, iterations.map({ iteration < UInt64($0) }) ?? true {
            var generator = Generator(rng: FuzzRandom(seed: seed, iteration: iteration), corpus: seeds)
            let input = generator.input()
            CrashCapture.set(input.bytes)
            await run.one(input.bytes, kind: input.kind.rawValue, pusher: input.pusher,
                          label: "seed \(seed) iteration \(iteration)", replayHint: "--seed \(seed) --iterations \(iteration + 1)")
            iteration += 1
        }
        let elapsed = ContinuousClock.now - start
        let secondsRun = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        run.store.cleanUp()
        print("generated: \(iteration) inputs in \(format(secondsRun)) s (\(format(Double(iteration) / max(secondsRun, 0.001))) /s)")
        run.report()
        if run.failed { throw ExitCode(1) }
    }

    static func recurse(_ n: Int) -> Int { n == 0 ? 0 : recurse(n + 1) + 1 }

    static func readKnown(_ file: String) throws -> Set<String> {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        return Set(text.split(separator: "\n").map { $0.split(separator: "#", maxSplits: 1).first.map(String.init) ?? "" }
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
    }
}

func format(_ x: Double) -> String { String(format: x == x.rounded() ? "%.0f" : "%.1f", x) }

/// The state of one run: statistics and failures.
struct FuzzRun {
    let artifacts: String
    let seed: UInt64
    let strictDifferential: Bool
    /// Signatures (``InvariantFailure/signature``) of known defects: reported, not failed.
    let knownSignatures: Set<String>
    var knownCounts: [String: (count: Int, example: String)] = [:]
    var store = StoreTarget()
    var failures: [(label: String, failure: String, file: String?)] = []
    var knownSeen: [String] = []
    var failureKinds: Set<String> = []
    var byKind: [String: Int] = [:]
    var wireOutcomes: [String: Int] = [:]
    var divergences: [String: (count: Int, example: String)] = [:]
    var inputBytes = 0
    var decodeTime = Duration.zero, storeTime = Duration.zero

    var failed: Bool { !failures.isEmpty }

    /// A corpus file (or a file given to --replay), once per pusher.
    mutating func replay(_ bytes: [UInt8], name: String, known: Bool) async {
        let before = failures.count
        for pusher in World.pushers {
            await one(bytes, kind: "corpus-replay", pusher: pusher, label: "\(name) (pusher \(pusher))", replayHint: "--replay \(name)", write: false)
        }
        if known {
            if failures.count > before {
                knownSeen.append("\(name): \(failures[before].failure)")
                failures.removeSubrange(before...)
            } else {
                print("note: \(name) is listed as a known failure but passes now: take it off the list")
            }
        }
    }

    mutating func one(_ bytes: [UInt8], kind: String, pusher: NodeID, label: String, replayHint: String, write: Bool = true) async {
        byKind[kind, default: 0] += 1
        inputBytes += bytes.count
        do {
            let t0 = ContinuousClock.now
            let outcome = try DecoderTargets.run(bytes, known: knownSignatures)
            for failure in outcome.known { noteKnown(failure, bytes: bytes, label: label, write: write) }
            let t1 = ContinuousClock.now
            decodeTime += t1 - t0
            defer { storeTime += ContinuousClock.now - t1 }
            wireOutcomes[outcome.wire, default: 0] += 1
            if let d = outcome.divergence {
                let example = divergences[d.kind]?.example ?? DecoderTargets.prefix(bytes)
                divergences[d.kind] = ((divergences[d.kind]?.count ?? 0) + 1, example)
                if strictDifferential { throw InvariantFailure(invariant: "decoders agree", detail: d.kind) }
            }
            if let push = outcome.push {
                defer { for failure in store.knownHits { noteKnown(failure, bytes: bytes, label: label, write: write) } }
                try await store.run(push, pusher: pusher, known: knownSignatures)
            }
        } catch let failure as InvariantFailure where failure.signature.map(knownSignatures.contains) == true {
            noteKnown(failure, bytes: bytes, label: label, write: write)
        } catch {
            let invariant = (error as? InvariantFailure)?.invariant ?? "the store throws no error for a decoded batch (the hub would answer 500)"
            var file: String?
            if write {
                let path = (artifacts as NSString).appendingPathComponent("failure-seed-\(seed)-\(failures.count).bin")
                _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
                file = path
            }
            failures.append((label, "\(error)", file))
            if failureKinds.insert(invariant).inserted || failures.count <= 5 {
                print("FAILURE [\(label), pusher \(pusher)] \(error)")
                if let file { print("  input written to \(file); replay: tiersync-fuzz --replay \(file)  (or \(replayHint))") }
            }
        }
    }

    mutating func noteKnown(_ failure: InvariantFailure, bytes: [UInt8], label: String, write: Bool) {
        let signature = "\(failure.signature ?? "")' (\(failure.invariant)"
        var example = knownCounts[signature]?.example ?? ""
        if example.isEmpty {
            example = "\(label): \(failure.description.prefix(400))"
            if write {
                let path = (artifacts as NSString).appendingPathComponent("known-\(failure.signature ?? "")-\(knownCounts.count)-seed-\(seed).bin")
                _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
                example += " [\(path)]"
            }
        }
        knownCounts[signature] = ((knownCounts[signature]?.count ?? 0) + 1, example)
    }

    func report() {
        print("inputs by kind: " + byKind.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
              + " (\(inputBytes / 1024) KiB in all)")
        print("push decoding: " + wireOutcomes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        print("time: decoders \(decodeTime), store \(storeTime) (of which fresh stores \(store.totals.makeTime))")
        let t = store.totals
        print("store: \(t.batches) batches judged, \(t.changes) changes: applied \(t.applied), duplicates \(t.duplicates), rejected \(t.rejected); \(t.redeliveries) redeliveries (\(t.settledLate) settled after a second); \(t.purged) log entries purged by compaction between deliveries")
        print("refusals: " + t.codes.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        if divergences.isEmpty {
            print("decoder divergences: none")
        } else {
            for (kind, d) in divergences.sorted(by: { $0.key < $1.key }) {
                print("decoder divergence (\(strictDifferential ? "failure" : "counted, not failed")): \(kind): \(d.count) inputs, e.g. \(d.example)")
            }
        }
        for k in knownSeen { print("known failure (listed, not failed): \(k)") }
        for (signature, k) in knownCounts.sorted(by: { $0.key < $1.key }) {
            print("known failure '\(signature)) (listed, not failed): \(k.count) inputs, e.g. \(k.example)")
        }
        if failures.isEmpty {
            print("invariant failures: 0")
        } else {
            print("invariant failures: \(failures.count) (\(failureKinds.count) kinds)")
            for f in failures.prefix(20) { print("  \(f.label): \(f.failure.prefix(600))\(f.file.map { " [\($0)]" } ?? "")") }
        }
    }
}
