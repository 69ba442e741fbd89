import Dispatch
import Foundation
import _AffinityKernels

/// The project's one setting for how many threads a parallel kernel may use.
///
/// `0` (the default) means every core the system reports. Code that already runs inside a parallel
/// region passes `threads: 1` to inner kernels so they do not oversubscribe the machine.
public enum Parallelism {
    /// Number of cores the process may use.
    public static var availableCores: Int {
        max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Resolves a requested thread count: `0` or negative means all cores; inside `sideBySide`
    /// each part gets half of them.
    public static func resolve(_ requested: Int) -> Int {
        let n = requested > 0 ? requested : availableCores
        let cap = Int(affinity_thread_cap())
        return cap > 0 ? min(n, cap) : n
    }

    /// Runs `first` and `second` at the same time when `threads` resolves to two or more (else
    /// one after the other), the parallel kernels inside each limited to half the threads: two
    /// independent halves of a step (a model's two towers) side by side instead of splitting each
    /// small product across every core. Both must touch disjoint state.
    public static func sideBySide(threads: Int, _ first: () -> Void, _ second: () -> Void) {
        let workers = resolve(threads)
        guard workers >= 2 else {
            first()
            second()
            return
        }
        let shares = [Int32((workers + 1) / 2), Int32(workers / 2)]   // an odd core goes to the first
        withoutActuallyEscaping(first) { a in
            withoutActuallyEscaping(second) { b in
                let parts = UncheckedBody<Void>(body: { $0 == 0 ? a() : b() })
                forEachChunk(2, threads: 2) { part in
                    let previous = affinity_thread_cap()
                    affinity_set_thread_cap(shares[part])
                    defer { affinity_set_thread_cap(previous) }
                    parts.body(part)
                }
            }
        }
    }

    /// Runs `body(chunk)` for chunks `0..<chunkCount`, on at most `threads` threads.
    ///
    /// Chunks are handed out dynamically, so the assignment of chunks to threads varies between
    /// runs: `body` must write only to its own chunk's outputs for the result to be deterministic.
    public static func forEachChunk(_ chunkCount: Int, threads: Int = 0, _ work: @Sendable (Int) -> Void) {
        guard chunkCount > 0 else { return }
        let workers = min(resolve(threads), chunkCount)
        if workers <= 1 {
            for c in 0..<chunkCount { work(c) }
            return
        }
        // A SIMD cap forced on this thread (tests) holds in the workers too, and only while they run our chunks.
        let level = affinity_forced_level()
        @Sendable func body(_ c: Int) {
            if level < 0 { return work(c) }
            let previous = affinity_forced_level()
            affinity_force_level(level)
            work(c)
            affinity_force_level(previous)
        }
        if chunkCount <= workers {
            // One chunk per worker: a dynamic counter could let the first thread to start take them all.
            DispatchQueue.concurrentPerform(iterations: chunkCount) { body($0) }
            return
        }
        let counter = ChunkCounter()
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while true {
                let c = counter.take()
                if c >= chunkCount { return }
                body(c)
            }
        }
    }

    /// Splits `0..<count` into contiguous ranges of about `grain` elements and runs them in parallel.
    public static func forEachRange(_ count: Int, grain: Int, threads: Int = 0, _ body: @Sendable (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let g = max(1, grain)
        let chunks = (count + g - 1) / g
        forEachChunk(chunks, threads: threads) { c in
            body((c * g)..<min(count, (c + 1) * g))
        }
    }
}

/// A lock-protected counter; cheap enough at chunk granularity.
private final class ChunkCounter: @unchecked Sendable {
    private var next = 0
    private let lock = NSLock()
    func take() -> Int {
        lock.lock(); defer { lock.unlock() }
        let v = next
        next += 1
        return v
    }
}

/// A pointer that may cross into a parallel region. Each task must write only its own part.
public struct SharedMutableBuffer<Element>: @unchecked Sendable {
    public let base: UnsafeMutableBufferPointer<Element>
    public init(_ base: UnsafeMutableBufferPointer<Element>) { self.base = base }
    @inline(__always) public subscript(i: Int) -> Element {
        get { base[i] }
        nonmutating set { base[i] = newValue }
    }
}

/// Keeps the first error raised inside a parallel region, so the caller can rethrow it afterwards.
public final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    public private(set) var error: Error?
    public init() {}
    public func set(_ e: Error) { lock.locked { if error == nil { error = e } } }
}

/// Wall-clock timing for progress reports and benchmarks.
public struct Stopwatch: Sendable {
    private let start = DispatchTime.now().uptimeNanoseconds
    public init() {}
    /// Seconds since creation.
    public var seconds: Double { Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 }
}

extension NSLock {
    /// Runs `body` holding the lock.
    public func locked<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

extension Parallelism {
    /// Runs `body(t)` for t in 0..<count on `count` threads of their own, all at once (unlike
    /// `forEachChunk`, which may run chunks one after another), and returns each thread's result:
    /// for work whose roles must overlap in time (a writer and its concurrent readers).
    public static func onOwnThreads<T>(_ count: Int, _ body: @escaping (Int) -> T) -> [T] {
        let box = ThreadResults<T>(count), group = DispatchGroup(), run = UncheckedBody(body: body)
        for t in 0..<count {
            group.enter()
            Thread {
                let r = run.body(t)
                box.lock.lock()
                box.results[t] = r
                box.lock.unlock()
                group.leave()
            }.start()
        }
        group.wait()
        return box.results.map { $0! }
    }
}

/// Reusable per-worker scratch (score rows, masks, dense accumulators): a worker takes one for a
/// chunk and gives it back, so a parallel loop allocates one per thread, not one per chunk.
public final class ScratchPool<Scratch>: @unchecked Sendable {
    private var free: [Scratch]
    private let lock = NSLock()
    private let make: () -> Scratch

    /// `count` scratches made up front (more are made if more workers ask at once).
    public init(count: Int, make: @escaping () -> Scratch) {
        self.make = make
        free = (0..<count).map { _ in make() }
    }

    public func take() -> Scratch { lock.locked { free.popLast() } ?? make() }

    public func give(back scratch: Scratch) { lock.locked { free.append(scratch) } }

    /// Runs `body` with a scratch taken from the pool, and gives it back.
    public func with<T>(_ body: (inout Scratch) throws -> T) rethrows -> T {
        var scratch = take()
        defer { give(back: scratch) }
        return try body(&scratch)
    }
}

/// An integer one thread sets and others read (progress that readers wait on).
public final class SharedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    public init() {}
    public func set(_ v: Int) { lock.locked { value = v } }
    public func add(_ v: Int) { lock.locked { value += v } }
    public func get() -> Int { lock.locked { value } }
}

private final class ThreadResults<T>: @unchecked Sendable {
    var results: [T?]
    let lock = NSLock()
    init(_ n: Int) { results = Array(repeating: nil, count: n) }
}

private struct UncheckedBody<T>: @unchecked Sendable { let body: (Int) -> T }
