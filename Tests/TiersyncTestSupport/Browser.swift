import AsyncHTTPClient
import Foundation
import NIOCore

/// Headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`):
/// chromedriver on a loopback port this picks, one browser session, plain JSON over HTTP.
/// The console tests use it as a person would: typing into labelled fields, pressing
/// buttons, reading what the page shows.
///
/// Without Chromium the tests that need it are skipped with a note, unless
/// TIERSYNC_TEST_REQUIRE_BROWSER=1 (as `.ci/run` sets), where that is a failure.
public final class Browser: @unchecked Sendable {
    private let driver: SpawnedProcess
    private let base: String
    private let session: String
    private let http: HTTPClient
    private let profile: TempDir

    public static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    public static let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Whether a browser is there; throws when one is required and missing.
    public static func available() throws -> Bool {
        if chromium != nil, chromedriver != nil { return true }
        if ProcessInfo.processInfo.environment["TIERSYNC_TEST_REQUIRE_BROWSER"] == "1" {
            throw TestFailure("Chromium is required (TIERSYNC_TEST_REQUIRE_BROWSER=1) but not installed: apt-get install chromium chromium-driver")
        }
        print("note: chromium or chromedriver not installed; browser test skipped")
        return false
    }

    public init() async throws {
        guard let chromium = Self.chromium, let chromedriver = Self.chromedriver else { throw TestFailure("no chromium/chromedriver") }
        http = HTTPClient(eventLoopGroupProvider: .singleton)
        profile = try TempDir()
        var started: (SpawnedProcess, String)?
        let discard = Glibc.open("/dev/null", O_WRONLY | O_CLOEXEC)
        guard discard >= 0 else { throw TestFailure("cannot open /dev/null") }
        defer { close(discard) }
        for _ in 0..<5 where started == nil {
            let port = Int.random(in: 20_000...60_000)
            let process = try SpawnedProcess(executable: chromedriver,
                                             arguments: ["--port=\(port)", "--allowed-ips=127.0.0.1", "--log-path=\(profile.path)/chromedriver.log"],
                                             stdout: discard, stderr: discard)
            let base = "http://127.0.0.1:\(port)"
            for _ in 0..<100 {
                if let status = try? await Self.call(http, "GET", base + "/status", nil), (status["value"] as? [String: Any])?["ready"] as? Bool == true {
                    started = (process, base)
                    break
                }
                if !process.isRunning { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            if started == nil { process.terminateAndWait() }
        }
        guard let (process, base) = started else {
            try? await http.shutdown()
            throw TestFailure("chromedriver did not start")
        }
        driver = process
        self.base = base
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome", "acceptInsecureCerts": true,
            "goog:chromeOptions": ["binary": chromium,
                                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                            "--window-size=1280,900", "--user-data-dir=\(profile.path)/profile", "--no-first-run"]],
        ]]]
        do {
            let reply = try await Self.call(http, "POST", base + "/session", capabilities)
            guard let value = reply["value"] as? [String: Any], let id = value["sessionId"] as? String else {
                throw TestFailure("no WebDriver session: \(reply)")
            }
            session = id
        } catch {
            process.terminateAndWait()
            try? await http.shutdown()
            throw error
        }
    }

    /// Ends the browser and the driver.
    public func quit() async {
        _ = try? await Self.call(http, "DELETE", "\(base)/session/\(session)", nil)
        driver.terminate()
        for _ in 0..<50 where driver.isRunning { try? await Task.sleep(for: .milliseconds(100)) }
        if driver.isRunning { kill(driver.processIdentifier, SIGKILL) }
        // Reaped (asking reaps it), not left a zombie for the rest of the run.
        for _ in 0..<100 where driver.isRunning { try? await Task.sleep(for: .milliseconds(20)) }
        try? await http.shutdown()
    }

    @discardableResult
    private static func call(_ http: HTTPClient, _ method: String, _ url: String, _ body: [String: Any]?) async throws -> [String: Any] {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body)))
        }
        let response = try await http.execute(request, timeout: .seconds(60))
        let bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
        let json = (try? JSONSerialization.jsonObject(with: Data(bytes.readableBytesView))) as? [String: Any] ?? [:]
        if response.status.code >= 400 {
            let value = json["value"] as? [String: Any]
            throw TestFailure("WebDriver \(method) \(url): \(response.status.code) \(value?["error"] ?? "") \(value?["message"] ?? "")")
        }
        return json
    }

    @discardableResult
    private func command(_ method: String, _ path: String, _ body: [String: Any]? = nil) async throws -> Any? {
        try await Self.call(http, method, "\(base)/session/\(session)\(path)", body ?? (method == "POST" ? [:] : nil))["value"]
    }

    /// Opens `url` and waits for the page to load.
    public func open(_ url: String) async throws {
        try await command("POST", "/url", ["url": url])
    }

    public var currentURL: String {
        get async throws { try await command("GET", "/url") as? String ?? "" }
    }

    public var title: String {
        get async throws { try await command("GET", "/title") as? String ?? "" }
    }

    /// The page's HTML as the browser holds it.
    public var source: String {
        get async throws { try await command("GET", "/source") as? String ?? "" }
    }

    /// The element `css` selects (the first), or nil.
    public func element(_ css: String) async throws -> String? {
        let found = try await command("POST", "/elements", ["using": "css selector", "value": css]) as? [[String: Any]] ?? []
        return found.first?.values.first as? String
    }

    /// The element `css` selects, waiting up to 5 s for it to appear.
    func require(_ css: String) async throws -> String {
        for _ in 0..<50 {
            if let id = try await element(css) { return id }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("no element '\(css)' on \(try await currentURL)")
    }

    /// Types `text` into the field `css` selects (after clearing it).
    public func type(_ css: String, _ text: String) async throws {
        let id = try await require(css)
        try await command("POST", "/element/\(id)/clear")
        try await command("POST", "/element/\(id)/value", ["text": text])
    }

    /// Clicks what `css` selects (a button submits its form; the next page loads).
    public func click(_ css: String) async throws {
        let before = try await element("html")
        try await command("POST", "/element/\(try await require(css))/click")
        // A submitted form loads a new document (the old one's elements go stale): wait for
        // it, so what follows reads the answer, not the page the click was on.
        for _ in 0..<100 {
            if let now = try? await element("html"), now != before { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("clicking '\(css)' loaded no new page")
    }

    /// Clicks what `css` selects where no page follows (a checkbox, a radio button).
    public func check(_ css: String) async throws {
        try await command("POST", "/element/\(try await require(css))/click")
    }

    /// Presses keys in the focused element (WebDriver key codes: "\u{E007}" is Enter, "\u{E004}" Tab).
    public func keys(_ css: String, _ keys: String) async throws {
        try await command("POST", "/element/\(try await require(css))/value", ["text": keys])
    }

    /// The visible text of what `css` selects.
    public func text(_ css: String) async throws -> String {
        try await command("GET", "/element/\(try await require(css))/text") as? String ?? ""
    }

    /// The element that has the keyboard focus, as its id attribute.
    public func focusedID() async throws -> String {
        let active = try await command("GET", "/element/active") as? [String: Any]
        guard let element = active?.values.first as? String else { return "" }
        return try await command("GET", "/element/\(element)/attribute/id") as? String ?? ""
    }

    /// Saves a PNG of the viewport.
    public func screenshot(to path: String) async throws {
        guard let base64 = try await command("GET", "/screenshot") as? String, let data = Data(base64Encoded: base64) else {
            throw TestFailure("no screenshot")
        }
        try data.write(to: URL(fileURLWithPath: path))
    }
}

/// Runs `body` with a browser, quit however `body` ends; skipped (nil) without Chromium.
public func withBrowser<T>(_ body: (Browser) async throws -> T) async throws -> T? {
    guard try Browser.available() else { return nil }
    let browser = try await Browser()
    return try await withTeardown({ await browser.quit() }) { try await body(browser) }
}
