import Foundation

/// A named tensor as stored in a safetensors file.
public struct Tensor: Sendable, Equatable {
    public enum Storage: Sendable, Equatable {
        case float32([Float])
        case float64([Double])
        case int32([Int32])
        case int64([Int64])
        case uint8([UInt8])
    }

    public var shape: [Int]
    public var storage: Storage

    public init(shape: [Int], storage: Storage) {
        self.shape = shape
        self.storage = storage
    }

    public static func float32(_ values: [Float], shape: [Int]? = nil) -> Tensor {
        Tensor(shape: shape ?? [values.count], storage: .float32(values))
    }
    public static func int32(_ values: [Int32], shape: [Int]? = nil) -> Tensor {
        Tensor(shape: shape ?? [values.count], storage: .int32(values))
    }
    public static func int64(_ values: [Int64], shape: [Int]? = nil) -> Tensor {
        Tensor(shape: shape ?? [values.count], storage: .int64(values))
    }

    /// The dtype name of the safetensors header.
    public var dtype: String {
        switch storage {
        case .float32: return "F32"
        case .float64: return "F64"
        case .int32: return "I32"
        case .int64: return "I64"
        case .uint8: return "U8"
        }
    }

    var elementCount: Int {
        switch storage {
        case .float32(let v): return v.count
        case .float64(let v): return v.count
        case .int32(let v): return v.count
        case .int64(let v): return v.count
        case .uint8(let v): return v.count
        }
    }

    static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F32", "I32": return 4
        case "F64", "I64": return 8
        case "U8": return 1
        default: return nil
        }
    }
}

/// Errors of reading a safetensors file; each names the file and what was wrong.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case corrupt(path: String, reason: String)
    case missingTensor(path: String, name: String)
    case wrongType(path: String, name: String, expected: String, found: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): return "\(path): cannot read: \(reason)"
        case .corrupt(let path, let reason): return "\(path): not a valid safetensors file: \(reason)"
        case .missingTensor(let path, let name): return "\(path): tensor '\(name)' is missing"
        case .wrongType(let path, let name, let expected, let found):
            return "\(path): tensor '\(name)' has dtype \(found), expected \(expected)"
        }
    }
}

/// Reads and writes the safetensors format (https://github.com/huggingface/safetensors): an 8-byte
/// little-endian header length, a JSON header naming each tensor's dtype, shape and byte range, and
/// the raw little-endian data. numpy, PyTorch and Hugging Face tools read these files directly.
public struct SafeTensorsFile: Sendable {
    public var tensors: [String: Tensor]
    /// The string-to-string `__metadata__` map (configuration, format version, model type).
    public var metadata: [String: String]

    public init(tensors: [String: Tensor], metadata: [String: String]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// Serialises the file. Tensors are laid out in name order; the header is padded with spaces
    /// to a multiple of 8 bytes so that the data is aligned.
    public func encoded() throws -> [UInt8] {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            precondition(t.shape.reduce(1, *) == t.elementCount, "tensor \(name): shape \(t.shape) does not match \(t.elementCount) elements")
            let bytes = t.elementCount * Tensor.elementSize(t.dtype)!
            header[name] = ["dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + bytes]] as [String: Any]
            offset += bytes
        }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = [UInt8]()
        out.reserveCapacity(8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        for name in names {
            switch tensors[name]!.storage {
            case .float32(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
            case .float64(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
            case .int32(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
            case .int64(let v): v.withUnsafeBytes { out.append(contentsOf: $0) }
            case .uint8(let v): out.append(contentsOf: v)
            }
        }
        return out
    }

    /// Parses a file's bytes; `path` is used in error messages only.
    public static func decode(_ bytes: [UInt8], path: String) throws -> SafeTensorsFile {
        guard bytes.count >= 8 else {
            throw SafeTensorsError.corrupt(path: path, reason: "file is \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        var headerLength: UInt64 = 0
        for i in 0..<8 { headerLength |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard headerLength <= UInt64(bytes.count - 8), headerLength <= 100_000_000 else {
            throw SafeTensorsError.corrupt(path: path, reason: "header length \(headerLength) exceeds the file size \(bytes.count) (truncated file?)")
        }
        let headerEnd = 8 + Int(headerLength)
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd]))
        } catch {
            throw SafeTensorsError.corrupt(path: path, reason: "header is not valid JSON")
        }
        guard let header = object as? [String: Any] else {
            throw SafeTensorsError.corrupt(path: path, reason: "header is not a JSON object")
        }
        let dataCount = bytes.count - headerEnd
        var metadata: [String: String] = [:]
        // First every entry is checked; tensors are copied only once the byte ranges are known to
        // tile the data section exactly (no overlap, no gap), so the copies add up to the file's size.
        var entries: [(name: String, dtype: String, shape: [Int], begin: Int, end: Int, elements: Int)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: String] else {
                    throw SafeTensorsError.corrupt(path: path, reason: "__metadata__ must map strings to strings")
                }
                metadata = m
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shapeAny = entry["shape"] as? [Any], let offsetsAny = entry["data_offsets"] as? [Any],
                  offsetsAny.count == 2 else {
                throw SafeTensorsError.corrupt(path: path, reason: "tensor '\(name)' lacks dtype, shape or data_offsets")
            }
            guard let size = Tensor.elementSize(dtype) else {
                throw SafeTensorsError.corrupt(path: path, reason: "tensor '\(name)' has unsupported dtype \(dtype)")
            }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            let offsets = offsetsAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, shape.allSatisfy({ $0 >= 0 }), offsets.count == 2 else {
                throw SafeTensorsError.corrupt(path: path, reason: "tensor '\(name)' has a malformed shape or offsets")
            }
            let begin = offsets[0], end = offsets[1]
            guard begin >= 0, end >= begin, end <= dataCount else {
                throw SafeTensorsError.corrupt(path: path, reason: "tensor '\(name)' byte range \(begin)..<\(end) lies outside the \(dataCount)-byte data section (truncated file?)")
            }
            // Sizes come from the file: multiply with overflow checks, and only then compare with
            // the bytes actually present, so no crafted shape can trap or drive an allocation.
            guard let bytesNeeded = AffinityLinalg.checkedProduct(shape + [size]), end - begin == bytesNeeded else {
                throw SafeTensorsError.corrupt(path: path, reason: "tensor '\(name)' has \(end - begin) bytes, which its shape \(shape) of \(dtype) does not match")
            }
            entries.append((name, dtype, shape, begin, end, bytesNeeded / size))
        }
        var covered = 0
        for e in entries.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
            guard e.begin == covered || (e.begin == e.end && e.begin <= covered) else {
                throw SafeTensorsError.corrupt(path: path, reason: "tensor '\(e.name)' byte range \(e.begin)..<\(e.end) overlaps another or leaves a gap at \(covered)")
            }
            covered = max(covered, e.end)
        }
        guard covered == dataCount else {
            throw SafeTensorsError.corrupt(path: path, reason: "data section has \(dataCount) bytes but tensors cover \(covered)")
        }
        var tensors: [String: Tensor] = [:]
        for e in entries {
            let raw = bytes[(headerEnd + e.begin)..<(headerEnd + e.end)]
            let storage: Tensor.Storage
            switch e.dtype {
            case "F32": storage = .float32(load(raw, as: Float.self, count: e.elements))
            case "F64": storage = .float64(load(raw, as: Double.self, count: e.elements))
            case "I32": storage = .int32(load(raw, as: Int32.self, count: e.elements))
            case "I64": storage = .int64(load(raw, as: Int64.self, count: e.elements))
            default: storage = .uint8(Array(raw))
            }
            tensors[e.name] = Tensor(shape: e.shape, storage: storage)
        }
        return SafeTensorsFile(tensors: tensors, metadata: metadata)
    }

    private static func load<T>(_ raw: ArraySlice<UInt8>, as: T.Type, count: Int) -> [T] {
        [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            raw.withUnsafeBytes { src in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: src)
            }
            initialized = count
        }
    }

    /// Reads a file from disk.
    public static func read(path: String) throws -> SafeTensorsFile {
        switch RegularFile.contents(atPath: path) {
        case .success(let data): return try decode(Array(data), path: path)
        case .failure(let error): throw SafeTensorsError.unreadable(path: path, reason: error.description)
        }
    }

    // Typed accessors that name the file and tensor on failure.

    public func float32(_ name: String, path: String) throws -> [Float] {
        guard let t = tensors[name] else { throw SafeTensorsError.missingTensor(path: path, name: name) }
        guard case .float32(let v) = t.storage else { throw SafeTensorsError.wrongType(path: path, name: name, expected: "F32", found: t.dtype) }
        return v
    }

    public func int32(_ name: String, path: String) throws -> [Int32] {
        guard let t = tensors[name] else { throw SafeTensorsError.missingTensor(path: path, name: name) }
        guard case .int32(let v) = t.storage else { throw SafeTensorsError.wrongType(path: path, name: name, expected: "I32", found: t.dtype) }
        return v
    }

    public func int64(_ name: String, path: String) throws -> [Int64] {
        guard let t = tensors[name] else { throw SafeTensorsError.missingTensor(path: path, name: name) }
        guard case .int64(let v) = t.storage else { throw SafeTensorsError.wrongType(path: path, name: name, expected: "I64", found: t.dtype) }
        return v
    }
}

extension SparseMatrix {
    /// Stores this matrix as three tensors `PREFIX.row_pointers` (I64), `PREFIX.columns` (I32) and
    /// `PREFIX.values` (F32), plus its shape in `PREFIX.shape`.
    public func tensors(prefix: String) -> [String: Tensor] {
        [
            "\(prefix).shape": .int64([Int64(rowCount), Int64(columnCount)]),
            "\(prefix).row_pointers": .int64(rowPointers.map { Int64($0) }),
            "\(prefix).columns": .int32(columns),
            "\(prefix).values": .float32(values),
        ]
    }

    /// Reads a matrix written by `tensors(prefix:)`, checking every CSR invariant.
    public init(file: SafeTensorsFile, prefix: String, path: String) throws {
        let shape = try file.int64("\(prefix).shape", path: path)
        guard shape.count == 2 else { throw SafeTensorsError.corrupt(path: path, reason: "\(prefix).shape must have 2 entries") }
        do {
            try self.init(rowCount: Int(shape[0]), columnCount: Int(shape[1]),
                          rowPointers: try file.int64("\(prefix).row_pointers", path: path).map { Int($0) },
                          columns: try file.int32("\(prefix).columns", path: path),
                          values: try file.float32("\(prefix).values", path: path))
        } catch let error as SparseMatrixError {
            throw SafeTensorsError.corrupt(path: path, reason: "\(prefix): \(error)")
        }
    }
}
