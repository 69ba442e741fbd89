import AffinityANN
import AffinityLinalg
import AffinityModels
import AffinityPipeline
import Foundation
import Testing

@testable import AffinityServer

/// Every route and every error answer, in-process through the router (no socket).
@Suite struct RouteTests {
    let fixture = Fixture.shared

    @Test func healthNeedsAnActiveModel() async throws {
        let (empty, _) = try await fixture.service()
        let client = RouterClient(empty)
        let down = try await client.get("/health")
        #expect(down.status == 503)
        #expect(down.json["status"] as? String == "no active model")
        let recs = try await client.get("/v1/users/u1/recommendations")
        #expect(recs.status == 503)
        #expect(recs.errorMessage.contains("no active model"))

        let (service, _) = try await fixture.service(model: fixture.alsPath)
        let up = try await RouterClient(service).get("/health")
        #expect(up.status == 200)
        #expect((up.json["model"] as? [String: Any])?["type"] as? String == "ials")
    }

    @Test func userRecommendationsMatchTheModelAndLeaveOutSeenItems() async throws {
        let (service, _) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(service)
        let users = fixture.log.users, items = fixture.log.items
        for u in [0, 5, 77] {
            let r = try await client.get("/v1/users/\(users[u])/recommendations?k=5")
            #expect(r.status == 200)
            #expect(r.json["retrieval"] as? String == "ann")
            // HNSW over 60 items with ef 64 is exact: the same list as the model's own top-5.
            let expected = try fixture.als.recommend(user: u, k: 5).map { items[$0.index] }
            #expect(r.itemIDs == expected)
            let seen = Set(fixture.als.seenItems(ofUser: u).map { items[$0] })
            #expect(r.itemIDs.allSatisfy { !seen.contains($0) })
        }
        // exclude_seen=false lets seen items back; exclude= removes named ones.
        let all = try await client.get("/v1/users/u0/recommendations?k=60&exclude_seen=false")
        #expect(all.itemIDs.count == 60)
        let first = try await client.get("/v1/users/u0/recommendations?k=3")
        let without = try await client.get("/v1/users/u0/recommendations?k=3&exclude=\(first.itemIDs[0]),nonexistent")
        #expect(!without.itemIDs.contains(first.itemIDs[0]))
        #expect(without.itemIDs.prefix(2) == first.itemIDs.dropFirst().prefix(2))
    }

    @Test func explanationsNameHistoryItems() async throws {
        for path in [fixture.alsPath, fixture.easePath] {
            let (service, _) = try await fixture.service(model: path)
            let r = try await RouterClient(service).get("/v1/users/u3/recommendations?k=3&explain=true")
            #expect(r.status == 200)
            let seen = Set(fixture.als.seenItems(ofUser: fixture.log.users.index(of: "u3")!).map { fixture.log.items[$0] })
            #expect(r.itemIDs.count == 3)
            for item in r.json["items"] as? [[String: Any]] ?? [] {
                let because = item["because"] as? [[String: Any]] ?? []
                #expect(!because.isEmpty)
                #expect(because.allSatisfy { seen.contains($0["item"] as? String ?? "") })
            }
        }
    }

    @Test func unknownUsersAndBadParameters() async throws {
        let (service, _) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(service)
        let unknown = try await client.get("/v1/users/stranger/recommendations")
        #expect(unknown.status == 404)
        #expect(unknown.errorMessage.contains("unknown user 'stranger'"))
        let popular = try await client.get("/v1/users/stranger/recommendations?fallback=popular&k=4")
        #expect(popular.status == 200)
        #expect(popular.json["retrieval"] as? String == "popular")
        #expect(popular.itemIDs.count == 4)
        for (query, field) in [("k=0", "k"), ("k=abc", "k"), ("k=100000", "k"), ("explain=maybe", "explain"),
                               ("exclude_seen=2", "exclude_seen"), ("fallback=random", "fallback")] {
            let r = try await client.get("/v1/users/u1/recommendations?\(query)")
            #expect(r.status == 400, "\(query)")
            #expect(r.errorMessage.hasPrefix(field), "\(query): \(r.errorMessage)")
        }
        let noRoute = try await client.get("/v1/nothing")
        #expect(noRoute.status == 404)
        #expect(noRoute.errorMessage.contains("no route"))
    }

    @Test func historyRecommendations() async throws {
        let (service, _) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(service)
        let r = try await client.post("/v1/recommendations", #"{"history": ["i1", "i2", "i3"], "k": 5, "explain": true}"#)
        #expect(r.status == 200)
        #expect(r.itemIDs.count == 5)
        #expect(Set(r.itemIDs).isDisjoint(with: ["i1", "i2", "i3"]))
        // The same as the model's own fold-in.
        let history = ["i1", "i2", "i3"].map { fixture.log.items.index(of: $0)! }
        #expect(r.itemIDs == (try fixture.als.recommend(history: history, k: 5)).map { fixture.log.items[$0.index] })
        let empty = try await client.post("/v1/recommendations", #"{"history": []}"#)
        #expect(empty.json["retrieval"] as? String == "popular")

        let cases: [(String, Int, String)] = [
            (#"{"history": ["i1", "nope"]}"#, 400, "history[1]: unknown item 'nope'"),
            (#"{"history": ["i1"], "k": 0}"#, 400, "k: must be between 1 and 1000"),
            (#"{"k": 3}"#, 400, "missing field 'history'"),
            (#"{"history": "i1"}"#, 400, "history: expected an array"),
            (#"{"history": ["i1"], "k": "ten"}"#, 400, "k: expected an integer"),
            (#"{"history": ["i1"#, 400, "malformed JSON"),
            ("", 400, "request body is empty"),
        ]
        for (body, status, message) in cases {
            let e = try await client.post("/v1/recommendations", body)
            #expect(e.status == status, "\(body)")
            #expect(e.errorMessage.hasPrefix(message), "\(body): \(e.errorMessage)")
            #expect(e.contentType == "application/json")
        }
        var small = ServiceLimits()
        small.maxHistory = 2
        small.maxBodyBytes = 200
        let (limited, _) = try await fixture.service(model: fixture.alsPath, limits: small)
        let long = try await RouterClient(limited).post("/v1/recommendations", #"{"history": ["i1", "i2", "i3"]}"#)
        #expect(long.status == 400)
        let huge = try await RouterClient(limited).post("/v1/recommendations", #"{"history": [""# + String(repeating: #""i1","#, count: 100) + #""i2"]}"#)
        #expect(huge.status == 413)
        #expect(huge.errorMessage.contains("larger than the limit"))
    }

    @Test func similarItems() async throws {
        let (service, _) = try await fixture.service(model: fixture.easePath)
        let client = RouterClient(service)
        let r = try await client.get("/v1/items/i4/similar?k=3")
        #expect(r.status == 200)
        #expect(r.itemIDs.count == 3)
        #expect(!r.itemIDs.contains("i4"))
        #expect(try await client.get("/v1/items/zzz/similar").status == 404)
        #expect(try await client.get("/v1/items/i4/similar?k=-1").status == 400)
    }

    @Test func eventsAreStoredAndVisibleAtOnce() async throws {
        let (service, storePath) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(service)
        let before = try await client.get("/v1/users/u0/recommendations?k=3")
        let top = before.itemIDs[0]
        // An event on the top item: it is now seen, so it leaves the list, and the fold-in uses it.
        let ack = try await client.post("/v1/events", #"{"events": [{"user": "u0", "item": "\#(top)", "type": "click", "timestamp": 1700000000}]}"#)
        #expect(ack.status == 200)
        #expect(ack.json["accepted"] as? Int == 1)
        let after = try await client.get("/v1/users/u0/recommendations?k=3")
        #expect(!after.itemIDs.contains(top))
        // A user the model never saw, known only by events (bare-array form).
        let newUser = try await client.post("/v1/events", #"[{"user": "fresh", "item": "i1", "type": "view"}, {"user": "fresh", "item": "i2", "type": "purchase"}, {"user": "fresh", "item": "brand-new-item", "type": "view"}]"#)
        #expect(newUser.json["unknown_items"] as? Int == 1)
        let fresh = try await client.get("/v1/users/fresh/recommendations?k=4")
        #expect(fresh.status == 200)
        #expect(Set(fresh.itemIDs).isDisjoint(with: ["i1", "i2"]))
        let foldIn = try fixture.als.recommend(history: ["i1", "i2"].map { fixture.log.items.index(of: $0)! }, k: 4)
        #expect(fresh.itemIDs == foldIn.map { fixture.log.items[$0.index] })
        #expect(try service.store.eventCount() == 4)

        // Bad batches store nothing.
        let bad: [(String, Int, String)] = [
            (#"{"events": [{"user": "a", "item": "i1", "type": "view"}, {"user": "a", "item": "i1", "type": "stare"}]}"#, 400, "events[1].type: 'stare' is not one of"),
            (#"{"events": [{"user": "a", "type": "view"}]}"#, 400, "missing field 'item' in events[0]"),
            (#"{"events": [{"user": "", "item": "i1", "type": "view"}]}"#, 400, "events[0].user: must not be empty"),
            (#"{"events": [{"user": "a", "item": "i1", "type": "view", "timestamp": -5}]}"#, 400, "events[0].timestamp"),
            (#"{"events": []}"#, 400, "events: the batch is empty"),
            (#"{"events": [{"user": "a", "item": "i1", "type": "view"}"#, 400, "malformed JSON"),
        ]
        for (body, status, message) in bad {
            let e = try await client.post("/v1/events", body)
            #expect(e.status == status, "\(body)")
            #expect(e.errorMessage.hasPrefix(message), "\(body): \(e.errorMessage)")
        }
        var small = ServiceLimits()
        small.maxEventsPerBatch = 2
        let (limited, _) = try await fixture.service(model: fixture.alsPath, limits: small)
        let many = try await RouterClient(limited).post("/v1/events", "[" + Array(repeating: #"{"user": "a", "item": "i1", "type": "view"}"#, count: 3).joined(separator: ",") + "]")
        #expect(many.status == 400)
        #expect(try limited.store.eventCount() == 0)
        #expect(try service.store.eventCount() == 4)

        // A restart reads the events back: the seen set still holds the clicked item.
        service.close()
        let reopened = try await AffinityService(store: try SQLiteStore(path: storePath), logger: quietLogger)
        #expect(await reopened.eventHistory(ofUser: "u0") == [top])
        let again = try await RouterClient(reopened).get("/v1/users/u0/recommendations?k=3")
        #expect(again.itemIDs == after.itemIDs)
    }

    @Test func modelRegistryAndHotSwap() async throws {
        let (service, storePath) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(service)
        let list = try await client.get("/v1/models")
        #expect(list.json["active"] as? Int == 1)
        let missing = try await client.post("/v1/models", #"{"path": "/no/such/model"}"#)
        #expect(missing.status == 422)
        #expect(missing.errorMessage.contains("/no/such/model"))
        #expect(try await client.post("/v1/models", #"{"index": "x"}"#).status == 400)
        let registered = try await client.post("/v1/models", #"{"path": "\#(fixture.easePath)"}"#)
        #expect(registered.status == 201)
        #expect(registered.json["model_type"] as? String == "ease")
        let id = registered.json["id"] as? Int ?? -1
        #expect(try await client.get("/v1/users/u1/recommendations").json["retrieval"] as? String == "ann")
        let swapped = try await client.post("/v1/models/\(id)/activate")
        #expect(swapped.status == 200)
        let r = try await client.get("/v1/users/u1/recommendations")
        #expect((r.json["model"] as? [String: Any])?["id"] as? Int == id)
        #expect(r.json["retrieval"] as? String == "exact")
        #expect(try await client.post("/v1/models/99/activate").status == 404)
        #expect(try await client.post("/v1/models/abc/activate").status == 400)

        // An index that does not belong to the model is refused at registration.
        let wrong = try HNSWIndex(dimension: 3, metric: .innerProduct)
        _ = try wrong.add(Matrix(rows: 2, columns: 3, values: [1, 0, 0, 0, 1, 0]))
        let wrongPath = temporaryDirectory("index") + "/wrong.idx"
        try IndexFile.save(wrong, to: wrongPath)
        let mismatch = try await client.post("/v1/models", #"{"path": "\#(fixture.alsPath)", "index": "\#(wrongPath)"}"#)
        #expect(mismatch.status == 422)
        #expect(mismatch.errorMessage.contains("index does not belong to the model"))

        // The registry and the active model survive a restart.
        service.close()
        let reopened = try await AffinityService(store: try SQLiteStore(path: storePath), logger: quietLogger)
        #expect(reopened.activeModel?.record.id == id)
    }

    @Test func hotSwapUnderConcurrentRequestsFailsNone() async throws {
        let (service, _) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(service)
        let ease = try await service.register(path: fixture.easePath, index: nil)
        let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
            for n in 0..<200 {
                group.addTask {
                    if n == 100 { _ = try await service.activate(id: ease.id) }
                    return try await client.get("/v1/users/u\(n % 120)/recommendations?k=5").status
                }
            }
            var out: [Int] = []
            for try await s in group { out.append(s) }
            return out
        }
        #expect(statuses.allSatisfy { $0 == 200 })
        #expect(service.activeModel?.record.id == ease.id)
    }

    @Test func metricsInPrometheusFormat() async throws {
        let (service, _) = try await fixture.service(model: fixture.alsPath)
        let client = RouterClient(service)
        _ = try await client.get("/v1/users/u1/recommendations")
        _ = try await client.get("/v1/users/u1/recommendations?k=0")
        _ = try await client.post("/v1/events", #"[{"user": "u1", "item": "i1", "type": "like"}]"#)
        let m = try await client.get("/metrics")
        #expect(m.status == 200)
        #expect(m.contentType?.hasPrefix("text/plain; version=0.0.4") == true)
        let text = m.body
        #expect(text.contains(#"affinity_http_requests_total{route="/v1/users/{id}/recommendations",method="GET",status="200"} 1"#))
        #expect(text.contains(#"affinity_http_requests_total{route="/v1/users/{id}/recommendations",method="GET",status="400"} 1"#))
        #expect(text.contains(#"affinity_http_request_duration_seconds_count{route="/v1/users/{id}/recommendations",method="GET"} 2"#))
        #expect(text.contains(#"affinity_events_received_total{type="like"} 1"#))
        #expect(text.contains("affinity_events_stored 1"))
        #expect(text.contains(#"affinity_active_model{id="1",type="ials"} 1"#))
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.split(separator: " ").count == 2, "\(line)")
            #expect(Double(line.split(separator: " ").last!) != nil, "\(line)")
        }
    }

    /// Every route the router serves is in openapi.yaml with its method, and every path and method
    /// the document lists is served.
    @Test func openAPIDocumentListsExactlyTheRoutes() async throws {
        let (service, _) = try await fixture.service()
        let served = Set(service.router().routes.map { route -> String in
            let path = "\(route.path)"
            return "\(route.method.rawValue) \(path.hasPrefix("/") ? path : "/" + path)"
        })
        let document = AffinityService.openAPIDocument
        var documented = Set<String>()
        var currentPath: String?
        var inPaths = false
        for line in document.split(separator: "\n", omittingEmptySubsequences: false) {
            if line == "paths:" { inPaths = true; continue }
            if inPaths, !line.isEmpty, !line.hasPrefix(" ") { break }
            if line.hasPrefix("  /"), line.hasSuffix(":"), !line.hasPrefix("   ") {
                currentPath = String(line.dropFirst(2).dropLast())
            } else if let p = currentPath, line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                let method = line.trimmingCharacters(in: .whitespaces).dropLast().uppercased()
                if ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"].contains(method) { documented.insert("\(method) \(p)") }
            }
        }
        #expect(served.count == 13)
        #expect(served == documented, "served only: \(served.subtracting(documented)); documented only: \(documented.subtracting(served))")
        let r = try await RouterClient(service).get("/openapi.yaml")
        #expect(r.status == 200)
        #expect(r.body == document)
        #expect(document.hasPrefix("openapi: 3"))
    }
}

@Suite struct StoreTests {
    @Test func schemaIsCreatedAndMigratedOnce() async throws {
        let path = temporaryDirectory("store") + "/s.sqlite"
        do {
            let store = try SQLiteStore(path: path)
            #expect(try store.eventCount() == 0)
            store.close()
        }
        let again = try SQLiteStore(path: path)   // opening twice must not re-run migrations
        #expect(try await again.models().isEmpty)
        again.close()
    }
}
