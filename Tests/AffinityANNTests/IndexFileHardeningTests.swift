import Foundation
import Testing
@testable import AffinityANN
import AffinityLinalg
#if canImport(Glibc)
import Glibc
import AffinityTestScratch
#endif

/// Crafted index files (issue "Hardening", defects 1, 6 and 7): each is refused with an error that
/// names the file, before anything its sizes ask for is allocated.
@Suite struct IndexFileHardeningTests {
    let vectors = Matrix.random(rows: 300, columns: 8, seed: 3)

    func saved(_ spec: String, metric: Metric = .innerProduct) throws -> (path: String, bytes: [UInt8]) {
        let dir = TestScratch.path("affinity-idx")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/index.idx"
        let index = try IndexFactory.build(spec: spec, vectors: vectors, metric: metric, settings: ["threads": "1", "iterations": "2"])
        try IndexFile.save(index, to: path)
        return (path, Array(try Data(contentsOf: URL(fileURLWithPath: path))))
    }

    /// The header's JSON object of a saved index.
    func json(_ bytes: [UInt8]) -> [String: Any] {
        let length = Int(bytes[32..<40].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        return try! JSONSerialization.jsonObject(with: Data(bytes[40..<(40 + length)])) as! [String: Any]
    }

    /// The file with its header JSON replaced (sections keep their 64-byte alignment).
    func withJSON(_ bytes: [UInt8], _ change: (inout [String: Any]) -> Void) -> [UInt8] {
        let length = Int(bytes[32..<40].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        var object = json(bytes)
        change(&object)
        let newJSON = Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
        var out = Array(bytes[0..<32])
        withUnsafeBytes(of: UInt64(newJSON.count).littleEndian) { out += $0 }
        out += newJSON
        while out.count % 64 != 0 { out.append(0) }
        return out + bytes[((40 + length + 63) / 64 * 64)...]
    }

    func firstSectionOffset(_ bytes: [UInt8]) -> Int {
        let length = Int(bytes[32..<40].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        return (40 + length + 63) / 64 * 64
    }

    func rejects(_ bytes: [UInt8], at path: String, _ reason: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect { try IndexFile.load(path) } throws: { error in
            "\(error)".contains(path) && "\(error)".contains(reason)
        }
    }

    @Test func ivfListsTimesColumnsThatOverflowAreRejected() throws {
        for spec in ["IVF4,Flat", "IVF2,PQ4"] {
            let (path, bytes) = try saved(spec)
            // Before the fix `lists * centroidColumns` trapped.
            try rejects(withJSON(bytes) { $0["lists"] = 1 << 40; $0["centroidColumns"] = 1 << 40 }, at: path, "centroid")
            try rejects(withJSON(bytes) { $0["lists"] = 1 << 62 }, at: path, "centroids")
            try rejects(withJSON(bytes) { $0["centroidColumns"] = 1 << 30 }, at: path, "columns")
        }
        let (path, bytes) = try saved("IVF2,PQ4")
        try rejects(withJSON(bytes) { $0["subspaces"] = 3 }, at: path, "subspaces")
    }

    @Test func ivfDuplicateIDsAreRejected() throws {
        let (path, bytes) = try saved("IVF1,Flat", metric: .l2)
        // Sections: centroids (1 x 8 floats), list sizes (1 x Int64), ids (300 x Int32), vectors.
        var crafted = bytes
        let ids = firstSectionOffset(bytes) + 64 + 64
        #expect(crafted[ids..<(ids + 4)].reversed().reduce(0) { $0 << 8 | Int($1) } < 300)
        for k in 0..<4 { crafted[ids + 4 + k] = crafted[ids + k] }   // id 1 := id 0
        // Before the fix this loaded and one search returned the same item twice.
        try rejects(crafted, at: path, "appears more than once")
    }

    @Test func normBandsFromTheFileAreChecked() throws {
        for spec in ["IVF2,Flat", "IVF2,PQ4"] {
            let (path, bytes) = try saved(spec)
            #expect(json(bytes)["bands"] as? Int == 8)   // 300 x 8 Gaussian rows: norms vary -> 8 bands
            try rejects(withJSON(bytes) { $0["bands"] = 1_000_000 }, at: path, "norm bands")
            try rejects(withJSON(bytes) { $0["bands"] = -1 }, at: path, "norm bands")
            try rejects(withJSON(bytes) { $0["bands"] = 2; $0["mipsReduction"] = true }, at: path, "norm bands")
            // A NaN in the band edges (the section after the centroids).
            var crafted = bytes
            let edges = firstSectionOffset(bytes) + 64
            withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { nan in for k in 0..<4 { crafted[edges + k] = nan[k] } }
            try rejects(crafted, at: path, "band edges value 0 is NaN or infinite")
        }
        let (path, bytes) = try saved("IVF2,Flat", metric: .l2)
        try rejects(withJSON(bytes) { $0["bands"] = 2 }, at: path, "norm bands")
        // Wrong types, and list norms that contradict the list sizes (a list marked empty is never scanned).
        let (ip, ipBytes) = try saved("IVF2,Flat")
        try rejects(withJSON(ipBytes) { $0["bands"] = "8" }, at: ip, "wrong type")
        try rejects(withJSON(ipBytes) { $0["spread"] = "yes" }, at: ip, "wrong type")
        try Data(ipBytes).write(to: URL(fileURLWithPath: ip))
        let index = try #require(try IndexFile.load(ip) as? IVFIndex)
        let occupied = try #require(index.listSizes.firstIndex { $0 > 0 })
        var crafted = ipBytes
        // Sections: centroids (2 x 8 floats = one 64-byte block), 7 edges, then the 16 largest norms.
        let maxNorms = firstSectionOffset(ipBytes) + 64 + 64
        withUnsafeBytes(of: Float(-1).bitPattern.littleEndian) { v in for k in 0..<4 { crafted[maxNorms + 4 * occupied + k] = v[k] } }
        try rejects(crafted, at: ip, "list \(occupied) holds")
        #expect(ipBytes[8] == 2)   // format version 2: a build from before bands refuses the file by its version
    }

    /// An inner-product IVF file from before norm bands (format version 1, no `bands` or `spread`
    /// key: L2 k-means cells ranked by q·c) loads and searches as it was built.
    @Test func preBandFilesStillLoad() throws {
        let legacy = try IVFIndex.legacyInnerProduct(vectors: vectors, lists: 4)
        let dir = TestScratch.path("affinity-idx")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/legacy.idx"
        try IndexFile.save(legacy, to: path)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(bytes[8] == 1)
        try Data(withJSON(bytes) { $0["bands"] = nil; $0["spread"] = nil }).write(to: URL(fileURLWithPath: path))
        #expect(json(Array(try Data(contentsOf: URL(fileURLWithPath: path))))["bands"] == nil)
        let loaded = try #require(try IndexFile.load(path) as? IVFIndex)
        #expect(loaded.quantizer.bands == 0 && loaded.quantizer.lists == 4)
        // The pre-band ranking: cells by q·c, best first.
        let q = Array(vectors.row(7))
        let byDot = (0..<4).sorted { Kernels.dot(q, Array(legacy.quantizer.centroids.row($0))) > Kernels.dot(q, Array(legacy.quantizer.centroids.row($1))) }
        #expect(loaded.quantizer.rankLists(q, nprobe: 4) == byDot)
        let p = SearchParameters(nprobe: 2)
        #expect(try loaded.search(Array(vectors.row(3)), k: 5, parameters: p) == legacy.search(Array(vectors.row(3)), k: 5, parameters: p))
    }

    @Test func lshTablesAndBitsFromTheFileAreBounded() throws {
        let (path, bytes) = try saved("LSH4x8")
        // Before the fix 10^9 tables were allocated as asked (16 TB of hyperplanes with more bits).
        try rejects(withJSON(bytes) { $0["tables"] = 1_000_000_000 }, at: path, "tables")
        try rejects(withJSON(bytes) { $0["bits"] = 65 }, at: path, "bits")
        try rejects(withJSON(bytes) { $0["tables"] = 0 }, at: path, "tables")
    }

    @Test func nonFiniteVectorsAreRejected() throws {
        for spec in ["Flat", "HNSW8", "IVF2,Flat"] {
            let (path, bytes) = try saved(spec)
            var crafted = bytes
            // The first float section: vectors (Flat, HNSW) or centroids (IVF).
            withUnsafeBytes(of: Float.nan.bitPattern.littleEndian) { nan in
                for k in 0..<4 { crafted[firstSectionOffset(bytes) + 4 + k] = nan[k] }
            }
            try rejects(crafted, at: path, "NaN or infinite")
        }
    }

    @Test func aFIFOIsNotAnIndex() throws {
        let dir = TestScratch.path("affinity-idx-fifo")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        #expect(mkfifo(dir + "/index.idx", 0o600) == 0)
        #expect { try IndexFile.load(dir + "/index.idx") } throws: { "\($0)".contains("not a regular file") }
    }

    @Test func savedIndexesStillLoadAndSearch() throws {
        for spec in ["Flat", "HNSW8", "IVF4,Flat", "IVF2,PQ4", "LSH4x8"] {
            let (path, _) = try saved(spec)
            let index = try IndexFile.load(path)
            #expect(try index.search(Array(vectors.row(5)), k: 3, parameters: SearchParameters(ef: 32, nprobe: 4, probes: 2), filter: nil).count == 3)
        }
    }
}
