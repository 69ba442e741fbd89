import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Arithmetic on sizes that come from outside (file headers, settings, requests): every product is
/// checked for overflow, so a crafted number yields nil (and a clear error upstream) instead of
/// a trap or an allocation the input asked for.
public func checkedProduct(_ factors: Int...) -> Int? { checkedProduct(factors) }

/// The product of `factors`, or nil when one is negative or the product overflows `Int`.
public func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1
    for f in factors {
        guard f >= 0 else { return nil }
        let (p, overflow) = product.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        product = p
    }
    return product
}

/// How much memory a computation may plan to use before it refuses with an estimate: the
/// machine's physical memory less a margin (`AFFINITY_MEMORY_LIMIT_MB` overrides it).
public enum MemoryBudget {
    /// Bytes a single computation may allocate (read once per process).
    public static let bytes: Int = {
        if let raw = ProcessInfo.processInfo.environment["AFFINITY_MEMORY_LIMIT_MB"], let mb = Int(raw), mb > 0 {
            return checkedProduct(mb, 1 << 20) ?? Int.max
        }
        // A container's limit (cgroup v2) when it is below the machine's memory.
        var physical = Double(ProcessInfo.processInfo.physicalMemory)
        if let text = try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8),
           let limit = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)), limit > 0 {
            physical = min(physical, limit)
        }
        return Int(physical * 0.8)
    }()

    /// Throws `MemoryBudgetError` when an estimate of `bytes` (computed in floating point, so
    /// absurd settings cannot overflow it) exceeds the budget. `what` names the settings that
    /// drive the size, so the message says what to change.
    public static func check(bytes: Double, for what: String) throws {
        let budget = Self.bytes
        guard bytes <= Double(budget) else { throw MemoryBudgetError(what: what, estimate: bytes, budget: budget) }
    }

    /// Bytes as a short human-readable figure ("3.7 TB").
    public static func describe(_ bytes: Double) -> String {
        let units = ["bytes", "KB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
        var value = bytes, unit = 0
        while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
        return unit == 0 ? "\(Int(bytes)) bytes" : String(format: "%.1f", value) + " " + units[unit]
    }
}

/// A computation that would need more memory than `MemoryBudget` allows.
public struct MemoryBudgetError: Error, CustomStringConvertible, Equatable {
    public var what: String
    /// The estimate in bytes.
    public var estimate: Double
    public var budget: Int
    public var description: String {
        "\(what) would need about \(MemoryBudget.describe(estimate)) of memory; this machine allows \(MemoryBudget.describe(Double(budget))) (AFFINITY_MEMORY_LIMIT_MB changes the limit)"
    }
}

/// The position of the first NaN or infinity in `values`, or nil when all are finite. Loaders call
/// it on every float array they read, so that a corrupt file is refused by name instead of
/// serving NaN scores.
public func firstNonFinite<C: Collection>(_ values: C) -> Int? where C.Element: FloatingPoint {
    var n = 0
    for v in values {
        if !v.isFinite { return n }
        n += 1
    }
    return nil
}

/// Reading files whose path came from outside: only regular files (a FIFO or device would block
/// or never end), opened without blocking and checked on the open descriptor, so a path swapped
/// between check and read cannot slip through.
public enum RegularFile {
    /// The whole file, or why it cannot be read.
    public static func contents(atPath path: String) -> Result<Data, RegularFileError> {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            return .failure(errno == ENOENT ? .missing : .unreadable(String(cString: strerror(errno))))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return .failure(.unreadable(String(cString: strerror(errno)))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .failure(.notRegular) }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: false)
        do {
            return .success(try handle.readToEnd() ?? Data())
        } catch {
            return .failure(.unreadable(error.localizedDescription))
        }
    }
}

/// Why `RegularFile.contents` could not read a file.
public enum RegularFileError: Error, CustomStringConvertible, Equatable {
    case missing
    case notRegular
    case unreadable(String)
    public var description: String {
        switch self {
        case .missing: return "no such file"
        case .notRegular: return "not a regular file"
        case .unreadable(let reason): return "cannot read: \(reason)"
        }
    }
}

/// The process's own memory use, for benchmarks and reports.
public enum ProcessMemory {
    /// The peak resident set size so far (bytes), from `getrusage` (Linux reports kilobytes,
    /// Darwin bytes).
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        #if canImport(Darwin)
        guard getrusage(RUSAGE_SELF, &usage) == 0 else { return 0 }
        return Int(usage.ru_maxrss)
        #else
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        return Int(usage.ru_maxrss) * 1024
        #endif
    }
}
