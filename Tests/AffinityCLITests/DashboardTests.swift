import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A WebDriver session (W3C protocol) with headless Chromium through `chromedriver`, spoken over
/// the tests' own loopback HTTP client: the browser test needs Debian's `chromium` and
/// `chromium-driver` and nothing else (`.ci/run` installs them).
final class Browser {
    let driver = Process()
    let port: Int
    let session: String

    /// The chromedriver and chromium binaries, or nil (with the reason) when they are not installed.
    static func binaries() -> (driver: String, browser: String)? {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init) + ["/usr/bin", "/usr/lib/chromium"]
        func find(_ names: [String]) -> String? {
            for dir in path { for name in names where FileManager.default.isExecutableFile(atPath: dir + "/" + name) { return dir + "/" + name } }
            return nil
        }
        guard let driver = find(["chromedriver"]), let browser = find(["chromium", "chromium-browser", "google-chrome"]) else { return nil }
        return (driver, browser)
    }

    /// A free loopback port (bound, read back, released).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    init(driver driverPath: String, browser: String, directory: String) throws {
        port = try Self.freePort()
        driver.executableURL = URL(fileURLWithPath: driverPath)
        driver.arguments = ["--port=\(port)"]
        let log = directory + "/chromedriver.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        driver.standardOutput = FileHandle(forWritingAtPath: log)
        driver.standardError = FileHandle(forWritingAtPath: log)
        try driver.run()
        var ready = false
        for _ in 0..<100 where !ready {
            if let status = try? HTTPClient.send(port: port, "GET", "/status"), status.status == 200 { ready = true } else { usleep(100_000) }
        }
        guard ready else { driver.terminate(); throw CLIError("chromedriver did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")") }
        let capabilities: [String: Any] = ["capabilities": ["alwaysMatch": [
            "browserName": "chrome",
            "goog:chromeOptions": ["binary": browser, "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                                               "--window-size=1280,1800", "--user-data-dir=\(directory)/chromium-profile"]],
        ]]]
        let created = try Self.call(port: port, "POST", "/session", capabilities)
        guard let id = (created["value"] as? [String: Any])?["sessionId"] as? String else {
            driver.terminate()
            throw CLIError("no WebDriver session: \(created)")
        }
        session = id
    }

    static func call(port: Int, _ method: String, _ path: String, _ body: [String: Any]? = nil) throws -> [String: Any] {
        let text = try body.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) } ?? ""
        let response = try HTTPClient.send(port: port, method, path, body: text)
        guard let json = try JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any] else {
            throw CLIError("chromedriver answered \(response.status): \(response.body.prefix(300))")
        }
        if response.status != 200 { throw CLIError("chromedriver \(method) \(path): \(response.status) \(response.body.prefix(300))") }
        return json
    }

    func call(_ method: String, _ path: String, _ body: [String: Any]? = nil) throws -> Any? {
        try Self.call(port: port, method, "/session/\(session)" + path, body)["value"]
    }

    func open(_ url: String) throws { _ = try call("POST", "/url", ["url": url]) }

    /// The elements matching a CSS selector (WebDriver element references).
    func elements(_ selector: String) throws -> [String] {
        let found = try call("POST", "/elements", ["using": "css selector", "value": selector]) as? [[String: Any]] ?? []
        return found.compactMap { $0["element-6066-11e4-a52e-4f735466cecf"] as? String }
    }

    func element(_ selector: String) throws -> String {
        guard let first = try elements(selector).first else { throw CLIError("no element matches \(selector)") }
        return first
    }

    func type(_ text: String, into selector: String) throws { _ = try call("POST", "/element/\(try element(selector))/value", ["text": text]) }
    func click(_ selector: String) throws { _ = try call("POST", "/element/\(try element(selector))/click", [:]) }
    func text(_ selector: String) throws -> String { try call("GET", "/element/\(try element(selector))/text") as? String ?? "" }

    /// Waits up to `seconds` for `selector` to match at least one element.
    func wait(for selector: String, seconds: Double = 15) throws -> [String] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let found = try elements(selector)
            if !found.isEmpty { return found }
            usleep(100_000)
        }
        throw CLIError("nothing matched \(selector) within \(seconds) s; page status: \((try? text("#playground-status")) ?? "?")")
    }

    /// A PNG of the window.
    func screenshot() throws -> Data {
        guard let base64 = try call("GET", "/screenshot") as? String, let data = Data(base64Encoded: base64) else { throw CLIError("no screenshot") }
        return data
    }

    func close() {
        _ = try? Self.call(port: port, "DELETE", "/session/\(session)")
        // chromedriver may ignore SIGTERM while it tears a session down.
        kill(driver.processIdentifier, SIGKILL)
        driver.waitUntilExit()
    }
}

@Suite(.serialized) struct DashboardTests {
    /// The dashboard is a page of the service: the active model, the registry and the playground,
    /// with the keys' rules (nothing guarded on the page itself).
    @Test func dashboardPageShowsTheModelRegistryAndPlayground() throws {
        let (dir, model) = servedModel
        let server = try ServerProcess(arguments: ["--model", model, "--store", dir + "/dash.sqlite"], directory: dir)
        defer { _ = server.signal(SIGTERM) }
        _ = try server.request("POST", "/v1/events", body: #"[{"user": "u7", "item": "i3", "type": "view"}]"#)
        _ = try server.request("GET", "/v1/users/u1/recommendations?k=3")
        let page = try server.request("GET", "/")
        #expect(page.status == 200)
        for part in ["<h2>Active model</h2>", "ials", "id=\"registry\"", "id=\"playground\"", "<option value=\"u7\">", "Requests per minute", "<svg"] {
            #expect(page.body.contains(part), "missing \(part)")
        }
        #expect(page.body.contains("\"model_type\":\"ials\""), "the registry rides in the page when no admin key is set")
        #expect(page.body.replacingOccurrences(of: "http://www.w3.org/2000/svg", with: "").range(of: "http") == nil,
                "no network resource (the SVG namespace is a name, not a fetch)")
    }

    /// A model path is text the page embeds in its script: no path can end the script early.
    @Test func aHostilePathCannotBreakOutOfThePageScript() throws {
        let (dir, model) = servedModel
        // Components "x<!--<script>", "<" and "script>": the path holds both "<!--<script>" and "</script>".
        let hostile = dir + "/x<!--<script>/</script>"
        try FileManager.default.createDirectory(atPath: (hostile as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: model, toPath: hostile)
        let server = try ServerProcess(arguments: ["--model", model, "--store", dir + "/dash-hostile.sqlite"], directory: dir)
        defer { _ = server.signal(SIGTERM) }
        let body = try String(data: JSONSerialization.data(withJSONObject: ["path": hostile]), encoding: .utf8)!
        let registered = try server.request("POST", "/v1/models", body: body)
        #expect(registered.status == 201, "\(registered.body)")
        let page = try server.request("GET", "/").body
        #expect(page.components(separatedBy: "</script>").count == 2, "one closing tag: the page's own")
        #expect(!page.contains("<!--"))
        #expect(page.contains("x\\u003c!--\\u003cscript\\u003e"), "the path rides as \\u escapes")
    }

    @Test func withKeysThePageHoldsNothingTheyGuard() throws {
        let (dir, model) = servedModel
        let admin = dir + "/admin.key", reader = dir + "/reader.key"
        try "admin-key-0123456789abcdef".write(toFile: admin, atomically: true, encoding: .utf8)
        try "reader-key-0123456789abcdef".write(toFile: reader, atomically: true, encoding: .utf8)
        let server = try ServerProcess(arguments: ["--model", model, "--store", dir + "/dash-keys.sqlite", "--admin-key-file", admin,
                                                   "--api-key-file", reader], directory: dir)
        defer { _ = server.signal(SIGTERM) }
        _ = try server.request("POST", "/v1/events", body: #"[{"user": "u7", "item": "i3", "type": "view"}]"#,
                               headers: ["Authorization": "Bearer reader-key-0123456789abcdef"])
        let page = try server.request("GET", "/")
        #expect(page.status == 200)
        #expect(!page.body.contains(model) && !page.body.contains("<td>path</td>"), "the model's path is admin information")
        #expect(!page.body.contains("<option value=\"u7\">"), "user IDs are reader information")
        #expect(page.body.contains("id=\"adminkey\"") && page.body.contains("id=\"apikey\""))
        #expect(page.body.contains("const initialModels = null;"))
    }

    /// Headless Chromium loads the dashboard of a running `affinity serve`, asks the playground for
    /// a user's recommendations and finds them on the page, in the API's order.
    @Test func browserPlaygroundShowsTheUsersRecommendations() throws {
        guard let (driverPath, browserPath) = Browser.binaries() else {
            print("SKIPPED browserPlaygroundShowsTheUsersRecommendations: chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver; .ci/run does)")
            return
        }
        let (dir, model) = servedModel
        let server = try ServerProcess(arguments: ["--model", model, "--store", dir + "/browser.sqlite"], directory: dir)
        defer { _ = server.signal(SIGTERM) }
        let browser = try Browser(driver: driverPath, browser: browserPath, directory: dir)
        defer { browser.close() }
        try browser.open("http://127.0.0.1:\(server.port)/")
        #expect(try browser.text("h1") == "Affinity")
        // The registry rendered by the page's script from the embedded list.
        _ = try browser.wait(for: "#registry tr td")
        #expect(try browser.text("#registry").contains("ials"))
        try browser.type("u1", into: "#user")
        try browser.click("#recommend")
        let rows = try browser.wait(for: "#results tr.result")
        let api = try server.request("GET", "/v1/users/u1/recommendations?k=10&fallback=popular")
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(api.body.utf8)) as? [String: Any])["items"] as! [[String: Any]]
        #expect(rows.count == expected.count)
        let shown = try browser.text("#results").split(separator: "\n").dropFirst().map { $0.split(separator: " ")[1] }
        #expect(shown.map(String.init) == expected.map { $0["item"] as! String }, "the page lists the API's items in its order")
        #expect(try browser.text("#playground-status").contains("for user u1 from model 1 (ials)"))
        if let out = ProcessInfo.processInfo.environment["AFFINITY_SCREENSHOTS"] {
            try browser.screenshot().write(to: URL(fileURLWithPath: out + "/dashboard-test.png"))
        }
    }
}
