import Foundation

/// Runs model loads (reading a model folder, building or mapping its index) on threads of their
/// own, never on the threads that answer requests: at most `maxConcurrent` at once (more is a 429),
/// and a caller waits at most `timeout` (then 503; the load finishes in the background and still
/// counts against the limit until it does, so slow loads cannot pile up).
final class ModelLoader: @unchecked Sendable {
    let maxConcurrent: Int
    let timeout: Double
    private let lock = NSLock()
    private var running = 0

    init(maxConcurrent: Int, timeout: Double) {
        self.maxConcurrent = max(1, maxConcurrent)
        self.timeout = timeout
    }

    /// Loads in progress (finished or abandoned ones excluded).
    var inProgress: Int { lock.locked { running } }

    func load<T: Sendable>(_ what: String, _ work: @escaping @Sendable () throws -> T) async throws -> T {
        let admitted = lock.locked { () -> Bool in
            guard running < maxConcurrent else { return false }
            running += 1
            return true
        }
        guard admitted else {
            throw APIError(.tooManyRequests, "\(maxConcurrent) model loads are already in progress; retry when one has finished")
        }
        let once = ResumeOnce<T>()
        return try await withCheckedThrowingContinuation { continuation in
            once.set(continuation)
            let thread = Thread { [self] in
                let result = Result { try work() }
                lock.locked { running -= 1 }
                once.resume(with: result)
            }
            thread.name = "affinity-model-load"
            thread.stackSize = 8 << 20
            thread.start()
            let seconds = timeout
            DispatchQueue.global().asyncAfter(deadline: .now() + seconds) {
                once.resume(with: .failure(APIError(.serviceUnavailable,
                    "loading \(what) took longer than \(Int(seconds)) s; it goes on in the background (GET /v1/models shows the registry)")))
            }
        }
    }
}

/// Resumes a continuation exactly once, whichever of the load and its timeout comes first.
final class ResumeOnce<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<T, any Error>?

    func set(_ c: CheckedContinuation<T, any Error>) { lock.locked { continuation = c } }

    func resume(with result: Result<T, any Error>) {
        let c = lock.locked { () -> CheckedContinuation<T, any Error>? in
            defer { continuation = nil }
            return continuation
        }
        c?.resume(with: result)
    }
}
