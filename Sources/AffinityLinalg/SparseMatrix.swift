/// A compressed sparse row (CSR) matrix of `Float` values.
///
/// Row `r` holds `columns[rowPointers[r]..<rowPointers[r+1]]` with the matching `values`, columns
/// sorted ascending and unique. The transpose of a users x items CSR is the items x users CSC view.
public struct SparseMatrix: Sendable, Equatable {
    public let rowCount: Int
    public let columnCount: Int
    /// `rowCount + 1` offsets into `columns` and `values`.
    public let rowPointers: [Int]
    public let columns: [Int32]
    public let values: [Float]

    public var nonZeroCount: Int { columns.count }

    /// Creates a matrix from CSR arrays, checking the invariants.
    public init(rowCount: Int, columnCount: Int, rowPointers: [Int], columns: [Int32], values: [Float]) throws {
        guard rowCount >= 0, columnCount >= 0 else { throw SparseMatrixError.invalid("negative shape") }
        // Not `rowCount + 1`: a shape read from a file may be Int.max.
        guard rowPointers.count - 1 == rowCount else {
            throw SparseMatrixError.invalid("row pointers have \(rowPointers.count) entries, expected one more than the \(rowCount) rows")
        }
        guard columns.count == values.count else {
            throw SparseMatrixError.invalid("\(columns.count) columns but \(values.count) values")
        }
        guard rowPointers.first == 0, rowPointers.last == columns.count else {
            throw SparseMatrixError.invalid("row pointers must start at 0 and end at \(columns.count)")
        }
        for r in 0..<rowCount {
            let lo = rowPointers[r], hi = rowPointers[r + 1]
            guard lo <= hi else { throw SparseMatrixError.invalid("row pointers decrease at row \(r)") }
            var previous: Int32 = -1
            for p in lo..<hi {
                let c = columns[p]
                guard c > previous, Int(c) < columnCount else {
                    throw SparseMatrixError.invalid("row \(r): column \(c) out of order or out of range 0..<\(columnCount)")
                }
                previous = c
            }
        }
        self.rowCount = rowCount
        self.columnCount = columnCount
        self.rowPointers = rowPointers
        self.columns = columns
        self.values = values
    }

    init(unchecked rowCount: Int, _ columnCount: Int, _ rowPointers: [Int], _ columns: [Int32], _ values: [Float]) {
        self.rowCount = rowCount
        self.columnCount = columnCount
        self.rowPointers = rowPointers
        self.columns = columns
        self.values = values
    }

    /// Builds a matrix from coordinate triples. Duplicate (row, column) entries are merged by
    /// summing their values, so with values of 1 each entry counts its repetitions.
    /// - Complexity: O(nnz + rows) (counting sort by row, then a sort within each row).
    public init(rowCount: Int, columnCount: Int, rows: [Int32], cols: [Int32], values entryValues: [Float]? = nil) {
        precondition(rows.count == cols.count, "rows and columns differ in length")
        if let entryValues { precondition(entryValues.count == rows.count, "values differ in length") }
        var counts = [Int](repeating: 0, count: rowCount + 1)
        for r in rows { counts[Int(r) + 1] += 1 }
        for r in 0..<rowCount { counts[r + 1] += counts[r] }
        var fill = counts
        var tmpCols = [Int32](repeating: 0, count: rows.count)
        var tmpVals = [Float](repeating: 0, count: rows.count)
        for e in 0..<rows.count {
            let r = Int(rows[e])
            precondition(r >= 0 && r < rowCount && cols[e] >= 0 && Int(cols[e]) < columnCount, "entry out of range")
            tmpCols[fill[r]] = cols[e]
            tmpVals[fill[r]] = entryValues?[e] ?? 1
            fill[r] += 1
        }
        var pointers = [Int](repeating: 0, count: rowCount + 1)
        var outCols = [Int32]()
        var outVals = [Float]()
        outCols.reserveCapacity(rows.count)
        outVals.reserveCapacity(rows.count)
        var order = [Int]()
        for r in 0..<rowCount {
            let lo = counts[r], hi = counts[r + 1]
            order.removeAll(keepingCapacity: true)
            order.append(contentsOf: lo..<hi)
            order.sort { tmpCols[$0] < tmpCols[$1] || (tmpCols[$0] == tmpCols[$1] && $0 < $1) }
            var last: Int32 = -1
            for p in order {
                if tmpCols[p] == last {
                    outVals[outVals.count - 1] += tmpVals[p]
                } else {
                    outCols.append(tmpCols[p])
                    outVals.append(tmpVals[p])
                    last = tmpCols[p]
                }
            }
            pointers[r + 1] = outCols.count
        }
        self.init(unchecked: rowCount, columnCount, pointers, outCols, outVals)
    }

    /// The column indices of row `r`.
    @inline(__always)
    public func row(_ r: Int) -> ArraySlice<Int32> { columns[rowPointers[r]..<rowPointers[r + 1]] }

    /// The values of row `r`.
    @inline(__always)
    public func rowValues(_ r: Int) -> ArraySlice<Float> { values[rowPointers[r]..<rowPointers[r + 1]] }

    /// Number of stored entries in row `r`.
    @inline(__always)
    public func rowLength(_ r: Int) -> Int { rowPointers[r + 1] - rowPointers[r] }

    /// The same pattern with every value set to 1 (implicit feedback).
    public func binarized() -> SparseMatrix {
        SparseMatrix(unchecked: rowCount, columnCount, rowPointers, columns, [Float](repeating: 1, count: columns.count))
    }

    /// The transpose, also in CSR form (so the CSC view of this matrix). Columns stay sorted.
    /// - Complexity: O(nnz + rows + columns).
    public func transposed() -> SparseMatrix {
        var counts = [Int](repeating: 0, count: columnCount + 1)
        for c in columns { counts[Int(c) + 1] += 1 }
        for c in 0..<columnCount { counts[c + 1] += counts[c] }
        var fill = counts
        var outCols = [Int32](repeating: 0, count: columns.count)
        var outVals = [Float](repeating: 0, count: columns.count)
        for r in 0..<rowCount {
            for p in rowPointers[r]..<rowPointers[r + 1] {
                let c = Int(columns[p])
                outCols[fill[c]] = Int32(r)
                outVals[fill[c]] = values[p]
                fill[c] += 1
            }
        }
        return SparseMatrix(unchecked: columnCount, rowCount, counts, outCols, outVals)
    }

    /// Number of stored entries in each column.
    public func columnCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: columnCount)
        for c in columns { counts[Int(c)] += 1 }
        return counts
    }

    /// Whether entry (r, c) is stored (binary search in the row).
    @inlinable public func contains(row r: Int, column c: Int) -> Bool {
        var lo = rowPointers[r], hi = rowPointers[r + 1]
        let target = Int32(c)
        while lo < hi {
            let mid = (lo + hi) / 2
            if columns[mid] < target { lo = mid + 1 } else { hi = mid }
        }
        return lo < rowPointers[r + 1] && columns[lo] == target
    }
}

/// "Is (r, c) stored?" in constant time, for samplers that ask it for every negative they draw:
/// a bitmap of the matrix's pattern when it fits in `maxBytes`, else the matrix's binary search
/// (the same answers; `SparseMatrixTests` checks both against each other).
public struct PatternLookup: Sendable {
    @usableFromInline let bits: [UInt64]
    @usableFromInline let width: Int
    @usableFromInline let matrix: SparseMatrix?

    public init(_ m: SparseMatrix, maxBytes: Int = 64 << 20) {
        let total = m.rowCount.multipliedReportingOverflow(by: m.columnCount)
        if !total.overflow && total.partialValue / 8 <= maxBytes {
            var bits = [UInt64](repeating: 0, count: (total.partialValue + 63) / 64)
            for r in 0..<m.rowCount {
                for c in m.row(r) { let k = r * m.columnCount + Int(c); bits[k >> 6] |= 1 << UInt64(k & 63) }
            }
            self.bits = bits
            matrix = nil
        } else {
            bits = []
            matrix = m
        }
        width = m.columnCount
    }

    /// Whether the lookup is a bitmap (false: it searches the matrix).
    public var isBitmap: Bool { matrix == nil }

    @inlinable public func contains(row r: Int, column c: Int) -> Bool {
        if let matrix { return matrix.contains(row: r, column: c) }
        let k = r * width + c
        return bits.withUnsafeBufferPointer { $0[k >> 6] >> UInt64(k & 63) & 1 == 1 }
    }
}

public enum SparseMatrixError: Error, CustomStringConvertible, Equatable {
    case invalid(String)
    public var description: String {
        switch self {
        case .invalid(let why): return "invalid sparse matrix: \(why)"
        }
    }
}
