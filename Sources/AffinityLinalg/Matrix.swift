/// A dense row-major matrix of `Float`: element (r, c) is `values[r * columns + c]`.
public struct Matrix: Sendable, Equatable {
    public let rows: Int
    public let columns: Int
    public var values: [Float]

    /// A matrix of zeros.
    public init(rows: Int, columns: Int) {
        precondition(rows >= 0 && columns >= 0, "negative shape")
        self.rows = rows
        self.columns = columns
        values = [Float](repeating: 0, count: rows * columns)
    }

    /// A matrix over existing row-major values.
    public init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns, "\(values.count) values for a \(rows)x\(columns) matrix")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    /// The n x n identity.
    public static func identity(_ n: Int) -> Matrix {
        var m = Matrix(rows: n, columns: n)
        for i in 0..<n { m.values[i * n + i] = 1 }
        return m
    }

    /// Entries drawn from a standard normal distribution times `scale`, seeded.
    public static func random(rows: Int, columns: Int, seed: UInt64, scale: Float = 1) -> Matrix {
        var g = SeededGenerator(seed: seed)
        return Matrix(rows: rows, columns: columns, values: (0..<(rows * columns)).map { _ in Float(g.nextGaussian()) * scale })
    }

    public subscript(row: Int, column: Int) -> Float {
        get { values[row * columns + column] }
        set { values[row * columns + column] = newValue }
    }

    /// A copy of row `r`.
    public func row(_ r: Int) -> ArraySlice<Float> { values[(r * columns)..<((r + 1) * columns)] }

    /// The indexes of the rows with a value other than zero (e.g. the items that have a text vector).
    public func nonZeroRows() -> [Int] {
        (0..<rows).filter { r in values[(r * columns)..<((r + 1) * columns)].contains { $0 != 0 } }
    }

    /// The listed rows, in the order given, as a matrix of their own (a sample, a subset).
    public func rows(at indices: [Int]) -> Matrix {
        var out = Matrix(rows: indices.count, columns: columns)
        for (k, r) in indices.enumerated() { out.values[(k * columns)..<((k + 1) * columns)] = row(r) }
        return out
    }

    /// The rows in `range` as a matrix of their own.
    public func rows(_ range: Range<Int>) -> Matrix {
        Matrix(rows: range.count, columns: columns, values: Array(values[(range.lowerBound * columns)..<(range.upperBound * columns)]))
    }

    public func transposed() -> Matrix {
        var t = Matrix(rows: columns, columns: rows)
        for r in 0..<rows { for c in 0..<columns { t.values[c * rows + r] = values[r * columns + c] } }
        return t
    }

    /// The largest absolute difference to another matrix of the same shape.
    public func maxAbsDifference(_ other: Matrix) -> Float {
        precondition(rows == other.rows && columns == other.columns, "shapes differ")
        var m: Float = 0
        for i in 0..<values.count { m = max(m, abs(values[i] - other.values[i])) }
        return m
    }
}

/// Errors of the dense linear-algebra routines.
public enum LinalgError: Error, CustomStringConvertible, Equatable {
    /// Cholesky met a pivot that is not positive (the matrix is not positive definite, or too
    /// ill-conditioned for single precision); `column` is where it happened.
    case notPositiveDefinite(column: Int, pivot: Double)
    case shapeMismatch(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .notPositiveDefinite(let column, let pivot):
            return "matrix is not positive definite: pivot \(pivot) at column \(column) (add regularisation to the diagonal?)"
        case .shapeMismatch(let s): return "shape mismatch: \(s)"
        case .invalidArgument(let s): return s
        }
    }
}

extension Matrix {
    /// Element-wise sum of two matrices of the same shape (residual connections).
    public static func + (a: Matrix, b: Matrix) -> Matrix {
        precondition(a.rows == b.rows && a.columns == b.columns, "shapes differ: \(a.rows)x\(a.columns) and \(b.rows)x\(b.columns)")
        var out = a
        out.values.withUnsafeMutableBufferPointer { o in
            b.values.withUnsafeBufferPointer { bp in for i in o.indices { o[i] += bp[i] } }
        }
        return out
    }
}
