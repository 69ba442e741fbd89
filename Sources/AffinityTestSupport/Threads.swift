import AffinityLinalg

/// Runs `body(t)` for t in 0..<count on `count` threads of their own, all at once, and returns
/// each thread's result (for tests that inference is safe from many threads).
public func onThreads<T>(_ count: Int, _ body: @escaping (Int) -> T) -> [T] { Parallelism.onOwnThreads(count, body) }
