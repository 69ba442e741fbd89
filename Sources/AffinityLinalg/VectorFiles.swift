import Foundation

/// Errors of vector files; each names the file and what was wrong.
public enum VectorFileError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case malformed(path: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): return "\(path): cannot read: \(reason)"
        case .malformed(let path, let reason): return "\(path): \(reason)"
        }
    }
}

/// `.fvecs` / `.ivecs` (TEXMEX, docs/formats.md): each vector is a little-endian int32 dimension
/// followed by that many float32 (or int32) values; every vector has the same dimension.
public enum VectorFiles {
    public static func readFvecs(_ path: String, limit: Int? = nil) throws -> Matrix {
        let (dimension, values) = try read(path, limit: limit, as: Float.self)
        if let bad = firstNonFinite(values) {
            throw VectorFileError.malformed(path: path, reason: "vector \(bad / dimension), component \(bad % dimension) is NaN or infinite")
        }
        return Matrix(rows: dimension == 0 ? 0 : values.count / dimension, columns: dimension, values: values)
    }

    /// Rows of int32 values (ground-truth neighbour ids).
    public static func readIvecs(_ path: String, limit: Int? = nil) throws -> [[Int32]] {
        let (dimension, values) = try read(path, limit: limit, as: Int32.self)
        guard dimension > 0 else { return [] }
        return stride(from: 0, to: values.count, by: dimension).map { Array(values[$0..<($0 + dimension)]) }
    }

    public static func writeFvecs(_ m: Matrix, to path: String) throws {
        try write(path, rows: m.rows, dimension: m.columns) { r in Array(m.row(r)) }
    }

    public static func writeIvecs(_ rows: [[Int32]], to path: String) throws {
        guard let d = rows.first?.count, rows.allSatisfy({ $0.count == d }) else {
            throw VectorFileError.malformed(path: path, reason: "rows must all have the same, non-zero length")
        }
        try write(path, rows: rows.count, dimension: d) { rows[$0] }
    }

    static func read<T>(_ path: String, limit: Int?, as: T.Type) throws -> (Int, [T]) {
        let data: Data
        switch RegularFile.contents(atPath: path) {
        case .success(let d): data = d
        case .failure(let error): throw VectorFileError.unreadable(path: path, reason: error.description)
        }
        guard data.count >= 4 else {
            throw VectorFileError.malformed(path: path, reason: data.isEmpty ? "file is empty" : "file is \(data.count) bytes, shorter than one dimension header")
        }
        return try data.withUnsafeBytes { raw -> (Int, [T]) in
            let d = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: Int32.self)))
            guard d > 0 && d < 1 << 20 else { throw VectorFileError.malformed(path: path, reason: "dimension header \(d) at byte 0 is not a plausible vector length") }
            let record = 4 + 4 * d
            guard data.count % record == 0 else {
                throw VectorFileError.malformed(path: path, reason: "size \(data.count) is not a multiple of the \(record)-byte record for dimension \(d) (truncated file?)")
            }
            let count = min(data.count / record, max(0, limit ?? Int.max))
            var values = [T]()
            values.reserveCapacity(count * d)
            for r in 0..<count {
                let header = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: r * record, as: Int32.self)))
                guard header == d else {
                    throw VectorFileError.malformed(path: path, reason: "vector \(r) has dimension \(header), the first has \(d)")
                }
                for j in 0..<d { values.append(raw.loadUnaligned(fromByteOffset: r * record + 4 + 4 * j, as: T.self)) }
            }
            return (d, values)
        }
    }

    static func write<T>(_ path: String, rows: Int, dimension: Int, row: (Int) -> [T]) throws {
        var out = Data(capacity: rows * (4 + 4 * dimension))
        for r in 0..<rows {
            withUnsafeBytes(of: Int32(dimension).littleEndian) { out.append(contentsOf: $0) }
            row(r).withUnsafeBytes { out.append(contentsOf: $0) }
        }
        do {
            let tmp = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
            try out.write(to: URL(fileURLWithPath: tmp))
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(atPath: tmp, toPath: path)
        } catch {
            throw VectorFileError.unreadable(path: path, reason: "cannot write: \(error.localizedDescription)")
        }
    }
}
