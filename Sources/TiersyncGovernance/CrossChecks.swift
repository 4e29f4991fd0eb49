/// Rules that span fields or sections: references resolve, levels agree, formulas carry
/// the parameters their kind needs, allocation ends in a catch-all.
enum CrossChecks {
    static func run(_ reader: inout GovernanceReader, config: inout ConfigValue) {
        let levels = reader.levels
        let queues = config[path: "queues"]?.objectValue ?? [:]
        let roles = config[path: "roles"]?.objectValue ?? [:]

        let earlier = reader.issues.map(\.field)
        func report(_ field: String, _ message: String) {
            // A field already reported (or inside one) gets no second, derived message.
            if earlier.contains(where: { field.hasPrefix($0) || $0.hasPrefix(field + ".") }) { return }
            let at = reader.lines[field] ?? reader.lines[field.split(separator: ".").dropLast().joined(separator: ".")] ?? ("(governance)", 0)
            reader.issues.append(GovernanceIssue(file: at.file, line: at.line, field: field, message: message))
        }
        func checkQueue(_ field: String, _ id: String?, level: String?) {
            guard let id else { return }
            guard let queue = queues[id]?.objectValue else {
                report(field, "unknown queue '\(id)' (defined: \(queues.keys.sorted().joined(separator: ", ")))")
                return
            }
            if let level, let queueLevel = queue["level"]?.stringValue, queueLevel != level {
                report(field, "queue '\(id)' is at level \(queueLevel), not \(level)")
            }
        }
        func items(_ section: String) -> [(id: String, fields: [String: ConfigValue])] {
            (config[path: section]?.objectValue ?? [:])
                .compactMap { id, v in v.objectValue.map { (id, $0) } }
                .sorted { ($0.fields["order"]?.numberValue ?? 0) < ($1.fields["order"]?.numberValue ?? 0) }
        }

        for (id, kpi) in items("kpis") {
            let field = "kpis.\(id)"
            let formula = kpi["formula"]?.objectValue ?? [:]
            let kind = formula["kind"]?.stringValue ?? ""
            let needsAnswered = kind == "service_level"
            let needsWithin = kind == "first_contact_resolution" || kind == "lead_conversion"
            if needsAnswered != (formula["answered_within"] != nil) {
                report(field + ".formula.answered_within", needsAnswered ? "\(kind) needs answered_within (e.g. 20s)" : "only service_level takes answered_within")
            }
            if needsWithin != (formula["within"] != nil) {
                report(field + ".formula.within", needsWithin ? "\(kind) needs within (e.g. 7d)" : "only first_contact_resolution and lead_conversion take within")
            }
            let target = kpi["target"]?.objectValue ?? [:]
            if target.count != 1 {
                report(field + ".target", "give exactly one of at_least or at_most")
            }
            let expectedUnit = ["average_speed_of_answer", "average_handle_time"].contains(kind) ? "seconds" : "percent"
            if let unit = kpi["unit"]?.stringValue, unit != expectedUnit {
                report(field + ".unit", "\(kind) is measured in \(expectedUnit), not \(unit)")
            }
            if expectedUnit == "percent", let value = target.values.first?.numberValue, !(0...100).contains(value) {
                report(field + ".target", "a percentage must be between 0 and 100, got \(ConfigValue.number(value))")
            }
            if expectedUnit == "seconds", let value = target.values.first?.numberValue, value < 0 {
                report(field + ".target", "a time in seconds is never below 0, got \(ConfigValue.number(value))")
            }
        }
        for (id, role) in items("roles") {
            for (i, q) in (role["queues"]?.listValue ?? []).enumerated() {
                checkQueue("roles.\(id).queues[\(i)]", q.stringValue, level: role["level"]?.stringValue)
            }
        }
        let rules = items("allocation")
        if let last = rules.last, !(last.fields["when"]?.objectValue ?? [:]).isEmpty {
            report("allocation.\(last.id).when", "the last allocation rule must match everything (`when: {}`), so no dialogue goes unallocated")
        }
        if rules.isEmpty, config[path: "allocation"] != nil, !(config[path: "queues"]?.objectValue ?? [:]).isEmpty {
            report("allocation", "no allocation rules: add at least a catch-all rule (`when: {}`)")
        }
        for (index, rule) in rules.enumerated() {
            let then = rule.fields["then"]?.objectValue ?? [:]
            checkQueue("allocation.\(rule.id).then.queue", then["queue"]?.stringValue, level: then["level"]?.stringValue)
            if (rule.fields["when"]?.objectValue ?? [:]).isEmpty, index < rules.count - 1 {
                report("allocation.\(rule.id).when", "matches everything, so the \(rules.count - 1 - index) rule(s) after it can never apply")
            }
        }
        for (id, rule) in items("escalation") {
            let when = rule["when"]?.objectValue ?? [:]
            let then = rule["then"]?.objectValue ?? [:]
            if (when["sla_breached_by"] == nil) == (when["unanswered_for"] == nil) {
                report("escalation.\(id).when", "give exactly one trigger: sla_breached_by or unanswered_for")
            }
            if let from = when["level"]?.stringValue.flatMap({ levels.firstIndex(of: $0) }),
               let to = then["level"]?.stringValue.flatMap({ levels.firstIndex(of: $0) }), to >= from {
                report("escalation.\(id).then.level", "escalation goes up: \(levels[to]) is not above \(levels[from])")
            }
            checkQueue("escalation.\(id).then.queue", then["queue"]?.stringValue, level: then["level"]?.stringValue)
            for (i, r) in (then["notify"]?.listValue ?? []).enumerated() where roles[r.stringValue ?? ""] == nil {
                report("escalation.\(id).then.notify[\(i)]", "unknown role '\(r)' (defined: \(roles.keys.sorted().joined(separator: ", ")))")
            }
        }
        for (id, rule) in items("proactive") {
            let trigger = rule["trigger"]?.objectValue ?? [:]
            switch trigger["event"]?.stringValue {
            case "sale":
                if trigger["days_after"] == nil { report("proactive.\(id).trigger.days_after", "a sale trigger needs days_after") }
                if trigger["days_before"] != nil { report("proactive.\(id).trigger.days_before", "a sale trigger takes days_after, not days_before") }
            case "contract_end":
                if trigger["days_before"] == nil { report("proactive.\(id).trigger.days_before", "a contract_end trigger needs days_before") }
                if trigger["days_after"] != nil { report("proactive.\(id).trigger.days_after", "a contract_end trigger takes days_before, not days_after") }
            default: break
            }
            checkQueue("proactive.\(id).queue", rule["queue"]?.stringValue, level: rule["level"]?.stringValue)
            // Consent is per purpose and channel: a contact by e-mail needs consent by e-mail.
            if let channel = rule["channel"]?.stringValue, let consent = rule["requires_consent"]?.stringValue,
               let consentChannel = consent.split(separator: "_").last.map(String.init), consentChannel != channel {
                let fitting = Vocabulary.consents.filter { $0.hasSuffix("_" + channel) }
                report("proactive.\(id).requires_consent", fitting.isEmpty
                       ? "a customer gives no consent for contacts by \(channel): a proactive contact's channel must be one with consent (\(Vocabulary.consentChannels.joined(separator: ", ")))"
                       : "\(consent) is consent to contacts by \(consentChannel), this contact is by \(channel) (use \(fitting.joined(separator: " or ")))")
            }
        }
    }
}
