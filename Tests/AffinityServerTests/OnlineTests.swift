import AffinityData
import AffinityLinalg
import AffinityModels
import Foundation
import Testing

@testable import AffinityServer

private func onlineSettings(_ path: String, _ edit: (inout OnlineSettings) -> Void = { _ in }) -> OnlineSettings {
    var s = OnlineSettings(statePath: path)
    s.publishInterval = 0.1
    s.model.dimension = 8
    s.model.negatives = 16
    edit(&s)
    return s
}

private func metric(_ text: String, _ name: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(name + " ") { return Double(line.split(separator: " ").last!) }
    return nil
}

/// `affinity serve --online` (issue "Learning while serving"), in-process.
@Suite(.serialized) struct OnlineServingTests {
    let fixture = Fixture.shared

    /// Starting from the iALS fixture: a brand-new item liked by 20 users of the first cluster gets
    /// similar items from that cluster once published, without a restart; a brand-new user is
    /// answered from their events alone at once; metrics show the tables and the lag.
    @Test func newItemsAndUsersWithoutRestart() async throws {
        let (service, _) = try await fixture.service(model: fixture.alsPath)
        defer { service.close() }
        try service.startOnline(onlineSettings(temporaryDirectory("online-state") + "/state"))
        let client = RouterClient(service)
        #expect(try await client.get("/v1/items/brand-new/similar?k=5").status == 404)
        let cohort = (0..<20).map { "u\(3 * $0)" }   // cluster 0 likes i0...i19
        let events = cohort.map { #"{"user": "\#($0)", "item": "brand-new", "type": "view"}"# }.joined(separator: ",")
        for _ in 0..<3 { #expect(try await client.post("/v1/events", "[\(events)]").status == 200) }
        #expect(try await eventually(20) { try await client.get("/v1/items/brand-new/similar?k=5").status == 200 })
        let similar = try await client.get("/v1/items/brand-new/similar?k=5").itemIDs
        let cluster0 = similar.filter { Int($0.dropFirst())! < 20 }.count
        #expect(cluster0 >= 4, "the new item's neighbours are its cohort's items: \(similar)")
        // A user the model never saw, with three cluster-1 items: answered at once, from cluster 1.
        let newcomer = #"[{"user": "newcomer", "item": "i20", "type": "view"}, {"user": "newcomer", "item": "i25", "type": "view"}, {"user": "newcomer", "item": "i31", "type": "view"}]"#
        #expect(try await client.post("/v1/events", newcomer).status == 200)
        let recs = try await client.get("/v1/users/newcomer/recommendations?k=5")
        #expect(recs.status == 200)
        #expect(recs.itemIDs.filter { (20..<40).contains(Int($0.dropFirst()) ?? -1) }.count >= 4, "\(recs.itemIDs)")
        // Published with a row of their own; nothing left to learn.
        #expect(try await eventually(20) {
            let text = service.metricsText()
            return metric(text, "affinity_online_table_ids{table=\"users\"}") == 121 && metric(text, "affinity_online_lag_events") == 0
                && metric(text, "affinity_online_catching_up") == 0
        })
        let text = service.metricsText()
        #expect(metric(text, "affinity_online_table_ids{table=\"items\"}") == 61)
        #expect(metric(text, "affinity_online_events_learned_total") == 63)
        #expect((metric(text, "affinity_online_publishes_total") ?? 0) >= 2)
        #expect(metric(text, "affinity_online_failed") == 0)
        #expect(try await client.get("/health").json["status"] as? String == "ok")
        // An activation would be overwritten by the next publish: refused while learning online.
        let activation = try await client.post("/v1/models/1/activate")
        #expect(activation.status == 409 && activation.errorMessage.contains("--online"))
    }

    /// A restart resumes from the saved state and learns the events stored after it: every
    /// acknowledged event learned exactly once.
    @Test func restartResumesWithoutLosingEvents() async throws {
        let state = temporaryDirectory("online-state") + "/state"
        let (service, storePath) = try await fixture.service(model: fixture.alsPath)
        try service.startOnline(onlineSettings(state) { $0.saveEvery = 1 })
        let client = RouterClient(service)
        func post(_ range: Range<Int>) async throws {
            let events = range.map { #"{"user": "r\#($0 % 7)", "item": "i\#($0 % 60)", "type": "view"}"# }.joined(separator: ",")
            #expect(try await client.post("/v1/events", "[\(events)]").status == 200)
        }
        try await post(0..<50)
        // Wait until a saved state holds the first 50 events, then keep a copy of it: the state a
        // process killed at this moment leaves behind.
        #expect(try await eventually(20) {
            (try? Data(contentsOf: URL(fileURLWithPath: state + "/learner.json"))).flatMap {
                try? JSONSerialization.jsonObject(with: $0) as? [String: Any]
            }?["position"] as? Int == 50
        })
        let crashed = temporaryDirectory("online-crash")
        try FileManager.default.copyItem(atPath: state, toPath: crashed + "/state")
        try await post(50..<80)
        #expect(try await eventually(20) { metric(service.metricsText(), "affinity_online_position") == 80 })
        service.close()
        try FileManager.default.copyItem(atPath: storePath, toPath: crashed + "/affinity.sqlite")
        // The restarted process: the store with all 80 events, the state of 50.
        let (again, _) = try await fixture.service(store: crashed + "/affinity.sqlite")
        defer { again.close() }
        try again.startOnline(onlineSettings(crashed + "/state"))
        #expect(try await eventually(20) {
            let text = again.metricsText()
            return metric(text, "affinity_online_position") == 80 && metric(text, "affinity_online_catching_up") == 0
        })
        #expect(metric(again.metricsText(), "affinity_online_events_learned_total") == 80)
    }

    /// A table at its memory bound stops training; the last published model keeps answering and
    /// /health and /metrics say so.
    @Test func failureKeepsTheLastGoodModel() async throws {
        let (service, _) = try await fixture.service()
        defer { service.close() }
        try service.startOnline(onlineSettings(temporaryDirectory("online-state") + "/state") { $0.model.maxRows = 6 })
        let client = RouterClient(service)
        let first = (0..<5).map { #"{"user": "x\#($0)", "item": "j\#($0 % 2)", "type": "view"}"# }.joined(separator: ",")
        #expect(try await client.post("/v1/events", "[\(first)]").status == 200)
        #expect(try await eventually(20) { try await client.get("/v1/items/j0/similar?k=1").status == 200 })
        let more = (5..<20).map { #"{"user": "x\#($0)", "item": "j\#($0)", "type": "view"}"# }.joined(separator: ",")
        #expect(try await client.post("/v1/events", "[\(more)]").status == 200)
        #expect(try await eventually(20) { metric(service.metricsText(), "affinity_online_failed") == 1 })
        let health = try await client.get("/health")
        #expect(health.status == 200)
        #expect((health.json["status"] as? String ?? "").contains("online training stopped"))
        #expect((health.json["status"] as? String ?? "").contains("maxRows"))
        #expect(try await client.get("/v1/users/x1/recommendations?k=1").status == 200)
        // Events are still stored (and acknowledged) while training is stopped.
        #expect(try await client.post("/v1/events", #"[{"user": "x1", "item": "j1", "type": "view"}]"#).status == 200)
    }

    @Test func futureTimestampsAreRefused() async throws {
        let (service, _) = try await fixture.service(model: fixture.alsPath)
        defer { service.close() }
        let client = RouterClient(service)
        let future = Int64(Date().timeIntervalSince1970) + 10 * 86_400
        let r = try await client.post("/v1/events", #"[{"user": "u1", "item": "i1", "type": "view", "timestamp": \#(future)}]"#)
        #expect(r.status == 400)
        #expect(r.errorMessage.contains("events[0].timestamp"))
        let soon = Int64(Date().timeIntervalSince1970) + 60
        #expect(try await client.post("/v1/events", #"[{"user": "u1", "item": "i1", "type": "view", "timestamp": \#(soon)}]"#).status == 200)
    }
}
