import Foundation
import Testing
import TiersyncGovernance
import TiersyncTestSupport

private func automaker() throws -> CompiledGovernance {
    try GovernanceCompiler.compile(directory: repositoryRoot() + "/fixtures/governance/automaker")
}

private func release(_ compiled: CompiledGovernance, version: Int, effectiveFrom: UInt64 = 0) -> Release {
    Release(tenant: "automaker", version: version, publishedAtMillis: 0, effectiveFromMillis: effectiveFrom, notes: nil,
            sourceDigest: compiled.sourceDigest, config: compiled.config, overrides: compiled.overrides)
}

@Suite("Signed releases, overlays and the resolver")
struct SignedReleaseTests {
    let hq = GovernanceSigningKey()

    @Test("a release verifies; altered bytes, another key, or a document replayed as another kind are refused")
    func signatures() throws {
        let compiled = try automaker()
        let signed = try hq.sign(release(compiled, version: 1), as: .release)
        #expect(try hq.publicKey.open(signed, as: .release, Release.self).config == compiled.config)
        var altered = signed
        var bytes = Data(base64Encoded: altered.payload)!
        bytes[bytes.count / 2] ^= 0x01
        altered.payload = bytes.base64EncodedString()
        #expect(throws: GovernanceRefusal.self) { try hq.publicKey.verify(altered, as: .release) }
        let other = GovernanceSigningKey()
        #expect(throws: GovernanceRefusal.self) { try hq.publicKey.verify(try other.sign(release(compiled, version: 1), as: .release), as: .release) }
        var replayed = try hq.sign(Rollout(tenant: "automaker", sequence: 1, issuedAtMillis: 0, stages: [], reason: ""), as: .rollout)
        replayed.kind = .release
        #expect(throws: GovernanceRefusal.self) { try hq.publicKey.verify(replayed, as: .release) }
    }

    @Test("overlays: within bounds applies field by field; beyond bounds, unknown, not overridable and removals are refused with the limit")
    func overlayBounds() throws {
        let compiled = try automaker()
        let r = release(compiled, version: 1)
        let text = try String(contentsOfFile: repositoryRoot() + "/fixtures/governance/overlays/de.yaml", encoding: .utf8)
        let source = try OverlaySource.parse(yaml: text, file: "de.yaml")
        let overlay = Overlay(tenant: "automaker", country: "de", sequence: 1, createdAtMillis: 0, basedOn: 1, set: source.set)
        let checked = try overlay.checked(against: r).get()
        let effective = checked.apply(to: r.config)
        for (path, value) in compiled.config.leaves() {
            #expect(effective[path: path] == expectedLeaf(path, base: value, overlay: checked), "\(path)")
        }
        #expect(effective != compiled.config)
        func refusal(_ set: [String: ConfigValue]) -> String {
            var o = overlay
            o.set = set
            if case .failure(let f) = o.checked(against: r) { return f.description }
            return "accepted"
        }
        #expect(refusal(["allocation.warranty-specification.then.sla": "5h"]) ==
                "allocation.warranty-specification.then.sla: 5h is longer than HQ's 4h (HQ's limit: shorten only)")
        #expect(refusal(["kpis.service-level-phone.target": .object(["at_least": .number(70)])]).contains("looser than HQ's at_least 80"))
        #expect(refusal(["governance.title": "Mine"]) == "governance.title: HQ does not let countries change this field")
        #expect(refusal(["allocation.no-such-rule.then.sla": "1h"]).contains("no such field in release 1"))
        #expect(refusal(["allocation.warranty-specification.then.sla": "soon"]).contains("expected a duration"))
        let removal = try #require(throws: GovernanceIssues.self) {
            try OverlaySource.parse(yaml: "overlay:\n  country: de\n  remove: [allocation.key-accounts]\n", file: "rm.yaml")
        }
        #expect(removal.issues.map(\.description).contains("rm.yaml:3: overlay.remove: overlays may only change fields HQ allows (limit: nothing may be added or removed)"), "\(removal)")

        // A release whose range reaches outside the field's own (signed before the compiler
        // checked it): the overlay still cannot leave the field's range.
        var wide = r
        wide.overrides = [OverrideRule(path: "proactive.handover-call.trigger.days_after", bound: .range(min: -10, max: 400)),
                          OverrideRule(path: "allocation.*.then.priority", bound: .range(min: 0, max: 99))]
        func wideRefusal(_ set: [String: ConfigValue]) -> String {
            var o = overlay
            o.set = set
            if case .failure(let f) = o.checked(against: wide) { return f.description }
            return "accepted"
        }
        #expect(wideRefusal(["proactive.handover-call.trigger.days_after": .number(-5)]).contains("-5 is outside the field's own 0…365"))
        #expect(wideRefusal(["allocation.key-accounts.then.priority": .number(0)]).contains("0 is outside the field's own 1…5"))
        #expect(wideRefusal(["proactive.handover-call.trigger.days_after": .number(30), "allocation.key-accounts.then.priority": .number(5)]) == "accepted")
        // A "stricter" percentage beyond 100; a rename of megabytes of combining marks, or of line breaks.
        #expect(refusal(["kpis.service-level-phone.target": .object(["at_least": .number(150)])]).contains("a percentage target must be between 0 and 100, got 150"))
        #expect(refusal(["kpis.service-level-phone.target": .object(["at_least": .number(95)])]) == "accepted")
        #expect(refusal(["queues.dealer-sales.name": .string("a" + String(repeating: "\u{301}", count: 10_000))]).contains("text of 1 to 100 characters"))
        #expect(refusal(["queues.dealer-sales.name": "\n"]).contains("text of 1 to 100 characters"))
        #expect(refusal(["queues.dealer-sales.name": "Verkauf\nzwei"]).contains("without line breaks"))
        #expect(refusal(["queues.dealer-sales.name": "Verkauf Händler"]) == "accepted")
        // A line separator, a right-to-left override; a seconds target below 0 ("stricter", meaningless).
        #expect(refusal(["queues.dealer-sales.name": "Line1\u{2028}Line2"]).contains("without line breaks"))
        #expect(refusal(["queues.dealer-sales.name": "Verkauf\u{202E}evil"]).contains("without line breaks"))
        #expect(refusal(["kpis.average-speed-of-answer-phone.target": .object(["at_most": .number(-5)])]).contains("a target is never below 0, got -5"))
        #expect(refusal(["kpis.average-speed-of-answer-phone.target": .object(["at_most": .number(10)])]) == "accepted")
    }

    @Test("overlay certificates: only a key HQ certified for that country may sign its overlay")
    func certificates() throws {
        let country = GovernanceSigningKey()
        let cert = try hq.certify(OverlayCertificate(tenant: "automaker", node: "de", publicKey: country.publicKey.base64, issuedAtMillis: 0))
        let overlay = Overlay(tenant: "automaker", country: "de", sequence: 1, createdAtMillis: 0, basedOn: nil, set: [:])
        #expect(try hq.publicKey.openOverlay(try country.sign(overlay, as: .overlay, certificate: cert), tenant: "automaker", expectedCountry: "de") == overlay)
        // de's key cannot sign for fr.
        var forFR = overlay
        forFR.country = "fr"
        #expect(throws: GovernanceRefusal.self) {
            try hq.publicKey.openOverlay(try country.sign(forFR, as: .overlay, certificate: cert), tenant: "automaker", expectedCountry: "fr")
        }
        // A self-made certificate is refused.
        let forger = GovernanceSigningKey()
        let selfMade = try forger.certify(OverlayCertificate(tenant: "automaker", node: "de", publicKey: forger.publicKey.base64, issuedAtMillis: 0))
        #expect(throws: GovernanceRefusal.self) {
            try hq.publicKey.openOverlay(try forger.sign(overlay, as: .overlay, certificate: selfMade), tenant: "automaker", expectedCountry: "de")
        }
    }

    @Test("""
        while the newest rollout's release waits, the rollouts just before it give what runs: the newest release among them \
        in effect, and when the clock next changes that; only an unbroken run counts (a relay sending an old rollout among \
        them put its subtree back on a withdrawn release)
        """)
    func inEffectBefore() throws {
        let compiled = try automaker()
        func rollout(_ sequence: Int, _ release: Int) -> Rollout {
            Rollout(tenant: "automaker", sequence: sequence, issuedAtMillis: 0, stages: [.init(release: release, targets: nil)], reason: "")
        }
        var v = VerifiedGovernance()
        v.releases = [1: release(compiled, version: 1), 5: release(compiled, version: 5, effectiveFrom: 2_000),
                      7: release(compiled, version: 7, effectiveFrom: 9_000)]
        v.rollout = rollout(6, 7)
        v.rollouts = [rollout(6, 7), rollout(5, 5), rollout(4, 1)]
        let waiting = GovernanceResolver.decide(node: "de-1", parent: "de", verified: v, nowMillis: 1_000)
        #expect(waiting.state == .pending && waiting.pendingUntilMillis == 9_000)
        // Before v5's time, rollout 4's v1; from it on, rollout 5's v5 — a change the clock alone makes, at 2,000.
        #expect(GovernanceResolver.inEffectBefore(node: "de-1", parent: "de", verified: v, nowMillis: 1_000)?.release?.version == 1)
        #expect(GovernanceResolver.nextChange(of: waiting, verified: v, nowMillis: 1_000) == 2_000)
        let later = GovernanceResolver.decide(node: "de-1", parent: "de", verified: v, nowMillis: 3_000)
        #expect(GovernanceResolver.inEffectBefore(node: "de-1", parent: "de", verified: v, nowMillis: 3_000)?.release?.version == 5)
        #expect(GovernanceResolver.nextChange(of: later, verified: v, nowMillis: 3_000) == 9_000)
        // A run with a gap: only the part above the gap counts (here nothing in effect).
        v.rollouts = [rollout(6, 7), rollout(1, 1)]
        #expect(GovernanceResolver.inEffectBefore(node: "de-1", parent: "de", verified: v, nowMillis: 3_000) == nil)
        v.rollouts = [rollout(6, 7), rollout(5, 5), rollout(3, 1)]
        #expect(GovernanceResolver.inEffectBefore(node: "de-1", parent: "de", verified: v, nowMillis: 1_000) == nil)
        #expect(GovernanceResolver.inEffectBefore(node: "de-1", parent: "de", verified: v, nowMillis: 3_000)?.release?.version == 5)
    }

    @Test("the resolver: first matching stage wins, a node under a trial country follows it, pending until effective-from, missing release refused")
    func resolver() throws {
        let compiled = try automaker()
        var v = VerifiedGovernance()
        v.releases = [1: release(compiled, version: 1), 2: release(compiled, version: 2, effectiveFrom: 5_000)]
        v.rollout = Rollout(tenant: "automaker", sequence: 3, issuedAtMillis: 0,
                            stages: [.init(release: 2, targets: ["de"]), .init(release: 1, targets: nil)], reason: "trial")
        #expect(GovernanceResolver.decide(node: "fr-1", parent: "fr", verified: v, nowMillis: 10_000).release?.version == 1)
        let dealer = GovernanceResolver.decide(node: "de-1", parent: "de", verified: v, nowMillis: 10_000)
        #expect(dealer.state == .applied && dealer.release?.version == 2 && dealer.effective == compiled.config)
        let early = GovernanceResolver.decide(node: "de", parent: "hq", verified: v, nowMillis: 1_000)
        #expect(early.state == .pending && early.pendingUntilMillis == 5_000)
        v.releases[2] = nil
        v.refusals = ["release 2: release refused: signature does not match"]
        let refused = GovernanceResolver.decide(node: "de-1", parent: "de", verified: v, nowMillis: 10_000)
        #expect(refused.state == .refused && refused.problems == ["release 2: release refused: signature does not match"])
    }
}
