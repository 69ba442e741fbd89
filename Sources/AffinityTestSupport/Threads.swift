import Foundation

/// Runs `body(t)` for t in 0..<count on `count` threads of their own, all at once, and returns
/// each thread's result (for tests that inference is safe from many threads).
public func onThreads<T>(_ count: Int, _ body: @escaping (Int) -> T) -> [T] {
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

private final class ThreadResults<T>: @unchecked Sendable {
    var results: [T?]
    let lock = NSLock()
    init(_ n: Int) { results = Array(repeating: nil, count: n) }
}

private struct UncheckedBody<T>: @unchecked Sendable { let body: (Int) -> T }
