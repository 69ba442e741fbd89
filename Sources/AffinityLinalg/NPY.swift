import Foundation

/// numpy's `.npy` format (version 1.0/2.0) for 2-D little-endian float32 arrays in C order: the
/// interchange format for embedding matrices.
public enum NPY {
    public static func read(_ path: String) throws -> Matrix {
        let data: Data
        switch RegularFile.contents(atPath: path) {
        case .success(let d): data = d
        case .failure(let error): throw VectorFileError.unreadable(path: path, reason: error.description)
        }
        let bytes = [UInt8](data)
        guard bytes.count >= 10, Array(bytes[0..<6]) == [0x93] + Array("NUMPY".utf8) else {
            throw VectorFileError.malformed(path: path, reason: "not a .npy file (bad magic)")
        }
        let major = bytes[6]
        let headerLength: Int, start: Int
        if major == 1 {
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            start = 10
        } else if major == 2 || major == 3 {
            guard bytes.count >= 12 else { throw VectorFileError.malformed(path: path, reason: "truncated header") }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            start = 12
        } else {
            throw VectorFileError.malformed(path: path, reason: ".npy version \(major) is not supported")
        }
        guard start + headerLength <= bytes.count else { throw VectorFileError.malformed(path: path, reason: "truncated header") }
        let header = String(decoding: bytes[start..<(start + headerLength)], as: UTF8.self)
        guard header.contains("'descr': '<f4'") else {
            throw VectorFileError.malformed(path: path, reason: "dtype must be little-endian float32 ('<f4'); header: \(header.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard header.contains("'fortran_order': False") else { throw VectorFileError.malformed(path: path, reason: "Fortran order is not supported") }
        guard let key = header.range(of: "'shape':"), let open = header[key.upperBound...].firstIndex(of: "("),
              let close = header[open...].firstIndex(of: ")") else {
            throw VectorFileError.malformed(path: path, reason: "no shape in header")
        }
        let dims = header[header.index(after: open)..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard dims.count == 2 else { throw VectorFileError.malformed(path: path, reason: "expected a 2-D array, shape has \(dims.count) dimensions") }
        // The shape comes from the file: checked products only, compared with the bytes present.
        let offset = start + headerLength
        guard let count = checkedProduct(dims), let needed = checkedProduct(count, 4), bytes.count - offset == needed else {
            throw VectorFileError.malformed(path: path, reason: "data has \(bytes.count - offset) bytes, which the shape \(dims) of float32 does not match")
        }
        let values = [Float](unsafeUninitializedCapacity: count) { buffer, n in
            bytes.withUnsafeBytes { raw in UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + count * 4)])) }
            n = count
        }
        if let bad = firstNonFinite(values) {
            throw VectorFileError.malformed(path: path, reason: "value at row \(bad / max(1, dims[1])), column \(bad % max(1, dims[1])) is NaN or infinite")
        }
        return Matrix(rows: dims[0], columns: dims[1], values: values)
    }

    public static func write(_ m: Matrix, to path: String) throws {
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (\(m.rows), \(m.columns)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var out = Data([0x93] + Array("NUMPY".utf8) + [1, 0])
        let length = UInt16(header.utf8.count)
        out.append(contentsOf: [UInt8(length & 0xFF), UInt8(length >> 8)])
        out.append(contentsOf: Array(header.utf8))
        m.values.withUnsafeBytes { out.append(contentsOf: $0) }
        do { try out.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw VectorFileError.unreadable(path: path, reason: "cannot write: \(error.localizedDescription)")
        }
    }
}
