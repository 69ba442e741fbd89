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

/// The Gram matrix XᵀX approximated as independence plus sparse deviations, for catalogues whose
/// dense Gram does not fit (`SparseMatrix.prunedGram(keep:threads:)`).
///
/// Under independence, columns a and b would co-occur `s_a·s_b / U` times (s: column sums, U:
/// rows). Each row keeps the exact Gram value of its `keep` entries that deviate most from that
/// expectation, in either direction: pairs seen together far more than chance, and popular pairs
/// seen together far less (never, for substitutes: EASE's anti-affinities). Any other entry reads
/// as its expectation (`value(_:_:)` callers fill those in with `expected(_:_:)`).
public struct PrunedGram: Sendable {
    /// Row i's kept entries are `columns[rowPointers[i]..<rowPointers[i+1]]` with their exact
    /// Gram values in `values`, largest deviation |G − s_i·s_c/U| first (ties: smaller column first).
    public let rowPointers: [Int]
    public let columns: [Int32]
    public let values: [Float]
    /// (XᵀX)[i, i] for every i.
    public let diagonal: [Float]
    /// Column sums of X (for a binary matrix: each item's number of users).
    public let columnSums: [Float]
    /// Rows of X (users).
    public let rowCount: Int

    /// The co-occurrence of a and b expected under independence.
    @inline(__always) public func expected(_ a: Int, _ b: Int) -> Float {
        rowCount > 0 ? columnSums[a] * columnSums[b] / Float(rowCount) : 0
    }
}

extension SparseMatrix {
    /// XᵀX as `PrunedGram`: per row, the `keep` entries deviating most from independence, chosen
    /// among the columns that co-occur with it and the `keep` + 1 columns of largest sum (the only
    /// ones whose absence can deviate much), without ever holding the dense Gram. Row i is
    /// accumulated into one dense scratch row per thread over the users of item i, then selected.
    /// Deterministic for any thread count (each row is independent; additions follow the CSR order).
    /// - Complexity: O(Σ_u |u|² + columns·keep) time, O(columns·keep) memory (twice that while the
    ///   rows are joined) plus O(columns) per thread.
    public func prunedGram(keep: Int, threads: Int = 0) -> PrunedGram {
        precondition(keep >= 0, "keep must not be negative")
        let n = columnCount
        let t = transposed()
        let sums = (0..<n).map { c in t.values[t.rowPointers[c]..<t.rowPointers[c + 1]].reduce(Float(0), +) }
        let byCount: [Int] = (0..<n).sorted { (a: Int, b: Int) -> Bool in sums[a] != sums[b] ? sums[a] > sums[b] : a < b }
        let popular: [Int32] = byCount.prefix(keep + 1).map { Int32($0) }   // + 1: a row's own column may be among them
        let users = Float(max(1, rowCount))
        var keptColumns = [[Int32]](repeating: [], count: n)
        var keptValues = [[Float]](repeating: [], count: n)
        var diagonal = [Float](repeating: 0, count: n)
        keptColumns.withUnsafeMutableBufferPointer { columnBuffer in
          keptValues.withUnsafeMutableBufferPointer { valueBuffer in
            diagonal.withUnsafeMutableBufferPointer { diagonalBuffer in
                let outColumns = SharedMutableBuffer(columnBuffer), outValues = SharedMutableBuffer(valueBuffer)
                let diag = SharedMutableBuffer(diagonalBuffer)
                // One dense row per thread, not per range (at 10^6 columns a scratch per range
                // would zero gigabytes).
                let scratches = ScratchPool(count: Parallelism.resolve(threads)) { GramRowScratch(columns: n, keep: keep) }
                Parallelism.forEachRange(n, grain: 32, threads: threads) { range in
                  scratches.with { scratch in
                    let accumulator = scratch.accumulator, touched = scratch.touched
                    var list = scratch.list, selector = scratch.selector
                    for i in range {
                        list.removeAll(keepingCapacity: true)
                        for q in t.rowPointers[i]..<t.rowPointers[i + 1] {
                            let u = Int(t.columns[q])
                            let xui = t.values[q]
                            for p in rowPointers[u]..<rowPointers[u + 1] {
                                let c = Int(columns[p])
                                if !touched[c] { touched[c] = true; list.append(Int32(c)) }
                                accumulator[c] += xui * values[p]
                            }
                        }
                        for c in popular where !touched[Int(c)] { touched[Int(c)] = true; list.append(c) }
                        diag.base[i] = accumulator[i]
                        selector.reset(k: keep)
                        let si = sums[i] / users
                        for c in list where Int(c) != i {
                            selector.push(index: Int(c), score: abs(accumulator[Int(c)] - si * sums[Int(c)]))
                        }
                        let best = selector.sortedResults()
                        outColumns.base[i] = best.map { Int32($0.index) }
                        outValues.base[i] = best.map { accumulator[$0.index] }
                        for c in list { accumulator[Int(c)] = 0; touched[Int(c)] = false }
                    }
                    scratch.list = list
                    scratch.selector = selector
                  }
                }
            }
          }
        }
        var pointers = [Int](repeating: 0, count: n + 1)
        for i in 0..<n { pointers[i + 1] = pointers[i] + keptColumns[i].count }
        var cols = [Int32](), vals = [Float]()
        cols.reserveCapacity(pointers[n])
        vals.reserveCapacity(pointers[n])
        for i in 0..<n {
            cols.append(contentsOf: keptColumns[i])
            vals.append(contentsOf: keptValues[i])
            keptColumns[i] = []
            keptValues[i] = []
        }
        return PrunedGram(rowPointers: pointers, columns: cols, values: vals, diagonal: diagonal, columnSums: sums, rowCount: rowCount)
    }
}

/// One thread's dense Gram row: accumulator and touched flags (kept zero/false between rows),
/// the touched columns and a selector.
final class GramRowScratch {
    let accumulator: UnsafeMutablePointer<Float>
    let touched: UnsafeMutablePointer<Bool>
    var list: [Int32] = []
    var selector: TopKSelector

    init(columns n: Int, keep: Int) {
        accumulator = .allocate(capacity: max(1, n))
        accumulator.initialize(repeating: 0, count: max(1, n))
        touched = .allocate(capacity: max(1, n))
        touched.initialize(repeating: false, count: max(1, n))
        selector = TopKSelector(k: keep)
    }

    deinit {
        accumulator.deallocate()
        touched.deallocate()
    }
}

extension SparseMatrix {
    /// `out` = the sum of the listed rows (dense, `columnCount` wide), added in the order given:
    /// an item-item model's scores for a history (item-kNN, sparse-ease).
    public func sumRows<S: Sequence>(_ rows: S, into out: UnsafeMutableBufferPointer<Float>) where S.Element == Int32 {
        out.update(repeating: 0)
        columns.withUnsafeBufferPointer { cols in
            values.withUnsafeBufferPointer { vals in
                for r in rows {
                    for p in rowPointers[Int(r)]..<rowPointers[Int(r) + 1] { out[Int(cols[p])] += vals[p] }
                }
            }
        }
    }
}
