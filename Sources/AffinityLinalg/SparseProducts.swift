extension SparseMatrix {
    /// The Gram matrix XᵀX (columns x columns, dense): entry (i, j) = Σ_u x_ui·x_uj. For a binary
    /// users x items matrix this is the item co-occurrence count matrix of EASE and item-kNN.
    ///
    /// Parallel over rows of the result; each row accumulates over the users of item i.
    /// - Complexity: O(Σ_u |u|²) time, O(columns²) memory for the result.
    public func gram(threads: Int = 0) -> Matrix {
        let n = columnCount
        var out = Matrix(rows: n, columns: n)
        let t = transposed()
        out.values.withUnsafeMutableBufferPointer { buffer in
            let g = SharedMutableBuffer(buffer)
            Parallelism.forEachRange(n, grain: 32, threads: threads) { range in
                for i in range {
                    let row = g.base.baseAddress! + i * n
                    for q in t.rowPointers[i]..<t.rowPointers[i + 1] {
                        let u = Int(t.columns[q])
                        let xui = t.values[q]
                        for p in rowPointers[u]..<rowPointers[u + 1] {
                            row[Int(columns[p])] += xui * values[p]
                        }
                    }
                }
            }
        }
        return out
    }

    /// X·B for a dense B (columns x B.columns): row r is Σ_p x_rp·B_p.
    public func multiplied(by b: Matrix, threads: Int = 0) -> Matrix {
        precondition(b.rows == columnCount, "X is \(rowCount)x\(columnCount) but B has \(b.rows) rows")
        var out = Matrix(rows: rowCount, columns: b.columns)
        out.values.withUnsafeMutableBufferPointer { buffer in
            let o = SharedMutableBuffer(buffer)
            b.values.withUnsafeBufferPointer { bp in
                let bb = UncheckedPointer(bp.baseAddress!)
                Parallelism.forEachRange(rowCount, grain: 64, threads: threads) { range in
                    for r in range {
                        multiplyRow(r, by: bb.base, columns: b.columns, into: o.base.baseAddress! + r * b.columns)
                    }
                }
            }
        }
        return out
    }

    /// out = (row r of X)·B, for B with `columns` columns stored row-major (no zeroing: out is
    /// overwritten).
    ///
    /// The SIMD kernel `affinity_row_sum` adds the rows in the stored order with separate multiply
    /// and add, so the result equals `referenceMultiplyRow` bit for bit (tested); it streams four
    /// rows of B per pass, which matters when B is too large for the caches (EASE's item-item matrix).
    public func multiplyRow(_ r: Int, by b: UnsafePointer<Float>, columns width: Int, into out: UnsafeMutablePointer<Float>) {
        out.update(repeating: 0, count: width)
        let start = rowPointers[r], count = rowPointers[r + 1] - start
        guard count > 0 else { return }
        columns.withUnsafeBufferPointer { c in
            values.withUnsafeBufferPointer { v in
                Kernels.addRows(ids: c.baseAddress! + start, weights: v.baseAddress! + start, count: count, of: b, width: width, into: out)
            }
        }
    }

    /// The plain loop `multiplyRow` is tested against.
    public func referenceMultiplyRow(_ r: Int, by b: UnsafePointer<Float>, columns width: Int, into out: UnsafeMutablePointer<Float>) {
        out.update(repeating: 0, count: width)
        for p in rowPointers[r]..<rowPointers[r + 1] {
            let v = values[p]
            let src = b + Int(columns[p]) * width
            for j in 0..<width { out[j] += v * src[j] }
        }
    }

    /// The dense copy (for tests and small matrices).
    public func dense() -> Matrix {
        var m = Matrix(rows: rowCount, columns: columnCount)
        for r in 0..<rowCount { for p in rowPointers[r]..<rowPointers[r + 1] { m.values[r * columnCount + Int(columns[p])] = values[p] } }
        return m
    }
}
