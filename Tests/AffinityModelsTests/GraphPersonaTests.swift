import AffinityData
import AffinityLinalg
import AffinityNN
import Foundation
import Testing

@testable import AffinityModels

/// LightGCN and AMP-CF: gradients against finite differences, the propagation against a dense
/// reference and across thread counts, planted structure learned, persistence, fold-in, personas,
/// and settings refused by name.
@Suite struct GraphPersonaTests {
    /// Two groups of users; group g likes items g*10..<g*10+10 (each user 6 of them, seeded).
    static func planted(users: Int = 60, groups: Int = 2) -> SparseMatrix {
        var g = SeededGenerator(seed: 3)
        var rows = [Int32](), cols = [Int32]()
        for u in 0..<users {
            let group = u % groups
            var items = Array((group * 10)..<(group * 10 + 10))
            g.shuffle(&items)
            for i in items.prefix(6).sorted() { rows.append(Int32(u)); cols.append(Int32(i)) }
        }
        return SparseMatrix(rowCount: users, columnCount: groups * 10, rows: rows, cols: cols)
    }

    /// Central difference of `f(v)`, the loss with one coordinate set to v, around `value`.
    static func fd(at value: Float, h: Float = 1e-2, _ f: (Float) -> Double) -> Double {
        let plus = f(value + h), minus = f(value - h)
        _ = f(value)
        return (plus - minus) / Double(2 * h)
    }

    @Test func lightGCNPropagationMatchesDenseAndThreads() {
        let x = Self.planted(users: 12)
        let graph = LightGCN.Graph(x)
        let dense = graph.adjacency.dense()
        // Symmetric, rows of 1/sqrt(d_u d_i).
        for r in 0..<dense.rows { for c in 0..<dense.columns { #expect(dense[r, c] == dense[c, r]) } }
        let e = Matrix.random(rows: dense.rows, columns: 5, seed: 9)
        let w: [Float] = [0.1, 0.2, 0.3, 0.4]
        let one = graph.propagate(e, weights: w, threads: 1), two = graph.propagate(e, weights: w, threads: 2)
        #expect(one.values == two.values)
        var reference = Matrix(rows: e.rows, columns: 5), power = e
        for (k, wk) in w.enumerated() {
            if k > 0 { power = dense.multiplied(by: power) }
            for t in reference.values.indices { reference.values[t] += wk * power.values[t] }
        }
        #expect(one.maxAbsDifference(reference) < 1e-5)
    }

    @Test func lightGCNGradientMatchesFiniteDifferences() {
        let x = Self.planted(users: 8)
        let graph = LightGCN.Graph(x)
        let nUsers = x.rowCount, d = 4
        var pairUsers = [Int32](), pairItems = [Int32]()
        for u in 0..<nUsers { for i in x.row(u) { pairUsers.append(Int32(u)); pairItems.append(i) } }
        let batch = Array(0..<12)[...]
        let weights: [Float] = [0.25, 0.25, 0.25, 0.25]
        let ego = Matrix.random(rows: nUsers + x.columnCount, columns: d, seed: 4)
        func loss(_ e0: Matrix, grad: inout Matrix) -> Double {
            var g = SeededGenerator(seed: 1)
            let e = graph.propagate(e0, weights: weights, threads: 1)
            var dE = Matrix(rows: e.rows, columns: d)
            let l = LightGCN.bprBatch(batch: batch, pairUsers: pairUsers, pairItems: pairItems, seen: PatternLookup(x), items: x.columnCount, users: nUsers, e: e, ego: e0,
                                      negatives: 2, regularization: 0.1, dE: &dE, dEgo: &grad, generator: &g)
            let back = graph.propagate(dE, weights: weights, threads: 1)
            for k in grad.values.indices { grad.values[k] += back.values[k] }
            return l / Double(batch.count)
        }
        var analytic = Matrix(rows: ego.rows, columns: d)
        _ = loss(ego, grad: &analytic)
        // The batch's parallel phases give the same gradient for any thread count.
        for threads in [2, 3] {
            var g = SeededGenerator(seed: 1)
            let e = graph.propagate(ego, weights: weights, threads: 1)
            var dE = Matrix(rows: e.rows, columns: d), dEgo = Matrix(rows: e.rows, columns: d)
            var g1 = SeededGenerator(seed: 1)
            var dE1 = Matrix(rows: e.rows, columns: d), dEgo1 = Matrix(rows: e.rows, columns: d)
            let l = LightGCN.bprBatch(batch: batch, pairUsers: pairUsers, pairItems: pairItems, seen: PatternLookup(x), items: x.columnCount, users: nUsers,
                                      e: e, ego: ego, negatives: 2, regularization: 0.1, dE: &dE, dEgo: &dEgo, generator: &g, threads: threads)
            let l1 = LightGCN.bprBatch(batch: batch, pairUsers: pairUsers, pairItems: pairItems, seen: PatternLookup(x), items: x.columnCount, users: nUsers,
                                       e: e, ego: ego, negatives: 2, regularization: 0.1, dE: &dE1, dEgo: &dEgo1, generator: &g1, threads: 1)
            #expect(l == l1 && dE.values == dE1.values && dEgo.values == dEgo1.values)
        }
        var scratch = analytic
        for index in stride(from: 0, to: ego.values.count, by: 3) {
            let saved = ego.values[index]
            let numeric = Self.fd(at: saved) { v in
                var moved = ego
                moved.values[index] = v
                return loss(moved, grad: &scratch)
            }
            #expect(abs(Double(analytic.values[index]) - numeric) < 2e-3 + 2e-2 * abs(numeric), "ego[\(index)]: \(analytic.values[index]) vs \(numeric)")
        }
    }

    /// Inputs large enough that 2 and 3 threads really split the work (420 graph rows: 6 scatter parts and
    /// propagation ranges; 700 positives: 3 margin chunks; 64 softmax users: 8 chunks): the BPR batch,
    /// the softmax batch and the propagation give the same numbers bit for bit as one thread.
    @Test func lightGCNBatchesAreTheSameForAnyThreadCount() {
        let x = Self.planted(users: 400)
        let graph = LightGCN.Graph(x)
        let nUsers = x.rowCount, d = 8, weights: [Float] = [0.25, 0.25, 0.25, 0.25]
        var pairUsers = [Int32](), pairItems = [Int32]()
        for u in 0..<nUsers { for i in x.row(u) { pairUsers.append(Int32(u)); pairItems.append(i) } }
        let batch = Array(0..<700)[...]
        let ego = Matrix.random(rows: nUsers + x.columnCount, columns: d, seed: 4)
        let e = graph.propagate(ego, weights: weights, threads: 1)
        func bpr(_ threads: Int) -> (Double, Matrix, Matrix) {
            var g = SeededGenerator(seed: 1)
            var dE = Matrix(rows: e.rows, columns: d), dEgo = Matrix(rows: e.rows, columns: d)
            let l = LightGCN.bprBatch(batch: batch, pairUsers: pairUsers, pairItems: pairItems, seen: PatternLookup(x), items: x.columnCount,
                                      users: nUsers, e: e, ego: ego, negatives: 2, regularization: 0.1, dE: &dE, dEgo: &dEgo, generator: &g,
                                      threads: threads)
            return (l, dE, dEgo)
        }
        func softmax(_ threads: Int) -> (Double, Matrix) {
            var dE = Matrix(rows: e.rows, columns: d)
            let l = LightGCN.softmaxBatch(users: Array(0..<64), interactions: x, e: e, dE: &dE, threads: threads)
            return (l, dE)
        }
        let (l1, dE1, dEgo1) = bpr(1), (s1, sdE1) = softmax(1)
        for threads in [2, 3] {
            let (l, dE, dEgo) = bpr(threads)
            #expect(l == l1 && dE.values == dE1.values && dEgo.values == dEgo1.values, "BPR, \(threads) threads")
            let (s, sdE) = softmax(threads)
            #expect(s == s1 && sdE.values == sdE1.values, "softmax, \(threads) threads")
            #expect(graph.propagate(ego, weights: weights, threads: threads).values == e.values, "propagation, \(threads) threads")
        }
    }

    @Test func lightGCNSoftmaxGradientMatchesFiniteDifferences() {
        let x = Self.planted(users: 8)
        let graph = LightGCN.Graph(x)
        let d = 4, users = [0, 3, 5], weights: [Float] = [0.25, 0.25, 0.25, 0.25]
        let positives = Double(users.reduce(0) { $0 + x.rowLength($1) })
        let ego = Matrix.random(rows: x.rowCount + x.columnCount, columns: d, seed: 6)
        func loss(_ e0: Matrix, grad: inout Matrix, threads: Int = 1) -> Double {
            let e = graph.propagate(e0, weights: weights, threads: 1)
            var dE = Matrix(rows: e.rows, columns: d)
            let l = LightGCN.softmaxBatch(users: users, interactions: x, e: e, dE: &dE, threads: threads)
            grad = graph.propagate(dE, weights: weights, threads: 1)
            return l / positives
        }
        var analytic = Matrix(rows: ego.rows, columns: d), scratch = analytic, other = analytic
        _ = loss(ego, grad: &analytic)
        _ = loss(ego, grad: &other, threads: 3)
        #expect(other.maxAbsDifference(analytic) < 1e-6)
        for index in stride(from: 0, to: ego.values.count, by: 3) {
            let numeric = Self.fd(at: ego.values[index]) { v in
                var moved = ego
                moved.values[index] = v
                return loss(moved, grad: &scratch)
            }
            #expect(abs(Double(analytic.values[index]) - numeric) < 2e-3 + 2e-2 * abs(numeric), "ego[\(index)]: \(analytic.values[index]) vs \(numeric)")
        }
    }

    static func lightGCNSettings() throws -> LightGCN.Configuration {
        try LightGCN.Configuration().applying(["dimension": "8", "epochs": "60", "batchSize": "64", "learningRate": "0.05",
                                               "validationUsers": "0", "threads": "1"])
    }

    @Test func lightGCNLearnsPlantedGroupsSavesAndFoldsIn() throws {
        let x = Self.planted()
        let model = try LightGCN.fit(x, configuration: try Self.lightGCNSettings())
        // Each user's top 3 unseen items are nearly always in their group (4 unseen ones are).
        var inGroup = 0
        for u in 0..<x.rowCount { for r in try model.recommend(user: u, k: 3) where r.index / 10 == u % 2 { inGroup += 1 } }
        #expect(Double(inGroup) / Double(3 * x.rowCount) > 0.9)
        // Fold-in of a known user's history ranks the group's other items first, too.
        let history = x.row(3).map { Int($0) }
        for r in try model.recommend(history: history, k: 3) { #expect(r.index / 10 == 1) }
        // Saved and loaded: the same scores and fold-in.
        let file = try SafeTensorsFile.decode(try SafeTensorsFile(tensors: model.tensors(), metadata: [:]).encoded(), path: "mem")
        let loaded = try LightGCN(configuration: model.configuration, file: file, path: "mem")
        #expect(loaded.scores(forUser: 5) == model.scores(forUser: 5))
        #expect(loaded.scores(forHistory: history) == model.scores(forHistory: history))
        // Deterministic for a seed, whatever the thread count.
        let again = try LightGCN.fit(x, configuration: try Self.lightGCNSettings().applying(["threads": "2"]))
        #expect(again.factors.userFactors.values == model.factors.userFactors.values)
    }

    @Test func earlyStoppingLendsPositivesAndRefits() throws {
        let x = Self.planted()
        let c = try Self.lightGCNSettings().applying(["validationUsers": "20", "patience": "3", "epochs": "40"])
        let model = try LightGCN.fit(x, configuration: c)
        let outcome = try #require(model.outcome)
        #expect(!outcome.validation.isEmpty)
        #expect(outcome.keptEpoch >= 1 && outcome.keptEpoch <= outcome.validation.count)
        let (kept, targets) = TrainingLoop.lendPositives(x, users: 20, seed: 42)
        #expect(kept.nonZeroCount + targets.reduce(0) { $0 + $1.count } == x.nonZeroCount)
        #expect(targets.filter { !$0.isEmpty }.count == 20)
    }

    @Test func settingsOutOfRangeAreRefusedByName() throws {
        let cases: [(String, String, String)] = [("lightgcn", "layers", "-1"), ("lightgcn", "dimension", "0"), ("lightgcn", "layerWeights", "1,2"),
                                                  ("amp-cf", "personas", "0"), ("amp-cf", "dimension", "0"), ("amp-cf", "temperature", "0"),
                                                  // AdamW with learningRate x decay ≥ 1 would flip the weights' signs every step.
                                                  ("lightgcn", "weightDecay", "200"), ("amp-cf", "personaWeightDecay", "100")]
        for (model, key, value) in cases {
            do {
                _ = try ModelRegistry.fit(model, interactions: Self.planted(), settings: [key: value])
                Issue.record("\(model) accepted \(key)=\(value)")
            } catch ModelError.invalidSetting(let name, _) {
                #expect(name == key, "\(model) \(key)=\(value) named \(name)")
            }
        }
        // A graph too large for memory is refused before anything is allocated, with the size.
        let huge = SparseMatrix(rowCount: 600_000, columnCount: 10, rows: [0], cols: [0])
        do {
            _ = try LightGCN.fit(huge, configuration: try LightGCN.Configuration().applying(["dimension": "65536"]))
            Issue.record("a 600,000-node graph at dimension 65536 was accepted")
        } catch let error as MemoryBudgetError {
            #expect("\(error)".contains("LightGCN"))
        }
    }

    // MARK: AMP-CF

    /// Runs `loss` (which fills the parameters' gradients), then compares about 12 entries of each
    /// parameter's gradient with central differences of `loss`.
    static func checkGradients(_ parameters: [Parameter], loss: () -> Double) {
        _ = loss()
        let analytic = parameters.map(\.grad)
        for (n, p) in parameters.enumerated() {
            for index in stride(from: 0, to: p.value.values.count, by: max(1, p.value.values.count / 12)) {
                let numeric = Self.fd(at: p.value.values[index], h: 5e-3) { v in
                    p.value.values[index] = v
                    return loss()
                }
                let a = Double(analytic[n].values[index])
                #expect(abs(a - numeric) < 3e-3 + 3e-2 * abs(numeric), "\(p.name)[\(index)]: \(a) vs \(numeric)")
            }
        }
    }

    @Test func ampCFStepGradientMatchesFiniteDifferences() throws {
        let x = Self.planted(users: 6)
        let c = try AMPCF.Configuration().applying(["personas": "3", "dimension": "4", "attentionDimension": "3", "temperature": "0.5",
                                                    "positiveEntropy": "0.3", "negativeEntropy": "0.2"])
        let network = AMPCFNetwork(users: x.rowCount, items: x.columnCount, configuration: c)
        // Larger values than the initialisation, so the attention is not flat.
        for p in network.parameters { p.value = Matrix.random(rows: p.value.rows, columns: p.value.columns, seed: UInt64(p.value.values.count)) }
        let users = [0, 1, 4], positives = [Int(x.row(0).first!), Int(x.row(1).first!), Int(x.row(4).last!)]
        let negatives = [2, 15, 7, 19, 11]
        func loss() -> Double {
            for p in network.parameters { p.zeroGrad() }
            return network.step(users: users, positives: positives, negatives: negatives, correction: negatives.map { Float($0) * 0.01 },
                                positiveCorrection: [0.1, 0.2, 0.3], seen: x, threads: 1) / Double(users.count)
        }
        Self.checkGradients(network.parameters, loss: loss)
    }

    @Test func ampCFSoftmaxStepGradientMatchesFiniteDifferences() throws {
        let x = Self.planted(users: 6)
        let c = try AMPCF.Configuration().applying(["personas": "3", "dimension": "4", "attentionDimension": "3", "temperature": "0.5",
                                                    "positiveEntropy": "0.3", "negativeEntropy": "0.2"])
        let network = AMPCFNetwork(users: x.rowCount, items: x.columnCount, configuration: c)
        for p in network.parameters { p.value = Matrix.random(rows: p.value.rows, columns: p.value.columns, seed: UInt64(p.value.values.count) + 7) }
        let users = [0, 1, 4]
        func loss() -> Double {
            for p in network.parameters { p.zeroGrad() }
            return network.softmaxStep(users: users, interactions: x, threads: 2) / Double(users.reduce(0) { $0 + x.rowLength($1) })
        }
        Self.checkGradients(network.parameters, loss: loss)
    }

    @Test func aModelSavedBeforeASettingExistedLoadsWithItsDefault() throws {
        // An AMP-CF configuration as saved before `objective` and `personaWeightDecay` existed.
        let c = try TrainedModel.decodeConfiguration(AMPCF.Configuration.self, json: #"{"personas": 3, "weightDecay": 0.2, "someFutureSetting": 1}"#)
        #expect(c.personas == 3 && c.weightDecay == 0.2 && c.objective == .softmax && c.personaWeightDecay == AMPCF.Configuration().personaWeightDecay)
    }

    static func ampSettings() throws -> AMPCF.Configuration {
        try AMPCF.Configuration().applying(["personas": "2", "dimension": "8", "attentionDimension": "4", "negatives": "8", "epochs": "40",
                                            "batchSize": "32", "learningRate": "0.02", "validationUsers": "0", "threads": "1", "foldInSteps": "20"])
    }

    @Test func ampCFLearnsPlantedGroupsScoresConsistentlyAndSaves() throws {
        let x = Self.planted()
        let model = try AMPCF.fit(x, configuration: try Self.ampSettings())
        var inGroup = 0, total = 0
        for u in 0..<x.rowCount {
            for r in try model.recommend(user: u, k: 3) { total += 1; if r.index / 10 == u % 2 { inGroup += 1 } }
        }
        #expect(Double(inGroup) / Double(total) > 0.9)
        // Exact scores of a subset equal the full scoring; the queries carry the bias slot.
        let all = model.scores(forUser: 7), some = model.scores(ofItems: [3, 12, 19], queries: model.queries(user: 7))
        for (n, i) in [3, 12, 19].enumerated() { #expect(abs(all[i] - some[n]) < 1e-5) }
        #expect(model.queries(user: 7).rows == 2 && model.queries(user: 7).columns == 9)
        // A score is at most its best persona's dot product with [item, bias].
        let q = model.queries(user: 7), v = model.itemEmbeddings
        for i in 0..<x.columnCount {
            let best = (0..<q.rows).map { k in zip(q.row(k), v.row(i)).reduce(Float(0)) { $0 + $1.0 * $1.1 } }.max()!
            #expect(all[i] <= best + 1e-4)
        }
        // Personas and attribution name history items.
        let history = Set(model.seenItems(ofUser: 7))
        let groups = model.personas(user: 7)
        #expect(groups.count == 2 && Set(groups.flatMap { $0.map(\.item) }) == history)
        let a = model.attributions(of: [12], user: 7, size: 3)[0]
        #expect((0..<2).contains(a.persona) && a.characteristic.allSatisfy { history.contains($0.item) })
        // Fold-in: a group-1 history is served group-1 items.
        for r in try model.recommend(history: x.row(3).map { Int($0) }, k: 3) { #expect(r.index / 10 == 1) }
        let file = try SafeTensorsFile.decode(try SafeTensorsFile(tensors: model.tensors(), metadata: [:]).encoded(), path: "mem")
        let loaded = try AMPCF(configuration: model.configuration, file: file, path: "mem")
        #expect(loaded.scores(forUser: 9) == model.scores(forUser: 9))
    }

    @Test func personasOfTwoTasteUsersFollowTheTastes() throws {
        // Four item groups of 10; user u likes 5 items of each of two groups (the pair by u % 6).
        let pairs = [(0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2)]
        var g = SeededGenerator(seed: 5)
        var rows = [Int32](), cols = [Int32]()
        for u in 0..<120 {
            let (a, b) = pairs[u % pairs.count]
            for group in [a, b] {
                var items = Array((group * 10)..<(group * 10 + 10))
                g.shuffle(&items)
                for i in items.prefix(5) { rows.append(Int32(u)); cols.append(Int32(i)) }
            }
        }
        let x = SparseMatrix(rowCount: 120, columnCount: 40, rows: rows, cols: cols)
        let categories = (0..<40).map { [$0 / 10] }
        for objective in ["softmax", "sampled-softmax"] {
            let model = try AMPCF.fit(x, settings: ["personas": "2", "dimension": "8", "attentionDimension": "4", "negatives": "16",
                                                    "epochs": "60", "batchSize": "32", "learningRate": "0.02", "weightDecay": "0.01",
                                                    "personaWeightDecay": "0.01", "validationUsers": "0", "threads": "2", "objective": objective])
            let analysis = try PersonaAnalysis.measure(model, k: 5, categories: categories, threads: 2)
            #expect(analysis.users == 120 && analysis.personas == 2)
            let within = try #require(analysis.withinPersonaGenreSimilarity), random = try #require(analysis.randomGroupGenreSimilarity)
            // Random halves of a two-group history share a group about 4/9 of the time (collapsed
            // personas score exactly that); personas that follow the tastes, more.
            #expect(within > random + 0.1, "\(objective): within \(within), random \(random)")
            #expect(analysis.meanServingAttention > 0.5)
            // Recommendations stay inside the user's two groups.
            var inside = 0, total = 0
            for u in 0..<120 {
                let (a, b) = pairs[u % pairs.count]
                for r in try model.recommend(user: u, k: 5) { total += 1; if [a, b].contains(r.index / 10) { inside += 1 } }
            }
            #expect(Double(inside) / Double(total) > 0.75, "\(objective): \(inside) of \(total)")
        }
    }
}
