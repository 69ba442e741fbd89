import Foundation
import Testing
@testable import AffinityLinalg
#if canImport(Glibc)
import Glibc
import AffinityTestScratch
#endif

/// Files with crafted sizes and values (issue "Hardening", defect 1 and 6): each is rejected with
/// an error that names the file, never a trap or an allocation the file asked for.
@Suite struct UntrustedInputTests {
    func temporaryFile(_ name: String) -> String {
        let dir = TestScratch.path("affinity-untrusted")
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir + "/" + name
    }

    /// A safetensors file whose header JSON is `header` and whose data section is `data`.
    func safetensors(_ header: String, data: [UInt8] = []) -> [UInt8] {
        var json = Array(header.utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out += $0 }
        return out + json + data
    }

    @Test func checkedProductsOverflowToNil() {
        #expect(checkedProduct(3, 4, 5) == 60)
        #expect(checkedProduct(1 << 32, 1 << 32) == nil)
        #expect(checkedProduct(-1, 4) == nil)
        #expect(checkedProduct([]) == 1)
    }

    @Test func safetensorsShapeWhoseProductOverflowsIsRejected() {
        // 2^32 x 2^32 x 4 bytes overflows Int; before the fix the multiplication trapped.
        let bytes = safetensors(#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#)
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(bytes, path: "crafted.safetensors") }
        let huge = safetensors(#"{"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 16))
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(huge, path: "crafted.safetensors") }
    }

    @Test func aSparseMatrixShapeOfIntMaxIsRejected() {
        // A saved shape of Int64.max made `rowCount + 1` trap.
        #expect(throws: SparseMatrixError.self) {
            try SparseMatrix(rowCount: Int.max, columnCount: 2, rowPointers: [0], columns: [], values: [])
        }
        let file = SafeTensorsFile(tensors: ["x.shape": .int64([Int64.max, 2]), "x.row_pointers": .int64([0]),
                                            "x.columns": .int32([]), "x.values": .float32([])], metadata: [:])
        #expect(throws: SafeTensorsError.self) { try SparseMatrix(file: file, prefix: "x", path: "crafted.safetensors") }
    }

    @Test func overlappingTensorsAreRejectedBeforeAnyCopy() throws {
        // Many entries over one byte range would copy the data section once each (1.6 TB from a
        // 100 MB header over 1 MB of data); ranges must tile the data section.
        let overlap = safetensors(#"{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}"#,
                                  data: [UInt8](repeating: 1, count: 8))
        #expect { try SafeTensorsFile.decode(overlap, path: "o.safetensors") } throws: { "\($0)".contains("overlaps") }
        let tiled = safetensors(#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}"#,
                                data: [UInt8](repeating: 1, count: 8))
        #expect(try SafeTensorsFile.decode(tiled, path: "t.safetensors").tensors.count == 3)
    }

    @Test func npyShapeWhoseProductOverflowsIsRejected() throws {
        let path = temporaryFile("crafted.npy")
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8) + [UInt8](repeating: 0, count: 16)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: VectorFileError.self) { try NPY.read(path) }
    }

    @Test func npyWithParenthesesOutOfOrderIsRejected() throws {
        // Found by Benchmarks/fuzz/run.sh: a ')' before the shape's '(' made an inverted range.
        let path = temporaryFile("fuzzed.npy")
        var header = "{'descr': '<f4', 'fortran_order': False, #shape': 6, 4), }      (6, 4), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count), 0] + Array(header.utf8) + [UInt8](repeating: 0, count: 96)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: VectorFileError.self) { try NPY.read(path) }
    }

    @Test func nonFiniteValuesAreRefusedByName() throws {
        let npy = temporaryFile("nan.npy"), fvecs = temporaryFile("nan.fvecs")
        try NPY.write(Matrix(rows: 2, columns: 2, values: [1, 2, .nan, 4]), to: npy)
        try VectorFiles.writeFvecs(Matrix(rows: 2, columns: 2, values: [1, .infinity, 3, 4]), to: fvecs)
        #expect { try NPY.read(npy) } throws: { "\($0)".contains("row 1, column 0 is NaN or infinite") }
        #expect { try VectorFiles.readFvecs(fvecs) } throws: { "\($0)".contains("vector 0, component 1") }
        #expect(firstNonFinite([1, 2, 3] as [Float]) == nil)
    }

    @Test func aFIFOIsRefusedWithoutBlocking() throws {
        let path = temporaryFile("model.safetensors")
        #expect(mkfifo(path, 0o600) == 0)
        // Before the fix, reading a FIFO waited forever for a writer.
        #expect { try SafeTensorsFile.read(path: path) } throws: { "\($0)".contains("not a regular file") }
        #expect { try NPY.read(path) } throws: { "\($0)".contains("not a regular file") }
        #expect(RegularFile.contents(atPath: path) == .failure(.notRegular))
    }

    @Test func fingerprintIsFNV1aAndTheSameInEveryProcess() {
        // Golden value computed independently (Python, FNV-1a 64 over little-endian 8-byte integers).
        #expect(SeededGenerator.fingerprint([3, 17, 42]) == 9_264_721_042_638_744_221)
        #expect(SeededGenerator.fingerprint([3, 17, 42]) != SeededGenerator.fingerprint([3, 42, 17]))
    }

    @Test func memoryBudgetRefusesWithTheEstimate() {
        #expect(throws: Never.self) { try MemoryBudget.check(bytes: 1e6, for: "small") }
        #expect { try MemoryBudget.check(bytes: 3.7e12, for: "evaluating with cutoff 10^9") } throws: {
            "\($0)".contains("evaluating with cutoff 10^9 would need about 3.7 TB")
        }
    }
}
