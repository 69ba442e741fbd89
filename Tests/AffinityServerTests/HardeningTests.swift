import AffinityData
import AffinityLinalg
import AffinityModels
import AffinityPipeline
import Foundation
import Hummingbird
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

@testable import AffinityServer

/// Regression tests of the issue "Hardening": each failed before its fix.
@Suite struct ServiceHardeningTests {
    let fixture = Fixture.shared
    static let adminKey = "admin-key-0123456789abcdef"
    static let apiKey = "api-key-0123456789abcdef"

    func service(access: AccessPolicy = .open, limits: ServiceLimits = ServiceLimits(),
                 loader: (@Sendable (ModelRecord) throws -> Pipeline)? = nil) async throws -> AffinityService {
        let store = try SQLiteStore(path: temporaryDirectory("store") + "/affinity.sqlite")
        return try await AffinityService(store: store, limits: limits, access: access, logger: quietLogger, loader: loader)
    }

    func register(_ client: RouterClient, _ path: String, key: String? = nil, activate: Bool = false) async throws -> TestResponse {
        try await client.send(.post, "/v1/models", body: #"{"path": "\#(path)", "activate": \#(activate)}"#,
                              headers: key.map { [.authorization: "Bearer \($0)"] } ?? [:])
    }

    @Test func adminRoutesNeedTheAdminKey() async throws {
        let s = try await service(access: try AccessPolicy(adminKey: Self.adminKey))
        let client = RouterClient(s)
        #expect(try await register(client, fixture.alsPath).status == 401)
        #expect(try await register(client, fixture.alsPath, key: "admin-key-0123456789abcdeX").status == 401)
        #expect(try await client.get("/v1/models").status == 401)
        #expect(try await client.send(.post, "/v1/models/1/activate").status == 401)
        #expect(try await client.send(.delete, "/v1/models/1").status == 401)
        let ok = try await register(client, fixture.alsPath, key: Self.adminKey, activate: true)
        #expect(ok.status == 201, "\(ok.body)")
        // Without an API key the read routes stay open.
        #expect(try await client.get("/v1/users/u1/recommendations").status == 200)
        #expect(try await client.get("/health").status == 200)
    }

    @Test func theReadAPIKeyGuardsRecommendationsAndEvents() async throws {
        let s = try await service(access: try AccessPolicy(adminKey: Self.adminKey, apiKey: Self.apiKey))
        _ = try await s.register(path: fixture.alsPath, index: nil, activate: true)
        let client = RouterClient(s)
        #expect(try await client.get("/v1/users/u1/recommendations").status == 401)
        #expect(try await client.get("/v1/items/i1/similar").status == 401)
        #expect(try await client.post("/v1/events", #"[{"user":"u1","item":"i2","type":"view"}]"#).status == 401)
        #expect(try await client.post("/v1/recommendations", #"{"history":["i1"]}"#).status == 401)
        for key in [Self.apiKey, Self.adminKey] {
            let r = try await client.send(.get, "/v1/users/u1/recommendations", headers: [.authorization: "Bearer \(key)"])
            #expect(r.status == 200)
        }
        #expect(try await client.get("/health").status == 200)
        #expect(try await client.get("/metrics").status == 200)
    }

    @Test func keysAreComparedWhole() {
        #expect(AccessPolicy.keyMatches("abcdef", "abcdef"))
        #expect(!AccessPolicy.keyMatches("abcde", "abcdef"))
        #expect(!AccessPolicy.keyMatches("abcdefg", "abcdef"))
        #expect(!AccessPolicy.keyMatches("", "abcdef"))
        #expect(!AccessPolicy.keyMatches("abcdeF", "abcdef"))
    }

    @Test func pathsOutsideTheModelDirectoriesAreRefusedWithoutSayingWhatIsThere() async throws {
        let allowed = temporaryDirectory("models")
        try FileManager.default.copyItem(atPath: fixture.alsPath, toPath: allowed + "/ials")
        let s = try await service(access: try AccessPolicy(modelDirectories: [allowed]))
        let client = RouterClient(s)
        let outsideExisting = try await register(client, fixture.easePath)
        let outsideFile = try await register(client, "/etc/passwd")
        let outsideMissing = try await register(client, "/no/such/path")
        let escape = try await register(client, allowed + "/../" + URL(fileURLWithPath: fixture.easePath).lastPathComponent)
        for r in [outsideExisting, outsideFile, outsideMissing, escape] {
            #expect(r.status == 403)
            #expect(r.errorMessage == outsideMissing.errorMessage)
        }
        // A pipeline file inside that names a model outside is refused the same way.
        try Data(#"{"retrievers": [{"model": "\#(fixture.easePath)"}]}"#.utf8).write(to: URL(fileURLWithPath: allowed + "/p.json"))
        let viaPipeline = try await register(client, allowed + "/p.json")
        #expect(viaPipeline.status == 403 && viaPipeline.errorMessage.contains("retrievers[0].model"), "\(viaPipeline.body)")
        try Data(#"{"retrievers": [{"model": "ials"}]}"#.utf8).write(to: URL(fileURLWithPath: allowed + "/q.json"))
        #expect(try await register(client, allowed + "/q.json").status == 201)
        // A symbolic link inside that points outside is outside.
        try FileManager.default.createSymbolicLink(atPath: allowed + "/link", withDestinationPath: fixture.easePath)
        #expect(try await register(client, allowed + "/link").status == 403)
        // Inside: registered under its canonical absolute path, even when given with ".." parts.
        let inside = try await register(client, allowed + "/./ials/../ials")
        #expect(inside.status == 201, "\(inside.body)")
        #expect(inside.json["path"] as? String == AccessPolicy.realPath(allowed + "/ials"))
    }

    @Test func loadsRunOffTheRequestThreadsBoundedAndTimedOut() async throws {
        let gate = DispatchSemaphore(value: 0)
        let model = try AffinityService.loadPipeline(ModelRecord(id: 0, path: fixture.alsPath, index: nil, modelType: "", registeredAt: 0, active: false))
        var limits = ServiceLimits()
        limits.maxConcurrentLoads = 1
        limits.loadTimeoutSeconds = 0.5
        let s = try await service(limits: limits) { _ in
            gate.wait()   // a load that hangs (a slow disk, a huge index)
            return model
        }
        let client = RouterClient(s)
        // The first load times out with 503 (not a hung request) and keeps its slot while it runs.
        let first = try await register(client, fixture.alsPath)
        #expect(first.status == 503, "\(first.body)")
        #expect(first.errorMessage.contains("took longer than"))
        // A second load beyond the limit is refused at once.
        let second = try await register(client, fixture.alsPath)
        #expect(second.status == 429, "\(second.body)")
        // Health still answers while the load is stuck.
        #expect(try await client.get("/health").status == 503)
        gate.signal()
        for _ in 0..<100 where s.loads.inProgress > 0 { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(s.loads.inProgress == 0)
        gate.signal()
        #expect(try await register(client, fixture.alsPath).status == 201)
    }

    @Test func onlyTheActiveAndThePreviousModelStayLoaded() async throws {
        let s = try await service()
        var ids: [Int] = []
        for path in [fixture.alsPath, fixture.easePath, fixture.alsPath, fixture.easePath] {
            ids.append(try await s.register(path: path, index: nil).id)
        }
        #expect(s.loadedModelIDs.isEmpty)   // registration validates and releases
        for id in ids { try await s.activate(id: id) }
        #expect(s.loadedModelIDs == [ids[3], ids[2]])
        // DELETE: inactive models only.
        let client = RouterClient(s)
        #expect(try await client.send(.delete, "/v1/models/\(ids[3])").status == 409)
        #expect(try await client.send(.delete, "/v1/models/\(ids[2])").status == 204)
        #expect(s.loadedModelIDs == [ids[3]])
        #expect(try await client.send(.delete, "/v1/models/\(ids[2])").status == 404)
        #expect(try await client.send(.delete, "/v1/models/x").status == 400)
        #expect(try await s.store.models().map(\.id) == [ids[0], ids[1], ids[3]])
    }

    @Test func nonRegularFilesAreRefusedWithoutBlocking() async throws {
        let folder = temporaryDirectory("fifo-model")
        try FileManager.default.copyItem(atPath: fixture.alsPath + "/vocabulary.json", toPath: folder + "/vocabulary.json")
        #expect(mkfifo(folder + "/model.safetensors", 0o600) == 0)
        let s = try await service()
        let r = try await register(RouterClient(s), folder)
        #expect(r.status == 422)
        #expect(r.errorMessage.contains("not a regular file"))
    }

    @Test func controlCharactersInIDsAreRefused() async throws {
        let (s, storePath) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(s)
        for id in ["u\\u0000x", "u\\tx", "u\\nx", "\\u007f"] {
            let r = try await client.post("/v1/events", #"[{"user":"\#(id)","item":"i1","type":"view"}]"#)
            #expect(r.status == 400, "\(id): \(r.body)")
            #expect(r.errorMessage.contains("control character"))
        }
        #expect(try await client.get("/v1/users/u%00x/recommendations").status == 400)
        #expect(try await client.get("/v1/items/i%0A1/similar").status == 400)
        #expect(try s.store.eventCount() == 0)
        // Non-ASCII IDs are fine and come back byte for byte after a restart.
        #expect(try await client.post("/v1/events", #"[{"user":"üser 1","item":"i1","type":"view"}]"#).status == 200)
        s.close()
        let reopened = try await AffinityService(store: try SQLiteStore(path: storePath), logger: quietLogger)
        #expect(await reopened.eventHistory(ofUser: "üser 1") == ["i1"])
    }

    @Test func aDeletedActiveModelFallsBackToThePreviousGoodOne() async throws {
        let dir = temporaryDirectory("fallback")
        try FileManager.default.copyItem(atPath: fixture.alsPath, toPath: dir + "/a")
        try FileManager.default.copyItem(atPath: fixture.easePath, toPath: dir + "/b")
        let storePath = dir + "/affinity.sqlite"
        var s: AffinityService? = try await AffinityService(store: try SQLiteStore(path: storePath), logger: quietLogger)
        let a = try await s!.register(path: dir + "/a", index: nil, activate: true)
        _ = try await s!.register(path: dir + "/b", index: nil, activate: true)
        s!.close()
        s = nil
        try FileManager.default.removeItem(atPath: dir + "/b")
        // Before the fix the service threw here and the server could not start again.
        let restarted = try await AffinityService(store: try SQLiteStore(path: storePath), logger: quietLogger)
        #expect(restarted.activeRecord == nil)
        let fallback = try await restarted.activateLastGoodModel()
        #expect(fallback?.id == a.id)
        #expect(try await RouterClient(restarted).get("/health").status == 200)
    }

    @Test func anAnswerThatCannotBeEncodedIsA500NotAnEmpty200() async throws {
        // An iALS model whose factors hold NaN (built in memory: files with NaN are refused on load).
        let base = fixture.als
        var users = base.factors.userFactors
        users.values[0] = .nan
        let broken = ALS(configuration: base.configuration, interactions: base.interactions,
                         factors: FactorModel(userFactors: users, itemFactors: base.factors.itemFactors))
        let trained = TrainedModel(model: broken, users: fixture.log.users, items: fixture.log.items)
        let serving = try ServingModel(trained: trained, index: nil, buildIndex: false)
        let s = try await service { _ in .single(serving) }
        _ = try await s.register(path: fixture.alsPath, index: nil, activate: true)
        let r = try await RouterClient(s).get("/v1/users/\(fixture.log.users[0])/recommendations?exclude_seen=false")
        #expect(r.status == 500, "\(r.body)")
        #expect(r.errorMessage.contains("reference"))
    }

    @Test func internalErrorsAreOpaqueWithAReference() async throws {
        let store = FailingStore()
        let s = try await AffinityService(store: store, logger: quietLogger)
        store.failing = true
        let r = try await RouterClient(s).get("/v1/models")
        #expect(r.status == 500)
        #expect(!r.errorMessage.contains("/"))
        #expect(!r.errorMessage.contains("SELECT"))
        #expect(r.errorMessage.contains("reference"))
        let events = try await RouterClient(s).post("/v1/events", #"[{"user":"u","item":"i","type":"view"}]"#)
        #expect(events.status == 503)
        #expect(!events.errorMessage.contains("SELECT") && !events.errorMessage.contains("/secret"))
    }

    @Test func headHealthAnswers() async throws {
        let (s, _) = try await fixture.service(model: fixture.alsPath)
        let r = try await RouterClient(s).send(.head, "/health")
        #expect(r.status == 200)
        #expect(r.body.isEmpty)
    }

    @Test func outOfRangeNumbersNameTheField() async throws {
        let (s, _) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(s)
        let k = try await client.post("/v1/recommendations", #"{"history":["i1"],"k":99999999999999999999}"#)
        #expect(k.status == 400)
        #expect(k.errorMessage.hasPrefix("k:"), "\(k.errorMessage)")
        let t = try await client.post("/v1/events", #"[{"user":"u","item":"i1","type":"view","timestamp":1e400}]"#)
        #expect(t.status == 400)
        #expect(t.errorMessage.contains("timestamp"), "\(t.errorMessage)")
        // 0.0 is a number, not the integer the document asks for (schemathesis found it accepted).
        let fraction = try await client.post("/v1/events", #"[{"user":"u","item":"i1","type":"view","timestamp":0.0}]"#)
        #expect(fraction.status == 400 && fraction.errorMessage == "timestamp: expected an integer, got 0.0", "\(fraction.body)")
        #expect(try await client.post("/v1/events", #"[{"user":"u1.5","item":"i1","type":"view","timestamp":10}]"#).status == 200)
    }

    @Test func aSecondProcessCannotOpenTheSameStore() throws {
        let path = temporaryDirectory("lock") + "/affinity.sqlite"
        let first = try SQLiteStore(path: path)
        #expect { try SQLiteStore(path: path) } throws: { "\($0)".contains("in use by another affinity process") }
        first.close()
        // Released on close: the store opens again.
        let again = try SQLiteStore(path: path)
        again.close()
    }
}

/// A store whose every read fails with a message holding a path and SQL, as SQLite's do.
final class FailingStore: AffinityStore, @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible { var description = "/secret/path/affinity.sqlite: SELECT id FROM models: disk I/O error" }
    /// Reads fail once this is set (after the service has opened).
    var failing = false
    var location: String { "failing" }
    var counts: StoreCounts { StoreCounts(events: 0, users: 0) }
    func append(_ events: [Event]) async throws -> [Int64] { throw Failure() }
    func history(ofUser user: String) async throws -> [StoredEvent] {
        if failing { throw Failure() }
        return []
    }
    func sampleUsers(limit: Int) async throws -> [String] { throw Failure() }
    func events(after seq: Int64, limit: Int) async throws -> [StoredEvent] { throw Failure() }
    func registerModel(path: String, index: String?, modelType: String) async throws -> ModelRecord { throw Failure() }
    func models() async throws -> [ModelRecord] {
        if failing { throw Failure() }
        return []
    }
    func setActiveModel(id: Int) async throws { throw Failure() }
    func deleteModel(id: Int) async throws { throw Failure() }
    func changes() -> AsyncStream<StoreChange>? { nil }
    func close() {}
}

/// Issue "As a newcomer would use it", item 5: rating events carry a value, and the model's
/// threshold decides whether one is a positive.
@Suite struct RatingEventTests {
    let fixture = Fixture.shared

    @Test func ratingEventsArePositiveAtOrAboveTheModelsThreshold() async throws {
        // A model trained on a split with --min-rating 4 records the threshold.
        var trained = try TrainedModel.load(from: fixture.alsPath)
        #expect(trained.positiveThreshold == 4, "unrecorded: the protocol's default")
        trained.info["positive_threshold"] = "3.5"
        let path = temporaryDirectory("rated") + "/model"
        try trained.save(to: path)
        let (service, storePath) = try await fixture.service(model: path)
        let client = RouterClient(service)
        let newcomer = "rater"
        let low = try await client.post("/v1/events", #"[{"user": "\#(newcomer)", "item": "i0", "type": "rating", "value": 2}]"#)
        #expect(low.status == 200)
        #expect(low.json["below_threshold"] as? Int == 1)
        // Only a low rating: no positive history, so an unknown user without fallback is refused.
        #expect(try await client.get("/v1/users/\(newcomer)/recommendations?k=5").status == 404)
        let high = try await client.post("/v1/events", #"{"events": [{"user": "\#(newcomer)", "item": "i1", "type": "rating", "value": 3.5}]}"#)
        #expect(high.json["below_threshold"] as? Int == 0)
        let recs = try await client.get("/v1/users/\(newcomer)/recommendations?k=10")
        #expect(recs.status == 200)
        // Neither rated item comes back: the disliked one is seen, though not a positive.
        #expect(!recs.itemIDs.contains("i0") && !recs.itemIDs.contains("i1"), "\(recs.itemIDs)")
        let placement = await service.placement(ofUser: newcomer, model: try service.requireModel().model.primary)
        #expect(placement.subject == .history([trained.items.index(of: "i1")!]) && placement.history == [trained.items.index(of: "i1")!])
        #expect(Set(placement.seen) == [trained.items.index(of: "i0")!, trained.items.index(of: "i1")!])

        let refused: [(String, String)] = [
            (#"[{"user": "a", "item": "i1", "type": "rating"}]"#, "events[0].value: a rating event needs its rating"),
            (#"[{"user": "a", "item": "i1", "type": "view", "value": 3}]"#, "events[0].value: only rating events carry a value"),
        ]
        for (body, text) in refused {
            let answer = try await client.post("/v1/events", body)
            #expect(answer.status == 400 && answer.errorMessage.hasPrefix(text), "\(answer.errorMessage)")
        }
        // Values survive a restart (schema migration 2).
        service.close()
        let reopened = try await AffinityService(store: try SQLiteStore(path: storePath), logger: quietLogger)
        #expect(try (reopened.store as! SQLiteStore).allEvents().map(\.value) == [2, 3.5])
    }

    @Test func everyRowSplitsMakeEveryRatingPositive() throws {
        var trained = try TrainedModel.load(from: fixture.alsPath)
        trained.info["positive_threshold"] = "none"
        #expect(trained.positiveThreshold == nil)
        #expect(UserEvent(Event(user: "a", item: "b", type: "rating", timestamp: 0, value: 1)).isPositive(threshold: nil))
        #expect(!UserEvent(Event(user: "a", item: "b", type: "rating", timestamp: 0, value: 1)).isPositive(threshold: 4))
        #expect(UserEvent(Event(user: "a", item: "b", type: "view", timestamp: 0)).isPositive(threshold: 4))
    }
}

/// Issue "As a newcomer would use it", item 5: `serve --model X` does not register X again.
@Suite struct ServeModelRegistrationTests {
    let fixture = Fixture.shared

    @Test func servingTheSameModelAgainReusesItsRecord() async throws {
        let (service, _) = try await fixture.service()
        let first = try await service.activateOrRegister(path: fixture.alsPath, index: nil)
        #expect(try await service.activateOrRegister(path: fixture.alsPath, index: nil) == first)
        // Another model activated in between (over HTTP, say): X is activated again, not re-registered.
        let other = try await service.activateOrRegister(path: fixture.easePath, index: nil)
        #expect(other.id != first.id)
        let again = try await service.activateOrRegister(path: fixture.alsPath, index: nil)
        #expect(again.id == first.id && again.active)
        #expect(try await service.store.models().count == 2)
    }
}
