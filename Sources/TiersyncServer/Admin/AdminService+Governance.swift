import Foundation
import Hummingbird
import TiersyncCore
import TiersyncGovernance
import TiersyncStorage

/// Governance through the admin API: validate, publish (or, with four-eyes on, request),
/// approve or reject a request, roll out, roll back, and the history with names and times.
/// Signing needs the tenant's release key where this hub process can read it
/// (``HubConfiguration/releaseKeyDirectory``).
extension AdminService {
    static let maxSourceFiles = 64
    static let maxSourceBytes = 2 * 1024 * 1024

    /// The tenant's publisher, with its release key (checked against the one registered).
    func publisher(_ caller: AdminCaller) async throws -> GovernancePublisher {
        guard let keyDirectory = releaseKeyDirectory else {
            throw APIError(.serviceUnavailable, "no_release_key", "this hub has no release keys: start it with --release-keys DIR")
        }
        let path = "\(keyDirectory)/\(caller.user.tenant.rawValue).release.key"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let key = try? GovernanceSigningKey(base64: text) else {
            throw APIError(.serviceUnavailable, "no_release_key", "this hub holds no release key for the tenant (\(path))")
        }
        guard try await catalog.releaseKey(of: caller.user.tenant) == key.publicKey.base64 else {
            throw APIError(.serviceUnavailable, "wrong_release_key", "the release key this hub holds is not the one registered for the tenant")
        }
        return GovernancePublisher(store: try await directory(for: caller), tenant: caller.user.tenant, key: key, tree: caller.tree)
    }

    private func directory(for caller: AdminCaller) async throws -> any HubTenantStore {
        try await directory.store(for: caller.user.tenant)
    }

    var approvals: (any ReleaseApprovalStore)? { accounts as? any ReleaseApprovalStore }

    /// Compiles sent sources; 422 with every issue (file:line field: message) when invalid.
    /// One request's sources at a time on this hub (``compilations``), on the hub's own threads (``CPUWork/admin``):
    /// sources at their limits take seconds of CPU, which on the cooperative pool every
    /// tenant's requests waited behind. Past the line: 429 at once.
    func compile(_ sources: [ReleaseRequest.Source], for tenant: TenantID) async throws -> CompiledGovernance {
        guard (1...Self.maxSourceFiles).contains(sources.count), sources.reduce(0, { $0 + $1.text.utf8.count }) <= Self.maxSourceBytes else {
            throw APIError(.contentTooLarge, "too_large", "send 1 to \(Self.maxSourceFiles) source files, at most \(Self.maxSourceBytes) bytes in all")
        }
        guard await compilations.enter(for: tenant.rawValue) else {
            var busy = APIError(.tooManyRequests, "compilations_busy", "this hub is compiling other governance sources (or this tenant's share of them is taken); try again in a few seconds")
            busy.headers[.retryAfter] = "5"
            throw busy
        }
        defer { compilations.leave() }
        return try await CPUWork.admin.run { try Self.compileNow(sources, for: tenant) }
    }

    private static func compileNow(_ sources: [ReleaseRequest.Source], for tenant: TenantID) throws -> CompiledGovernance {
        do {
            let compiled = try GovernanceCompiler.compile(sources: sources.map { ($0.name, $0.text) })
            guard compiled.tenant == tenant.rawValue else {
                throw APIError(.unprocessableContent, "wrong_tenant", "the sources are for tenant '\(compiled.tenant)' (governance.tenant), not '\(tenant)'")
            }
            return compiled
        } catch let error as GovernanceIssues {
            var refusal = APIError(.unprocessableContent, "invalid_governance", error.issues.map(\.description).joined(separator: "\n"))
            refusal.headers[.contentType] = "application/json"
            throw refusal
        }
    }

    func validate(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.ReleaseSources.self, from: request, kind: .bulk)
        do {
            let compiled = try await compile(body.sources, for: caller.user.tenant)
            return try codec.encode(AdminMessages.Validation(valid: true, issues: [], sourceDigest: compiled.sourceDigest), for: request)
        } catch let error as APIError where error.code == "invalid_governance" || error.code == "wrong_tenant" {
            return try codec.encode(AdminMessages.Validation(valid: false, issues: error.message.split(separator: "\n").map(String.init), sourceDigest: nil),
                                    for: request)
        }
    }

    /// The longest release notes (characters).
    static let maxNotesCharacters = 1_000

    /// `POST /admin/v1/releases`: with four-eyes on, a pending request (202); else signed,
    /// published and rolled out at once (201).
    func publish(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.ReleaseSources.self, from: request, kind: .bulk)
        let targets = try body.targets.map { try $0.map { try scopedNode($0.rawValue, caller) } }
        // Refused, not cut short: the notes signed were not the notes written (helper 108).
        let notes = body.notes ?? ""
        guard notes.count <= Self.maxNotesCharacters else {
            throw APIError(.unprocessableContent, "invalid_notes", "release notes are at most \(Self.maxNotesCharacters) characters; these have \(notes.count)")
        }
        guard !DisplayText.hasUnsafeCharacters(notes, allowingLineBreaks: true) else {
            throw APIError(.unprocessableContent, "invalid_notes", "release notes are text without control characters (line breaks and tabs allowed)")
        }
        let compiled = try await compile(body.sources, for: caller.user.tenant)
        if try await approvals?.requiresReleaseApproval(of: caller.user.tenant) == true, let approvals {
            let pending = ReleaseRequest(tenant: caller.user.tenant, author: caller.user.name, requestedAtMillis: WallClock.nowMillis(), notes: notes,
                                         targets: targets, sourceDigest: compiled.sourceDigest, sources: body.sources)
            var stored = pending
            stored.id = try await approvals.createReleaseRequest(pending)
            try await audit(caller, context, "release.request", target: "request \(stored.id)", detail: "sources \(compiled.sourceDigest.prefix(12)): \(notes)")
            stored.sources = []
            return try codec.encode(AdminMessages.PublishResponse(request: stored, version: nil, rollout: nil), status: .accepted, for: request)
        }
        let release: Release, rollout: Rollout
        do {
            (release, rollout) = try await publisher(caller).publish(compiled, notes: notes.isEmpty ? nil : notes, targets: targets)
        } catch let error as GovernancePublishError {
            // Published, not rolled out (overtaken by another publisher): said so, and audited.
            if let version = error.publishedVersion {
                try await audit(caller, context, "release.publish", target: "v\(version)", detail: "not rolled out: \(error.description)")
            }
            throw APIError(.conflict, error.publishedVersion == nil ? "publish_refused" : "overtaken", error.description)
        }
        await governanceSignal(caller.user.tenant)
        try await audit(caller, context, "release.publish", target: "v\(release.version)", detail: rollout.summary)
        return try codec.encode(AdminMessages.PublishResponse(request: nil, version: release.version, rollout: rollout.summary), status: .created, for: request)
    }

    private func pendingRequest(_ context: HubRequestContext, _ caller: AdminCaller) async throws -> ReleaseRequest {
        // An id no request can have is a bad parameter, as quarantine and conflict ids are
        // (it was 403 out_of_scope, helper 98); one that could be another tenant's is out of scope.
        guard let raw = context.parameters.get("id"), let id = Int64(raw), id > 0 else {
            throw APIError(.badRequest, "invalid_parameter", "a release request's id is a positive integer")
        }
        guard let approvals, let pending = try await approvals.releaseRequest(id, of: caller.user.tenant) else { throw Self.outOfScope }
        return pending
    }

    /// Approves a pending request: never the author's own. The one approval that takes it
    /// out of `pending` signs, publishes and rolls it out.
    func approve(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        try codec.encode(try await approve(try await pendingRequest(context, caller), caller, address: context.remoteAddress ?? "unknown"), for: request)
    }

    /// How far back the chain of who chose an approver's password is followed (accounts
    /// adding accounts; a longer chain than this is refused as if it reached the author).
    static let maxPasswordChain = 32

    /// `account` and who chose its password, who chose that one's, and so on back to the
    /// hub machine (not included). Longer than ``maxPasswordChain``: refused.
    func passwordChain(of account: String, in tenant: TenantID) async throws -> [String] {
        var chain = [account]
        while let chooser = try await accounts.passwordChooser(of: chain[chain.count - 1], in: tenant), !chooser.hasPrefix("cli:") {
            guard chain.count <= Self.maxPasswordChain else {
                throw APIError(.forbidden, "own_release", "the accounts that chose '\(account)''s password go back more than "
                               + "\(Self.maxPasswordChain) deep: set its password on the hub machine (tiersync admin user set-password) to approve")
            }
            // A loop (an account whose chooser's password it chose later) ends the chain.
            guard !chain.contains(chooser) else { break }
            chain.append(chooser)
        }
        return chain
    }

    func approve(_ pending: ReleaseRequest, _ caller: AdminCaller, address: String) async throws -> AdminMessages.PublishResponse {
        guard let approvals else { throw Self.outOfScope }
        guard pending.author != caller.user.name else {
            throw APIError(.forbidden, "own_release", "a release needs a second pair of eyes: '\(caller.user.name)' requested it and cannot approve it")
        }
        // An account another added chose no password of its own: whoever added it knows it.
        // So the author's account and the approver's must not lead back to one person: the
        // chain of who chose each password, followed back to the hub machine (`cli:`), of
        // each. A publisher adding a reviewer "sock" and approving their own request, a
        // reviewer adding a publisher and approving its requests, an operator adding both:
        // each was one person's release. A password set on the hub machine since frees the
        // account.
        let approverChain = try await passwordChain(of: caller.user.name, in: caller.user.tenant)
        let authorChain = try await passwordChain(of: pending.author, in: caller.user.tenant)
        if let index = approverChain.firstIndex(of: pending.author) {
            throw APIError(.forbidden, "own_release", "a release needs a second pair of eyes: '\(pending.author)' requested it and chose "
                           + "the password of '\(approverChain[index - 1])'\(index == 1 ? "" : ", which added '\(caller.user.name)'"); another "
                           + "reviewer approves it (or set this account's password on the hub machine: tiersync admin user set-password)")
        }
        if let index = authorChain.firstIndex(of: caller.user.name) {
            throw APIError(.forbidden, "own_release", "a release needs a second pair of eyes: '\(caller.user.name)' chose the password of "
                           + "'\(authorChain[index - 1])'\(index == 1 ? "" : ", which added '\(pending.author)'"), who requested it; another "
                           + "reviewer approves it (or set the author's password on the hub machine: tiersync admin user set-password)")
        }
        if let common = approverChain.first(where: { authorChain.contains($0) }) {
            throw APIError(.forbidden, "own_release", "a release needs a second pair of eyes: '\(common)' chose the passwords of both "
                           + "'\(pending.author)', who requested it, and '\(caller.user.name)' (or added the accounts that did); another "
                           + "reviewer approves it (or set these accounts' passwords on the hub machine: tiersync admin user set-password)")
        }
        guard pending.state == .pending else { throw APIError(.conflict, "decided", "request \(pending.id) was \(pending.state.rawValue) already") }
        let compiled = try await compile(pending.sources, for: caller.user.tenant)
        let publisher = try await publisher(caller)
        guard try await approvals.decideReleaseRequest(pending.id, of: caller.user.tenant, state: .approved, reviewer: caller.user.name,
                                                       reason: nil, atMillis: WallClock.nowMillis()) else {
            throw APIError(.conflict, "decided", "request \(pending.id) was decided by someone else just now")
        }
        do {
            let notes = "\(pending.notes.isEmpty ? "" : pending.notes + " ")(requested by \(pending.author), approved by \(caller.user.name))"
            let (release, rollout) = try await publisher.publish(compiled, notes: notes, targets: pending.targets)
            try await approvals.recordReleaseVersion(pending.id, of: caller.user.tenant, version: release.version)
            await governanceSignal(caller.user.tenant)
            try await audit(caller, address, "release.approve", target: "request \(pending.id)", detail: "published v\(release.version), requested by \(pending.author)")
            var decided = pending
            (decided.state, decided.reviewer, decided.version, decided.sources) = (.approved, caller.user.name, release.version, [])
            return AdminMessages.PublishResponse(request: decided, version: release.version, rollout: rollout.summary)
        } catch let error as GovernancePublishError where error.publishedVersion != nil {
            // Published, not rolled out: the request names its release (put back to pending,
            // a second approval published it again).
            try? await approvals.recordReleaseVersion(pending.id, of: caller.user.tenant, version: error.publishedVersion)
            try? await audit(caller, address, "release.approve", target: "request \(pending.id)", detail: "published, not rolled out: \(error.description)")
            throw APIError(.conflict, "overtaken", error.description)
        } catch {
            try? await approvals.recordReleaseVersion(pending.id, of: caller.user.tenant, version: nil)
            throw error
        }
    }

    func reject(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.DiscardRequest.self, from: request)
        try await reject(try await pendingRequest(context, caller), reason: body.reason, caller, address: context.remoteAddress ?? "unknown")
        return try codec.encode(["status": "rejected"], for: request)
    }

    func reject(_ pending: ReleaseRequest, reason raw: String, _ caller: AdminCaller, address: String) async throws {
        guard let approvals else { throw Self.outOfScope }
        let reason = try Self.reason(raw)
        guard try await approvals.decideReleaseRequest(pending.id, of: caller.user.tenant, state: .rejected, reviewer: caller.user.name,
                                                       reason: reason, atMillis: WallClock.nowMillis()) else {
            throw APIError(.conflict, "decided", "request \(pending.id) was decided already")
        }
        try await audit(caller, address, "release.reject", target: "request \(pending.id)", detail: "requested by \(pending.author): \(reason)")
    }

    func rollout(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.RolloutRequest.self, from: request)
        let targets = try body.targets.map { try $0.map { try scopedNode($0.rawValue, caller) } }
        let rollout: Rollout
        do {
            rollout = try await publisher(caller).rollout(release: body.release, targets: targets)
        } catch let error as GovernancePublishError {
            throw APIError(.unprocessableContent, "refused", error.description)
        }
        await governanceSignal(caller.user.tenant)
        try await audit(caller, context, "release.rollout", target: "v\(body.release)", detail: rollout.summary)
        return try codec.encode(AdminMessages.PublishResponse(request: nil, version: body.release, rollout: rollout.summary), for: request)
    }

    func rollback(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        let body = try await codec.decode(AdminMessages.RollbackRequest.self, from: request)
        let reason = try body.reason.flatMap { $0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? nil : try Self.reason($0) }
        let rollout: Rollout
        do {
            rollout = try await publisher(caller).rollback(to: body.to)
        } catch let error as GovernancePublishError {
            throw APIError(.unprocessableContent, "refused", error.description)
        }
        await governanceSignal(caller.user.tenant)
        try await audit(caller, context, "release.rollback", target: rollout.stages.first.map { "v\($0.release)" } ?? "previous", detail: "\(rollout.summary): \(reason ?? "")")
        return try codec.encode(AdminMessages.PublishResponse(request: nil, version: nil, rollout: rollout.summary), for: request)
    }

    /// `GET /admin/v1/releases`: releases, rollouts (with reasons) and requests (with who
    /// asked, who decided, when), newest first.
    func releases(_ request: Request, _ context: HubRequestContext, _ caller: AdminCaller) async throws -> Response {
        try codec.encode(try await releaseHistory(caller), for: request)
    }

    func releaseHistory(_ caller: AdminCaller) async throws -> AdminMessages.ReleasesResponse {
        let store = try await directory(for: caller)
        var releases = try await store.governanceDocuments(ofKind: SignedDocument.Kind.release.rawValue, keys: nil)
            .compactMap { SignedDocument(json: $0.body)?.unverifiedPayload(Release.self) }
        let rollouts = try await store.governanceDocuments(ofKind: SignedDocument.Kind.rollout.rawValue, keys: nil)
            .compactMap { SignedDocument(json: $0.body)?.unverifiedPayload(Rollout.self) }
        var requests = try await approvals?.releaseRequests(of: caller.user.tenant, limit: 200) ?? []
        for i in requests.indices { requests[i].sources = [] }
        // A country's administrator sees what reaches their country: stages for every node
        // or naming a node of their subtree or above it, the releases those stages carry,
        // and requests for such targets. They read another country's trial (its notes and
        // who it targets) here, which the country itself is never sent.
        var shownRollouts = rollouts
        if !caller.isTenantWide {
            let concerned = Set(caller.visibleNodes.map(\.rawValue))
            let reaches = { (targets: [String]?) in targets.map { !concerned.isDisjoint(with: $0) } ?? true }
            shownRollouts = rollouts.compactMap { rollout in
                var (shown, omitted) = rollout.shown(to: concerned)
                // Nothing of it reaches this country: not even that it was made, and when.
                if shown.stages.isEmpty { return nil }
                // The reason is the publisher's text ("rollout v7 to it-1"): it names the
                // stages' targets, the omitted ones too (helper 108), so it goes with them.
                if omitted { shown.reason = "stages outside your scope not shown" }
                return shown
            }
            let carried = Set(shownRollouts.flatMap { $0.stages.map(\.release) })
            releases = releases.filter { carried.contains($0.version) }
            // A request for several countries shows each only its own targets, and its notes
            // and decision's reason (an author's and a reviewer's text, naming the others)
            // only when it targets nothing else (helper 111).
            requests = requests.filter { reaches($0.targets?.map(\.rawValue)) }.map { request in
                guard let targets = request.targets else { return request }
                var shown = request
                shown.targets = targets.filter { concerned.contains($0.rawValue) }
                if shown.targets?.count != targets.count {
                    shown.notes = "(notes not shown: the request also targets nodes outside your scope)"
                    if shown.reason != nil { shown.reason = "(not shown: the request also targets nodes outside your scope)" }
                }
                return shown
            }
        }
        return AdminMessages.ReleasesResponse(
            fourEyes: try await approvals?.requiresReleaseApproval(of: caller.user.tenant) ?? false,
            releases: releases.sorted { $0.version > $1.version }.map {
                .init(version: $0.version, publishedAtMillis: $0.publishedAtMillis, effectiveFromMillis: $0.effectiveFromMillis,
                      notes: $0.notes, sourceDigest: $0.sourceDigest)
            },
            rollouts: shownRollouts.sorted { $0.sequence > $1.sequence }.map {
                .init(sequence: $0.sequence, issuedAtMillis: $0.issuedAtMillis, summary: $0.summary, reason: $0.reason)
            },
            requests: requests)
    }
}
