import AffinityLinalg

/// Builds indexes from FAISS-style spec strings:
///
/// | spec | index |
/// |---|---|
/// | `Flat` | exact search |
/// | `HNSW32` | HNSW with M = 32 (`efConstruction` from the settings) |
/// | `IVF1024,Flat` | inverted lists over 1,024 k-means cells |
/// | `MIPS,IVF1024,Flat` | the same after the MIPS-to-L2 reduction (inner product only) |
/// | `LSH16x8` | random-hyperplane LSH, 16 tables of 8 bits, exact re-ranking |
/// | `IVF1024,PQ16` | IVF with residuals product-quantised to 16 bytes |
/// | `MIPS,IVF1024,PQ16,Refine` | the same with the MIPS reduction, keeping vectors to re-rank `refine`·k candidates |
///
/// | `OPQ32,IVF4096,PQ32,Refine` | IVF-PQ on OPQ-rotated vectors (a `MIPS` part may follow `OPQ`) |
///
/// A bad spec is rejected naming the part that is wrong.
public enum IndexFactory {
    public enum Kind: Equatable, Sendable {
        case flat
        case hnsw(neighborsPerNode: Int)
        case ivf(lists: Int, mipsReduction: Bool)
        case lsh(tables: Int, bits: Int)
        case ivfpq(lists: Int, subspaces: Int, mipsReduction: Bool, refine: Bool, opq: Bool)
    }

    public static func parse(_ spec: String) throws -> Kind {
        let parts = spec.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else {
            throw IndexError.badSpec(spec: spec, part: spec, reason: "is empty (examples: Flat, HNSW32, IVF1024,Flat, LSH16x8)")
        }
        func number(_ part: String, after prefix: String) throws -> Int {
            guard let n = Int(part.dropFirst(prefix.count)), n > 0 else {
                throw IndexError.badSpec(spec: spec, part: part, reason: "needs a positive number after \(prefix)")
            }
            return n
        }
        var rest = parts[...]
        var opq = false
        if let first = rest.first, first.hasPrefix("OPQ") {
            _ = try number(first, after: "OPQ")
            opq = true
            rest = rest.dropFirst()
        }
        for part in rest where part.hasPrefix("OPQ") {
            throw IndexError.badSpec(spec: spec, part: part, reason: "must come first (OPQ<m>,IVF<n>,PQ<m>)")
        }
        var mips = false
        if rest.first == "MIPS" { mips = true; rest = rest.dropFirst() }
        guard let head = rest.first else { throw IndexError.badSpec(spec: spec, part: parts.last!, reason: "must be followed by an IVF index") }
        if opq && !head.hasPrefix("IVF") {
            throw IndexError.badSpec(spec: spec, part: parts[0], reason: "must be followed by an IVF-PQ index (OPQ<m>,IVF<n>,PQ<m>)")
        }
        if head == "Flat" && rest.count == 1 && !mips { return .flat }
        if head.hasPrefix("HNSW") && rest.count == 1 && !mips { return .hnsw(neighborsPerNode: try number(head, after: "HNSW")) }
        if head.hasPrefix("LSH") && rest.count == 1 && !mips {
            let dims = head.dropFirst(3).split(separator: "x")
            guard dims.count == 2, let t = Int(dims[0]), let b = Int(dims[1]), t > 0, b > 0, b <= 64 else {
                throw IndexError.badSpec(spec: spec, part: head, reason: "must look like LSH<tables>x<bits> with 1...64 bits")
            }
            return .lsh(tables: t, bits: b)
        }
        if head.hasPrefix("IVF") {
            let lists = try number(head, after: "IVF")
            let tail = Array(rest.dropFirst())
            guard let storage = tail.first else { throw IndexError.badSpec(spec: spec, part: head, reason: "must be followed by a storage part (Flat or PQ<m>)") }
            if storage == "Flat" && tail.count == 1 && !opq { return .ivf(lists: lists, mipsReduction: mips) }
            if storage.hasPrefix("PQ") {
                let m = try number(storage, after: "PQ")
                guard tail.count == 1 || (tail.count == 2 && tail[1] == "Refine") else {
                    throw IndexError.badSpec(spec: spec, part: tail.last!, reason: "is not understood after \(storage) (only Refine may follow)")
                }
                if opq, let o = Int(parts[0].dropFirst(3)), o != m {
                    throw IndexError.badSpec(spec: spec, part: parts[0], reason: "must have as many subspaces as \(storage)")
                }
                return .ivfpq(lists: lists, subspaces: m, mipsReduction: mips, refine: tail.count == 2, opq: opq)
            }
            throw IndexError.badSpec(spec: spec, part: storage, reason: "is not a known IVF storage (Flat, PQ<m>)")
        }
        throw IndexError.badSpec(spec: spec, part: mips ? "MIPS" : head,
                                 reason: mips ? "applies to IVF indexes only" : "is not a known index (Flat, HNSW<M>, IVF<n>,Flat, IVF<n>,PQ<m>, LSH<t>x<b>)")
    }

    /// Builds an index of `spec` over `vectors`. `settings` carries build knobs by name
    /// (`efConstruction`, `threads`, `seed`, `iterations`, `normBands`).
    public static func build(spec: String, vectors: Matrix, metric: Metric, settings: [String: String] = [:]) throws -> any VectorIndex {
        let kind = try parse(spec)
        func int(_ key: String, _ fallback: Int) throws -> Int {
            guard let raw = settings[key] else { return fallback }
            guard let v = Int(raw), v >= 0 else { throw IndexError.invalidParameter("\(key)=\(raw): expected a non-negative integer") }
            return v
        }
        let known: Set<String> = ["efConstruction", "threads", "seed", "iterations", "normBands"]
        for key in settings.keys where !known.contains(key) {
            throw IndexError.invalidParameter("unknown build setting '\(key)' (known: \(known.sorted().joined(separator: ", ")))")
        }
        let threads = try int("threads", 0), seed = UInt64(try int("seed", 42))
        switch kind {
        case .flat:
            let index = FlatIndex(dimension: vectors.columns, metric: metric)
            try index.add(vectors)
            return index
        case .hnsw(let m):
            let index = try HNSWIndex(dimension: vectors.columns, metric: metric,
                                      settings: HNSWSettings(neighborsPerNode: m, efConstruction: try int("efConstruction", 200), seed: seed, threads: threads))
            try index.add(vectors)
            return index
        case .ivf(let lists, let mips):
            return try IVFIndex(vectors: vectors, metric: metric,
                                settings: IVFSettings(lists: lists, mipsReduction: mips, iterations: try int("iterations", 10), seed: seed, threads: threads,
                                                      normBands: try int("normBands", 0)))
        case .lsh(let tables, let bits):
            return try LSHIndex(vectors: vectors, metric: metric, settings: LSHSettings(tables: tables, bits: bits, seed: seed))
        case .ivfpq(let lists, let m, let mips, let refine, let opq):
            return try IVFPQIndex(vectors: vectors, metric: metric, settings: IVFPQSettings(
                ivf: IVFSettings(lists: lists, mipsReduction: mips, iterations: try int("iterations", 10), seed: seed, threads: threads,
                                 normBands: try int("normBands", 0)),
                subspaces: m, keepVectorsForRefine: refine, opq: opq))
        }
    }
}
