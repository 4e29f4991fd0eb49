import Foundation
import TiersyncCore
import TiersyncRules
import TiersyncStore

// What `tiersync generate` writes, as plain values: a seeded random source, UTC calendar
// arithmetic, the tenants' catalogues (topics, channels, products, names) and the
// generator turning them into customers, vehicles or contracts, interactions and leads.
// Nothing here reads the store or the clock: the same inputs give the same records.

/// SplitMix64: small, fast, and the same sequence on every platform and Swift version
/// (the standard library's `random(in:using:)` is not promised to be).
struct SeededRandom {
    private var state: UInt64

    /// An independent stream per purpose, so adding interactions never changes the customers.
    init(seed: UInt64, stream: String) {
        state = seed ^ Self.fnv1a(stream)
        _ = next()
    }

    /// FNV-1a over UTF-8: a stable hash (Swift's `Hasher` is seeded per process).
    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    mutating func unit() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Uniform in 0..<n.
    mutating func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(next().multipliedFullWidth(by: UInt64(n)).high) }
    mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + below(range.count) }
    mutating func chance(_ p: Double) -> Bool { unit() < p }
    mutating func element<T>(_ items: [T]) -> T { items[below(items.count)] }

    /// One of `items`, with probability proportional to its weight.
    mutating func weighted<T>(_ items: [(T, Double)]) -> T {
        let total = items.reduce(0) { $0 + $1.1 }
        var x = unit() * total
        for (item, weight) in items {
            if x < weight { return item }
            x -= weight
        }
        return items[items.count - 1].0
    }

    /// Standard normal (Box–Muller).
    mutating func normal() -> Double {
        let u1 = 1 - unit(), u2 = unit()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }

    /// Log-normal around `median` (half the draws below it), spread `sigma`, within `range`.
    mutating func logNormal(median: Double, sigma: Double, within range: ClosedRange<Double>) -> Double {
        min(max(median * exp(sigma * normal()), range.lowerBound), range.upperBound)
    }
}

/// Days since 1970-01-01 (UTC) and back, without Foundation's calendars (``CivilCalendar``):
/// deterministic and quick.
enum CivilDate {
    static let dayMillis: UInt64 = 86_400_000

    static func day(ofMillis millis: UInt64) -> Int { Int(millis / dayMillis) }
    static func millis(ofDay day: Int) -> UInt64 { UInt64(max(0, day)) * dayMillis }

    static func days(year: Int, month: Int, day: Int) -> Int {
        Int(CivilCalendar.days(year: Int64(year), month: Int64(month), day: Int64(day)))
    }

    static func ymd(_ days: Int) -> (year: Int, month: Int, day: Int) {
        let (y, m, d) = CivilCalendar.date(days: Int64(days))
        return (Int(y), Int(m), Int(d))
    }

    /// `YYYY-MM-DD`, what `date` fields hold.
    static func format(_ days: Int) -> String {
        let (y, m, d) = ymd(days)
        return String(format: "%04d-%02d-%02d", y, m, d)
    }

    /// 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday).
    static func weekday(_ days: Int) -> Int { ((days + 3) % 7 + 7) % 7 }

    /// The same day of the month `months` later (or earlier), clamped to the month's end.
    static func adding(months: Int, to days: Int) -> Int {
        let (y, m, d) = ymd(days)
        let total = y * 12 + (m - 1) + months
        let (ny, nm) = (total / 12, total % 12 + 1)
        let length = self.days(year: nm == 12 ? ny + 1 : ny, month: nm == 12 ? 1 : nm + 1, day: 1) - self.days(year: ny, month: nm, day: 1)
        return self.days(year: ny, month: nm, day: min(d, length))
    }
}

/// Which of the fixtures' tenants the data is for.
enum TenantKind: String, CaseIterable, Sendable {
    case automaker, insurer
}

/// What a generated interaction is about: its topic, how often it comes up, what kind of
/// knowledge it needs and how urgent it tends to be.
struct TopicProfile: Sendable {
    enum Knowledge: Sendable { case scheme, specification, none }
    var name: String
    var weight: Double
    /// Share of each knowledge kind (`none`: the field left out, as a caller who could not say).
    var knowledge: [(Knowledge, Double)]
    /// Weights of low, normal, high, critical.
    var urgency: [Double]
    /// How often the case needs more than the first contact (parts, paperwork, an adjuster):
    /// a sixth of it is resolved hours later in the same dialogue; follow-ups are dialogues of their own.
    var longRunning: Double

    init(_ name: String, _ weight: Double, _ knowledge: [(Knowledge, Double)], urgency: [Double] = [20, 65, 13, 2], long: Double = 0.12) {
        self.name = name
        self.weight = weight
        self.knowledge = knowledge
        self.urgency = urgency
        longRunning = long
    }
}

/// A tenant's catalogue: topics with their mix, channels, products and lead economics,
/// read from the shape of `fixtures/governance/<tenant>` (the topics its queues and
/// allocation rules name, plus everyday ones no rule names).
struct TenantCatalogue: Sendable {
    var kind: TenantKind
    var topics: [TopicProfile]
    var channels: [(String, Double)]
    var leadChannels: (root: [(String, Double)], node: [(String, Double)])
    /// Customers a month, per unit of scale (on top of a base stock).
    var vehicleKind: String
    var products: [(name: String, weight: Double, ev: Bool)]
    var leadWinRate: Double
    var leadWinRateWeb: Double
    var leadValueMedian: Double
    var leadValueSigma: Double
    /// Saturday's share of a weekday's volume.
    var saturday: Double

    static let scheme: [(TopicProfile.Knowledge, Double)] = [(.scheme, 1)]
    static let spec: [(TopicProfile.Knowledge, Double)] = [(.specification, 1)]
    static func mixed(_ schemeShare: Double) -> [(TopicProfile.Knowledge, Double)] { [(.scheme, schemeShare), (.specification, 1 - schemeShare)] }

    static func of(_ kind: TenantKind) -> TenantCatalogue {
        switch kind {
        case .automaker: automaker
        case .insurer: insurer
        }
    }

    static let automaker = TenantCatalogue(
        kind: .automaker,
        topics: [
            TopicProfile("product-information", 10, scheme, urgency: [35, 62, 3, 0]),
            TopicProfile("financing", 6, mixed(0.6)),
            TopicProfile("leasing", 4, mixed(0.5)),
            TopicProfile("opening-hours", 3, [(.none, 1)], urgency: [60, 40, 0, 0]),
            TopicProfile("complaint", 3, [(.none, 0.5), (.specification, 0.5)], urgency: [5, 55, 35, 5], long: 0.4),
            TopicProfile("test-drive", 7, spec, urgency: [30, 65, 5, 0]),
            TopicProfile("offer", 7, spec),
            TopicProfile("trade-in", 3, spec),
            TopicProfile("delivery-date", 4, spec, urgency: [10, 70, 20, 0]),
            TopicProfile("service-appointment", 12, spec, urgency: [25, 65, 10, 0]),
            TopicProfile("maintenance", 5, spec),
            TopicProfile("repair", 5, spec, urgency: [5, 55, 35, 5], long: 0.45),
            TopicProfile("warranty", 4, spec, urgency: [5, 65, 27, 3], long: 0.45),
            TopicProfile("goodwill", 1, spec, urgency: [5, 70, 25, 0], long: 0.6),
            TopicProfile("breakdown", 2, spec, urgency: [0, 10, 50, 40], long: 0.3),
            TopicProfile("battery", 2, mixed(0.5), urgency: [10, 60, 25, 5]),
            TopicProfile("charging", 3, mixed(0.6)),
            TopicProfile("range", 2, mixed(0.8), urgency: [30, 65, 5, 0]),
            TopicProfile("wallbox", 2, mixed(0.5)),
            TopicProfile("connected-services", 2, mixed(0.5)),
            TopicProfile("software-update", 2, mixed(0.3), urgency: [10, 65, 22, 3]),
            TopicProfile("infotainment", 2, mixed(0.5)),
            TopicProfile("recall", 1.5, spec, urgency: [0, 40, 30, 30], long: 0.3),
            TopicProfile("safety", 0.6, spec, urgency: [0, 20, 30, 50], long: 0.3),
            TopicProfile("airbag", 0.3, spec, urgency: [0, 10, 30, 60], long: 0.3),
            TopicProfile("brakes", 0.8, spec, urgency: [0, 20, 40, 40], long: 0.3),
        ],
        channels: [("phone", 38), ("email", 20), ("web", 14), ("chat", 12), ("visit", 14), ("fax", 2)],
        leadChannels: (root: [("web", 45), ("campaign", 15), ("phone", 15), ("email", 10), ("chat", 10), ("event", 5)],
                       node: [("visit", 30), ("phone", 20), ("web", 20), ("email", 10), ("event", 10), ("campaign", 10)]),
        vehicleKind: "vehicle",
        products: [("Aurora Compact", 20, false), ("Aurora Estate", 14, false), ("Vela SUV", 18, false), ("Vela e-SUV", 12, true),
                   ("Strato Sedan", 10, false), ("Strato Electric", 8, true), ("Metro Van", 8, false), ("Metro e-Van", 4, true),
                   ("Pico City", 6, false)],
        leadWinRate: 0.26, leadWinRateWeb: 0.13, leadValueMedian: 38_000, leadValueSigma: 0.35, saturday: 0.45)

    static let insurer = TenantCatalogue(
        kind: .insurer,
        topics: [
            TopicProfile("product-information", 8, scheme, urgency: [35, 62, 3, 0]),
            TopicProfile("terms-and-conditions", 5, scheme, urgency: [30, 65, 5, 0]),
            TopicProfile("premium-payment", 5, mixed(0.4)),
            TopicProfile("opening-hours", 1, [(.none, 1)], urgency: [60, 40, 0, 0]),
            TopicProfile("complaint", 3, [(.none, 0.5), (.specification, 0.5)], urgency: [5, 55, 35, 5], long: 0.4),
            TopicProfile("quote", 9, spec, urgency: [30, 65, 5, 0]),
            TopicProfile("new-policy", 4, spec),
            TopicProfile("renewal", 5, spec),
            TopicProfile("cross-selling", 2, spec, urgency: [40, 60, 0, 0]),
            TopicProfile("policy-change", 6, spec),
            TopicProfile("cover-change", 4, spec),
            TopicProfile("address-change", 4, spec, urgency: [40, 60, 0, 0]),
            TopicProfile("cancellation", 3, spec, urgency: [10, 70, 20, 0]),
            TopicProfile("motor-claim", 6, spec, urgency: [0, 40, 35, 25], long: 0.5),
            TopicProfile("property-claim", 4, spec, urgency: [0, 45, 35, 20], long: 0.5),
            TopicProfile("storm-damage", 2, spec, urgency: [0, 30, 35, 35], long: 0.5),
            TopicProfile("burglary", 1.2, spec, urgency: [0, 25, 35, 40], long: 0.5),
            TopicProfile("claim-status", 7, spec, urgency: [10, 70, 18, 2]),
            TopicProfile("total-loss", 0.8, spec, urgency: [0, 40, 50, 10], long: 0.7),
            TopicProfile("liability-claim", 1, spec, urgency: [0, 60, 35, 5], long: 0.7),
            TopicProfile("bodily-injury", 0.4, spec, urgency: [0, 30, 55, 15], long: 0.7),
            TopicProfile("disputed-claim", 0.8, spec, urgency: [0, 60, 40, 0], long: 0.7),
            TopicProfile("pension", 2, mixed(0.6), urgency: [40, 60, 0, 0]),
            TopicProfile("annuity", 1, mixed(0.5), urgency: [40, 60, 0, 0]),
            TopicProfile("unit-linked", 1, mixed(0.5), urgency: [40, 60, 0, 0]),
        ],
        channels: [("phone", 45), ("email", 22), ("web", 15), ("chat", 8), ("visit", 8), ("fax", 2)],
        leadChannels: (root: [("web", 50), ("phone", 20), ("campaign", 15), ("email", 10), ("chat", 5)],
                       node: [("visit", 25), ("phone", 25), ("web", 20), ("campaign", 15), ("email", 10), ("event", 5)]),
        vehicleKind: "contract",
        products: [("Motor comprehensive", 25, false), ("Motor third-party", 10, false), ("Home contents", 18, false),
                   ("Building", 10, false), ("Personal liability", 15, false), ("Legal protection", 8, false),
                   ("Term life", 7, true), ("Private pension", 7, true)],
        leadWinRate: 0.3, leadWinRateWeb: 0.09, leadValueMedian: 650, leadValueSigma: 0.6, saturday: 0.2)

    /// Long-term products (life, pension) are flagged `ev` in ``products``' third field:
    /// for the insurer it means "runs for decades", for the automaker "electric".
    func isLongTerm(_ product: String) -> Bool { kind == .insurer && products.first { $0.name == product }?.ev == true }
}

/// Names and addresses by country, for customers that look like the market they live in.
struct MarketNames: Sendable {
    var firstNames: [String]
    var lastNames: [String]
    var streets: [String]
    /// City and the first digits of its postal codes.
    var cities: [(String, String)]
    var phonePrefix: String
    var companySuffix: String
    var industries: [String]
    var currency: String
    var emailDomain: String

    static func of(_ country: String) -> MarketNames {
        switch country.uppercased() {
        case "FR", "BE", "LU": french
        case "IT": italian
        case "ES", "PT": spanish
        case "GB", "UK", "IE": british
        default: german
        }
    }

    static let german = MarketNames(
        firstNames: ["Anna", "Lukas", "Sophie", "Leon", "Marie", "Jonas", "Laura", "Felix", "Lena", "Paul", "Julia", "Tim", "Sarah",
                     "Jan", "Lea", "Max", "Katharina", "Thomas", "Sabine", "Michael", "Claudia", "Stefan", "Petra", "Andreas"],
        lastNames: ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann", "Koch",
                    "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Braun", "Zimmermann", "Krüger", "Hartmann", "Lange"],
        streets: ["Hauptstraße", "Bahnhofstraße", "Gartenweg", "Schulstraße", "Lindenallee", "Bergstraße", "Kirchplatz", "Am Markt",
                  "Rosenweg", "Industriestraße"],
        cities: [("Berlin", "10"), ("München", "80"), ("Hamburg", "20"), ("Köln", "50"), ("Frankfurt am Main", "60"),
                 ("Stuttgart", "70"), ("Leipzig", "04"), ("Dresden", "01"), ("Hannover", "30"), ("Nürnberg", "90")],
        phonePrefix: "+49", companySuffix: "GmbH",
        industries: ["Logistik", "Bau", "Pflegedienst", "Elektrotechnik", "Immobilien", "Handel", "Fuhrpark"], currency: "EUR",
        emailDomain: "example.de")

    static let french = MarketNames(
        firstNames: ["Camille", "Louis", "Léa", "Hugo", "Manon", "Lucas", "Chloé", "Jules", "Inès", "Gabriel", "Sarah", "Arthur",
                     "Claire", "Nicolas", "Isabelle", "Pierre"],
        lastNames: ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy", "Moreau", "Simon",
                    "Laurent", "Lefebvre", "Michel", "Garcia", "Fontaine"],
        streets: ["Rue de la Paix", "Avenue Victor Hugo", "Rue du Moulin", "Boulevard Voltaire", "Rue des Écoles", "Place de la Gare"],
        cities: [("Paris", "75"), ("Lyon", "69"), ("Marseille", "13"), ("Toulouse", "31"), ("Lille", "59"), ("Nantes", "44")],
        phonePrefix: "+33", companySuffix: "SARL",
        industries: ["Transports", "Bâtiment", "Services", "Distribution", "Location"], currency: "EUR", emailDomain: "example.fr")

    static let italian = MarketNames(
        firstNames: ["Giulia", "Marco", "Francesca", "Luca", "Chiara", "Matteo", "Sara", "Alessandro", "Elena", "Davide", "Anna", "Paolo"],
        lastNames: ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco", "Bruno", "Gallo"],
        streets: ["Via Roma", "Via Garibaldi", "Corso Italia", "Via Mazzini", "Piazza del Duomo", "Via Verdi"],
        cities: [("Milano", "20"), ("Roma", "00"), ("Torino", "10"), ("Bologna", "40"), ("Napoli", "80"), ("Firenze", "50")],
        phonePrefix: "+39", companySuffix: "S.r.l.",
        industries: ["Trasporti", "Costruzioni", "Servizi", "Commercio", "Noleggio"], currency: "EUR", emailDomain: "example.it")

    static let spanish = MarketNames(
        firstNames: ["Lucía", "Hugo", "María", "Daniel", "Paula", "Pablo", "Carmen", "Javier", "Laura", "Alejandro", "Sofía", "Diego"],
        lastNames: ["García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Martín", "Ruiz"],
        streets: ["Calle Mayor", "Avenida de la Constitución", "Calle Real", "Plaza de España", "Calle del Sol", "Paseo del Prado"],
        cities: [("Madrid", "28"), ("Barcelona", "08"), ("Valencia", "46"), ("Sevilla", "41"), ("Bilbao", "48"), ("Málaga", "29")],
        phonePrefix: "+34", companySuffix: "S.L.",
        industries: ["Transportes", "Construcciones", "Servicios", "Distribución", "Alquiler"], currency: "EUR", emailDomain: "example.es")

    static let british = MarketNames(
        firstNames: ["Oliver", "Amelia", "George", "Isla", "Harry", "Ava", "Jack", "Emily", "Charlie", "Sophie", "James", "Grace"],
        lastNames: ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson", "Wright", "Evans", "Walker"],
        streets: ["High Street", "Station Road", "Church Lane", "Victoria Road", "Park Avenue", "Mill Lane"],
        cities: [("London", "SW1"), ("Manchester", "M1"), ("Birmingham", "B1"), ("Leeds", "LS1"), ("Bristol", "BS1"), ("Glasgow", "G1")],
        phonePrefix: "+44", companySuffix: "Ltd",
        industries: ["Logistics", "Construction", "Services", "Retail", "Rentals"], currency: "GBP", emailDomain: "example.co.uk")
}

/// The staff names `owner` takes: who answered.
let staffNames = ["A. Keller", "B. Vogel", "C. Roth", "D. Frank", "E. Berger", "F. Kaiser", "G. Fuchs", "H. Lang", "I. Weiss",
                  "J. Brandt", "K. Haas", "L. Sommer", "M. Graf", "N. Jung", "O. Hahn", "P. Engel", "R. Pohl", "S. Winter"]

/// The consent fields of `customers`, as purpose and channel.
let consentFields: [(field: String, yes: Double, no: Double)] = [
    ("consent_service_phone", 80, 12), ("consent_service_email", 75, 15),
    ("consent_marketing_phone", 35, 50), ("consent_marketing_email", 45, 40), ("consent_marketing_sms", 20, 55),
]

/// One generated interaction, compact (a load test holds hundreds of thousands): indexes
/// into the catalogue and times in milliseconds; the record's fields are built when written.
struct InteractionSpec: Sendable {
    var customer: Int32
    var topic: Int16
    /// 0: left out, 1: scheme, 2: specification.
    var knowledge: Int8
    /// 0 low … 3 critical.
    var urgency: Int8
    var channel: Int8
    var outbound: Bool
    var followUp: Bool
    var owner: Int16
    var created: UInt64
    var answered: UInt64?
    var abandoned: UInt64?
    var resolved: UInt64?
}

/// One generated lead, compact.
struct LeadSpec: Sendable {
    var customer: Int32
    var channel: String
    var created: UInt64
    var value: Double
    /// won / lost / new / contacted / qualified
    var status: String
    var decided: UInt64?
}

/// A generated customer, its owner and how often it gets in touch.
struct CustomerSpec: Sendable {
    var id: String
    var owner: String?
    var fields: [String: FieldValue]
    var company: Bool
    var keyAccount: Bool
    var segment: String
    var contactWeight: Double
}

/// The generator: customers, vehicles or contracts, interactions and leads for one node,
/// from the seed, the node and the period. Pure: no store, no clock.
struct DataGenerator {
    let catalogue: TenantCatalogue
    let seed: UInt64
    /// The writing node; ids carry it, so generating at several nodes never collides.
    let node: String
    let isRoot: Bool
    /// Who owns the customers (dealers, or agents), with each one's country code; empty: the writer.
    let owners: [(node: String, country: String)]
    /// The writer's own country code (names and addresses when it owns the customers).
    let country: String
    let nowMillis: UInt64
    let months: Int
    let scale: Double

    static let channels = ["phone", "email", "web", "chat", "visit", "fax"]
    static let urgencies = ["low", "normal", "high", "critical"]
    static let knowledgeKinds: [String?] = [nil, "scheme", "specification"]

    var nowDay: Int { CivilDate.day(ofMillis: nowMillis) }
    var startMillis: UInt64 { nowMillis - min(nowMillis, UInt64(Double(months) * 30.4375 * Double(CivilDate.dayMillis))) }

    var customerCount: Int { max(1, Int((Double(120 + 30 * months) * scale).rounded())) }
    var interactionCount: Int { max(1, Int((500 * Double(months) * scale).rounded())) }
    var leadCount: Int { max(1, Int((60 * Double(months) * scale).rounded())) }

    func id(_ kind: String, _ n: Int) -> String { "g\(seed)-\(node)-\(kind)-" + String(format: "%06d", n) }
    func random(_ stream: String) -> SeededRandom { SeededRandom(seed: seed, stream: "\(node)/\(stream)") }

    // MARK: Customers

    func customers() -> [CustomerSpec] {
        var rng = random("customers")
        var out: [CustomerSpec] = []
        out.reserveCapacity(customerCount)
        for n in 1...customerCount {
            let owner = owners.isEmpty ? nil : owners[Int(Double(owners.count) * pow(rng.unit(), 1.4))]  // a few big dealers
            let locale = MarketNames.of(owner?.country ?? country)
            let company = rng.chance(0.12)
            let keyAccount = company && rng.chance(0.25)
            let segment = company ? rng.weighted([("A", 30.0), ("B", 40), ("C", 25), ("D", 5)])
                : rng.weighted([("A", 8.0), ("B", 22), ("C", 42), ("D", 28)])
            var f: [String: FieldValue] = [:]
            f["kind"] = .string(company ? "company" : "person")
            let last = rng.element(locale.lastNames), first = rng.element(locale.firstNames)
            let handle = (first + "." + last).lowercased().folding(options: .diacriticInsensitive, locale: nil)
                .replacingOccurrences(of: " ", with: "")
            if company {
                let name = "\(last) \(rng.element(locale.industries)) \(locale.companySuffix)"
                f["company_name"] = .string(keyAccount && rng.chance(0.5) ? "\(last) Fleet Services \(locale.companySuffix)" : name)
                f["first_name"] = .string(first)  // the contact person
                f["last_name"] = .string(last)
                f["email"] = .string("fleet.\(n)@\(last.lowercased().folding(options: .diacriticInsensitive, locale: nil)).\(locale.emailDomain)")
            } else {
                f["first_name"] = .string(first)
                f["last_name"] = .string(last)
                if rng.chance(0.85) { f["email"] = .string("\(handle)\(n)@\(locale.emailDomain)") }
                if rng.chance(0.3), n > 1 { f["household_id"] = .string(id("hh", rng.int(1...n))) }
            }
            if rng.chance(0.8) { f["phone"] = .string("\(locale.phonePrefix) \(rng.int(20...99)) \(rng.int(1_000_000...9_999_999))") }
            if rng.chance(0.7) { f["mobile"] = .string("\(locale.phonePrefix) 1\(rng.int(50...79)) \(rng.int(1_000_000...9_999_999))") }
            let (city, postal) = rng.element(locale.cities)
            f["street"] = .string("\(rng.element(locale.streets)) \(rng.int(1...180))")
            f["postal_code"] = .string(postal + String(format: "%03d", rng.int(0...999)))
            f["city"] = .string(city)
            f["country"] = .string(String((owner?.country ?? country).uppercased().prefix(2)))
            f["segment_value"] = .string(segment)
            f["segment_potential"] = .string(rng.weighted([("high", 20.0), ("medium", 50), ("low", 30)]))
            if keyAccount { f["key_account"] = .bool(true) } else if rng.chance(0.5) { f["key_account"] = .bool(false) }
            // Consent per purpose and channel: some refuse everything, the rest decide field by
            // field; a field left out is consent never given (which counts as no).
            let refusesAll = rng.chance(0.08)
            for c in consentFields {
                if refusesAll { f[c.field] = .bool(false); continue }
                let answer = rng.weighted([(1, c.yes), (0, c.no), (-1, 100 - c.yes - c.no)])
                if answer >= 0 { f[c.field] = .bool(answer == 1) }
            }
            if let owner {
                f["owning_dealer"] = .string(owner.node)
                if owners.count > 1, rng.chance(0.1) {
                    let other = owners[rng.below(owners.count)].node
                    if other != owner.node { f["servicing_dealer"] = .string(other) }
                }
            }
            let weight = keyAccount ? 2.5 : company ? 1.5 : rng.logNormal(median: 1, sigma: 0.7, within: 0.2...6)
            out.append(CustomerSpec(id: id("cust", n), owner: owner?.node, fields: f, company: company, keyAccount: keyAccount,
                                    segment: segment, contactWeight: weight))
        }
        return out
    }

    // MARK: Vehicles and contracts

    /// Vehicles with their sale date and, when leased or financed, the contract's end (the
    /// automaker), or insurance contracts with their start and end (the insurer).
    func holdings(of customers: [CustomerSpec]) -> [RecordWrite] {
        var rng = random("holdings")
        var out: [RecordWrite] = []
        let windowDays = nowDay - CivilDate.day(ofMillis: startMillis)
        var n = 0
        for customer in customers {
            let count: Int
            switch catalogue.kind {
            case .automaker:
                count = customer.keyAccount ? rng.int(3...12) : customer.company ? rng.int(1...4)
                    : rng.weighted([(0, 15.0), (1, 73), (2, 12)])
            case .insurer:
                count = customer.company ? rng.int(2...6) : rng.weighted([(1, 50.0), (2, 30), (3, 15), (4, 5)])
            }
            guard count > 0 else { continue }
            for _ in 0..<count {
                n += 1
                let product = rng.weighted(catalogue.products.map { ($0.name, $0.weight) })
                var f: [String: FieldValue] = ["kind": .string(catalogue.vehicleKind), "customer_id": .string(customer.id),
                                               "model": .string(product)]
                if let owner = customer.owner { f["owning_dealer"] = .string(owner) }
                let saleDay: Int
                let endDay: Int?
                switch catalogue.kind {
                case .automaker:
                    f["vin"] = .string(Self.vin(&rng))
                    // A third sold within the period (handover and satisfaction calls fall due), the rest up to five years back.
                    saleDay = rng.chance(0.35) ? nowDay - rng.below(max(1, windowDays)) : nowDay - rng.int(max(1, windowDays)...max(windowDays, 5 * 365))
                    let leased = customer.keyAccount ? rng.chance(0.9) : rng.chance(0.45)
                    endDay = leased ? CivilDate.adding(months: rng.element([24, 36, 36, 48]), to: saleDay) : nil
                case .insurer:
                    f["policy_number"] = .string("P-\(rng.int(100_000_000...999_999_999))")
                    saleDay = rng.chance(0.12) ? nowDay - rng.below(max(1, windowDays)) : nowDay - rng.int(max(1, windowDays)...max(windowDays, 8 * 365))
                    if catalogue.isLongTerm(product) {
                        endDay = CivilDate.adding(months: 12 * rng.int(15...35), to: saleDay)
                    } else if rng.chance(0.06) {
                        endDay = nowDay - rng.below(max(1, windowDays))  // cancelled: ended within the period
                    } else {
                        // Annual cover renewing on its anniversary: the next one from today.
                        var end = CivilDate.adding(months: 12, to: saleDay)
                        while end < nowDay { end = CivilDate.adding(months: 12, to: end) }
                        endDay = end
                    }
                }
                f["sale_date"] = .string(CivilDate.format(saleDay))
                if let endDay { f["contract_end_date"] = .string(CivilDate.format(endDay)) }
                out.append(.upsert(DomainSchema.vehicles.name, id: id(catalogue.kind == .automaker ? "veh" : "con", n), f))
            }
        }
        return out
    }

    /// A 17-character VIN of the letters VINs use (no I, O or Q) and a plausible maker prefix.
    static func vin(_ rng: inout SeededRandom) -> String {
        let alphabet = Array("ABCDEFGHJKLMNPRSTUVWXYZ0123456789")
        var text = rng.element(["WAU", "WVW", "WBA", "VF1", "ZFA", "SAL"])
        for _ in 0..<14 { text.append(alphabet[rng.below(alphabet.count)]) }
        return text
    }

    // MARK: Interactions

    /// Days of the period with their relative volume: weekdays (Monday busiest), a quieter
    /// Saturday, almost nothing on Sunday, a gentle seasonal swing.
    func dayWeights() -> [(day: Int, weight: Double)] {
        let first = CivilDate.day(ofMillis: startMillis)
        return (first...nowDay).map { day in
            let weekday = [1.2, 1.0, 1.0, 1.0, 0.9, catalogue.saturday, 0.08][CivilDate.weekday(day)]
            let season = 1 + 0.12 * sin(2 * Double.pi * Double(day % 365) / 365)
            return (day, weekday * season)
        }
    }

    /// An hour of the day for a channel: office hours for voice, fax and walk-ins, most of
    /// the day with an evening peak for digital channels.
    static func hour(channel: Int, saturday: Bool, _ rng: inout SeededRandom) -> Int {
        switch channels[channel] {
        case "phone", "fax", "visit":
            if saturday { return rng.int(9...12) }
            return rng.weighted([(8, 0.7), (9, 1.1), (10, 1.2), (11, 1.1), (12, 0.8), (13, 0.9), (14, 1.0), (15, 1.0), (16, 0.9), (17, 0.6)])
        default:
            return rng.weighted((0..<24).map { h in (h, h < 6 ? 0.08 : h < 8 ? 0.4 : h < 19 ? 1.0 : h < 22 ? 1.3 : 0.5) })
        }
    }

    /// The next moment a back office works (weekdays 8:00–18:00), from `millis`.
    static func officeOpen(from millis: UInt64) -> UInt64 {
        var day = CivilDate.day(ofMillis: millis)
        var time = millis
        while true {
            let dayStart = CivilDate.millis(ofDay: day)
            let open = dayStart + 8 * 3_600_000, close = dayStart + 18 * 3_600_000
            if CivilDate.weekday(day) < 5 {
                if time < open { return open }
                if time < close { return time }
            }
            day += 1
            time = CivilDate.millis(ofDay: day)
        }
    }

    /// Interactions in order of creation, with their outcomes as of `now`.
    func interactions(customers: [CustomerSpec]) -> [InteractionSpec] {
        var rng = random("interactions")
        let total = interactionCount
        let days = dayWeights()
        let dayPick = days.map { ($0.day, $0.weight) }
        let topicPick = catalogue.topics.indices.map { (Int16($0), catalogue.topics[$0].weight) }
        let channelPick = catalogue.channels.map { name, weight in (Int8(Self.channels.firstIndex(of: name)!), weight) }
        // Who gets in touch: cumulative contact weights, searched by bisection.
        var cumulative: [Double] = []
        cumulative.reserveCapacity(customers.count)
        var sum = 0.0
        for c in customers {
            sum += c.contactWeight
            cumulative.append(sum)
        }
        func customer() -> Int32 {
            let x = rng.unit() * sum
            var (lo, hi) = (0, cumulative.count - 1)
            while lo < hi {
                let mid = (lo + hi) / 2
                if cumulative[mid] > x { hi = mid } else { lo = mid + 1 }
            }
            return Int32(lo)
        }
        // The insurer: a storm every few months brings a burst of claims over three days.
        var storms: [Int] = []
        if catalogue.kind == .insurer {
            for _ in 0..<max(1, months / 3) { storms.append(days[rng.below(days.count)].day) }
        }
        let stormTopics = ["storm-damage", "property-claim", "claim-status"].compactMap { name in
            catalogue.topics.firstIndex { $0.name == name }.map { Int16($0) }
        }

        var out: [InteractionSpec] = []
        out.reserveCapacity(total)
        for n in 0..<total {
            let storm = !storms.isEmpty && rng.chance(0.06)
            var spec = InteractionSpec(customer: customer(), topic: storm ? rng.weighted(zip(stormTopics, [60.0, 30, 10]).map { $0 }) : rng.weighted(topicPick),
                                       knowledge: 0, urgency: 1, channel: storm ? rng.weighted([(Int8(0), 70.0), (1, 10), (2, 20)]) : rng.weighted(channelPick),
                                       outbound: false, followUp: false, owner: Int16(rng.below(staffNames.count)), created: 0)
            let topic = catalogue.topics[Int(spec.topic)]
            switch rng.weighted(topic.knowledge) {
            case .none: spec.knowledge = 0
            case .scheme: spec.knowledge = 1
            case .specification: spec.knowledge = 2
            }
            spec.urgency = Int8(rng.weighted(topic.urgency.enumerated().map { ($0.offset, $0.element) }))
            spec.outbound = !storm && rng.chance(0.07)
            if spec.outbound { spec.channel = rng.chance(0.7) ? 0 : 1 }
            let day = storm ? storms[rng.below(storms.count)] + rng.below(3) : rng.weighted(dayPick)
            spec.created = created(day: day, channel: Int(spec.channel), &rng)
            // A follow-up: the same customer and topic again within ten days of an earlier dialogue
            // (what first-contact resolution counts against).
            if n > 20, rng.chance(0.12) {
                let earlier = out[rng.below(out.count)]
                let later = earlier.created + UInt64(rng.logNormal(median: 2 * 86_400, sigma: 0.9, within: 3_600...(10 * 86_400))) * 1000
                if later <= nowMillis {
                    (spec.customer, spec.topic, spec.knowledge, spec.urgency) = (earlier.customer, earlier.topic, earlier.knowledge, earlier.urgency)
                    spec.created = later / 1000 * 1000
                    spec.followUp = true
                    spec.outbound = false
                }
            }
            outcome(&spec, topic: catalogue.topics[Int(spec.topic)], &rng)
            out.append(spec)
        }
        out.sort { ($0.created, $0.customer, $0.topic) < ($1.created, $1.customer, $1.topic) }
        return out
    }

    /// A creation time on `day` for the channel, never after now.
    func created(day: Int, channel: Int, _ rng: inout SeededRandom) -> UInt64 {
        let saturday = CivilDate.weekday(day) == 5
        for _ in 0..<8 {
            let t = CivilDate.millis(ofDay: day) + UInt64(Self.hour(channel: channel, saturday: saturday, &rng)) * 3_600_000
                + UInt64(rng.below(3_600)) * 1000
            if t <= nowMillis, t >= startMillis { return t }
        }
        return max(startMillis, nowMillis - UInt64(rng.int(60...7_200)) * 1000) / 1000 * 1000
    }

    /// When it was answered, abandoned or resolved, as far as `now` has seen.
    func outcome(_ spec: inout InteractionSpec, topic: TopicProfile, _ rng: inout SeededRandom) {
        let created = spec.created
        let seconds: (Double) -> UInt64 = { UInt64($0.rounded()) * 1000 }
        let critical = spec.urgency == 3
        if spec.outbound {
            // A call or mail the node made itself: answered as it is made.
            spec.answered = created + (spec.channel == 0 ? seconds(Double(rng.int(5...40))) : 0)
            spec.resolved = spec.answered! + seconds(rng.logNormal(median: 240, sigma: 0.6, within: 30...3_600))
        } else {
            let channel = Self.channels[Int(spec.channel)]
            let abandonRates: [String: Double] = ["phone": critical ? 0.02 : 0.055, "chat": 0.04, "visit": 0.01]
            let abandonRate = abandonRates[channel] ?? 0
            if rng.chance(abandonRate) {
                spec.abandoned = created + seconds(rng.logNormal(median: channel == "visit" ? 900 : 50, sigma: 0.6, within: 8...3_600))
            } else if channel != "phone", channel != "visit", rng.chance(0.012) {
                // Lost in a queue: nobody ever answered.
            } else {
                let speed = critical ? 0.5 : 1.0
                switch channel {
                case "phone": spec.answered = created + seconds(speed * rng.logNormal(median: 9, sigma: 0.8, within: 2...900))
                case "chat": spec.answered = created + seconds(speed * rng.logNormal(median: 25, sigma: 0.8, within: 3...1_800))
                case "visit": spec.answered = created + seconds(rng.logNormal(median: 90, sigma: 0.7, within: 10...1_800))
                default:
                    // E-mail, web forms and faxes: a back office; half of what comes in after hours waits for the morning.
                    let median: Double = channel == "fax" ? 4 * 3_600 : channel == "web" ? 1.2 * 3_600 : 3_600
                    let start = critical || rng.chance(0.5) ? created : Self.officeOpen(from: created)
                    spec.answered = start + seconds(speed * rng.logNormal(median: median, sigma: 1.0, within: 120...(5 * 86_400)))
                }
                if rng.chance(0.02) {
                    // Answered, then left waiting: never resolved.
                } else if rng.chance(topic.longRunning / 6) {
                    // Waiting for parts, a workshop or an adjuster; most such cases come back as a follow-up instead.
                    spec.resolved = spec.answered! + seconds(rng.logNormal(median: 3 * 3_600, sigma: 0.8, within: 3_600...(3 * 86_400)))
                } else {
                    let handle: Double = ["phone": 330, "chat": 540, "visit": 1_500, "fax": 600][channel] ?? 420
                    spec.resolved = spec.answered! + seconds(rng.logNormal(median: handle, sigma: 0.6, within: 30...(4 * 3_600)))
                }
            }
        }
        // What has not happened by now has not happened.
        if let t = spec.answered, t > nowMillis { spec.answered = nil; spec.resolved = nil }
        if let t = spec.abandoned, t > nowMillis { spec.abandoned = nil }
        if let t = spec.resolved, t > nowMillis { spec.resolved = nil }
    }

    /// The fields of an interaction as its writer gives them: the allocation adds handling
    /// level, queue, priority, SLA due and node, and the decision, when it is written.
    func fields(of spec: InteractionSpec, customers: [CustomerSpec], abandonedField: Bool) -> [String: FieldValue] {
        let topic = catalogue.topics[Int(spec.topic)].name
        let channel = Self.channels[Int(spec.channel)]
        var f: [String: FieldValue] = [
            "customer_id": .string(customers[Int(spec.customer)].id), "channel": .string(channel),
            "direction": .string(spec.outbound ? "outbound" : "inbound"), "topic": .string(topic),
            "urgency": .string(Self.urgencies[Int(spec.urgency)]), "created_at": .string(Timestamp.format(spec.created)),
        ]
        if let kind = Self.knowledgeKinds[Int(spec.knowledge)] { f["knowledge_kind"] = .string(kind) }
        let status: String
        if let resolved = spec.resolved {
            status = resolved + 7 * CivilDate.dayMillis < nowMillis ? "closed" : "resolved"
            f["resolved_at"] = .string(Timestamp.format(resolved))
        } else if spec.abandoned != nil {
            status = "closed"
        } else if spec.answered != nil {
            status = "answered"
        } else {
            status = spec.created + 15 * 60_000 < nowMillis ? "open" : "new"
        }
        f["status"] = .string(status)
        if let answered = spec.answered {
            f["answered_at"] = .string(Timestamp.format(answered))
            f["owner"] = .string(staffNames[Int(spec.owner)])
        }
        if let abandoned = spec.abandoned, abandonedField { f["abandoned_at"] = .string(Timestamp.format(abandoned)) }
        let subject = topic.replacingOccurrences(of: "-", with: " ")
        f["summary"] = .string(spec.outbound ? "Called back about \(subject)" : spec.followUp ? "Again about \(subject)"
                                : spec.abandoned != nil ? "Gave up waiting (\(subject))" : "Asks about \(subject)")
        return f
    }

    // MARK: Leads

    /// Leads in order of creation: from the web, campaigns, calls, walk-ins, events; won or
    /// lost within weeks, the recent ones still open.
    func leads(customers: [CustomerSpec]) -> [LeadSpec] {
        var rng = random("leads")
        let dayPick = dayWeights().map { ($0.day, $0.weight) }
        let channels = isRoot ? catalogue.leadChannels.root : catalogue.leadChannels.node
        var out: [LeadSpec] = []
        for _ in 0..<leadCount {
            let customer = Int32(rng.below(customers.count))
            let channel = rng.weighted(channels)
            let created = self.created(day: rng.weighted(dayPick), channel: channel == "visit" ? 4 : 2, &rng)
            var value = rng.logNormal(median: catalogue.leadValueMedian, sigma: catalogue.leadValueSigma,
                                      within: catalogue.leadValueMedian / 5...catalogue.leadValueMedian * 6)
            let c = customers[Int(customer)]
            if c.keyAccount { value *= Double(rng.int(3...12)) }
            value = catalogue.kind == .automaker ? (value / 10).rounded() * 10 : value.rounded()
            var p = channel == "web" ? catalogue.leadWinRateWeb : catalogue.leadWinRate
            if c.segment == "A" || c.keyAccount { p += 0.1 }
            let won = rng.chance(p)
            let decided = created + UInt64(rng.logNormal(median: won ? 18 : 30, sigma: 0.7, within: 1...120) * 86_400) * 1000
            var lead = LeadSpec(customer: customer, channel: channel, created: created, value: value, status: won ? "won" : "lost",
                                decided: decided)
            if decided > nowMillis {
                let age = (nowMillis - created) / CivilDate.dayMillis
                lead.status = age < 2 ? "new" : age < 10 ? "contacted" : "qualified"
                lead.decided = nil
            }
            out.append(lead)
        }
        out.sort { ($0.created, $0.customer) < ($1.created, $1.customer) }
        return out
    }

    func fields(of lead: LeadSpec, customers: [CustomerSpec], wonField: Bool) -> [String: FieldValue] {
        let c = customers[Int(lead.customer)]
        var f: [String: FieldValue] = [
            "customer_id": .string(c.id), "source_channel": .string(lead.channel), "value": .double(lead.value),
            "currency": .string(MarketNames.of(c.fields["country"]?.stringValue ?? country).currency), "status": .string(lead.status),
            "created_at": .string(Timestamp.format(lead.created)),
        ]
        // Source: where it came in (this node; HQ's web configurator and campaigns at the root).
        // Fulfilling: the customer's dealer, or this node when it owns its customers.
        f["source_node"] = .string(node)
        f["fulfilling_node"] = .string(c.owner ?? node)
        if lead.status == "won", wonField, let decided = lead.decided { f["won_at"] = .string(Timestamp.format(decided)) }
        return f
    }
}
