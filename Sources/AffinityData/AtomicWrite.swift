import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes files and folders so that nothing partial is ever left under the final name: the content
/// goes to a temporary sibling first and is renamed into place only once complete.
public enum AtomicWrite {
    /// Writes `contents` to `path` through a temporary file and a rename.
    public static func file(_ contents: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent()
        try createFolder(dir.path)
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try contents.write(to: tmp)
            // rename(2) replaces an existing file atomically. (Foundation's replaceItemAt failed now
            // and then on Linux with "The file doesn't exist" when replacing a file.)
            guard rename(tmp.path, url.path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw DataError.writeFailed(path: path, reason: "\(error.localizedDescription)")
        }
    }

    /// Builds a folder: `fill` writes into a temporary folder, which then replaces `path`.
    /// If `fill` throws, the temporary folder is removed and any earlier `path` is untouched.
    ///
    /// With `overwrite`, an existing folder is replaced only when it is empty or `replaceable`
    /// recognises it (an Affinity model, split or data folder, by its metadata): `--force` never
    /// deletes a folder of other files. The swap is one atomic exchange where the system has one
    /// (Linux `renameat2(RENAME_EXCHANGE)`), so the path always names a complete folder.
    public static func folder(_ path: String, overwrite: Bool, replaceable: (String) -> Bool = { _ in false },
                              _ fill: (String) throws -> Void) throws {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        let fm = FileManager.default
        var isDirectory: ObjCBool = false
        let exists = fm.fileExists(atPath: url.path, isDirectory: &isDirectory)
        if exists && !overwrite {
            throw DataError.writeFailed(path: path, reason: "already exists (pass --force to replace it)")
        }
        if exists && !isDirectory.boolValue {
            throw DataError.writeFailed(path: path, reason: "exists and is a file, not a folder")
        }
        if exists {
            let empty = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? ["?"]).isEmpty
            guard empty || replaceable(url.path) else {
                throw DataError.writeFailed(path: path, reason: "exists and is not a folder this command wrote (it holds other files); --force replaces only such folders: choose another output path or remove it yourself")
            }
        }
        let parent = url.deletingLastPathComponent()
        try createFolder(parent.path)
        let tmp = parent.appendingPathComponent(".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
            try fill(tmp.path)
            if exists {
                if exchange(tmp.path, url.path) {
                    try? fm.removeItem(at: tmp)   // now the old folder
                } else {
                    let old = parent.appendingPathComponent(".\(url.lastPathComponent).old-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))")
                    try fm.moveItem(at: url, to: old)
                    do {
                        try fm.moveItem(at: tmp, to: url)
                    } catch {
                        try? fm.moveItem(at: old, to: url)
                        throw error
                    }
                    try? fm.removeItem(at: old)
                }
            } else {
                try fm.moveItem(at: tmp, to: url)
            }
        } catch let error as DataError {
            try? fm.removeItem(at: tmp)
            throw error
        } catch {
            try? fm.removeItem(at: tmp)
            throw DataError.writeFailed(path: path, reason: "\(error.localizedDescription)")
        }
    }

    /// Swaps two paths atomically; false where the system cannot (the caller falls back to two renames).
    static func exchange(_ a: String, _ b: String) -> Bool {
        #if os(Linux)
        typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
        guard let symbol = dlsym(nil, "renameat2") else { return false }
        let renameat2 = unsafeBitCast(symbol, to: RenameAt2.self)
        let exchangeFlag: UInt32 = 1 << 1   // RENAME_EXCHANGE
        return renameat2(AT_FDCWD, a, AT_FDCWD, b, exchangeFlag) == 0
        #elseif canImport(Darwin)
        return renamex_np(a, b, UInt32(RENAME_SWAP)) == 0
        #else
        return false
        #endif
    }

    static func createFolder(_ path: String) throws {
        guard !path.isEmpty else { return }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw DataError.writeFailed(path: path, reason: "cannot create folder: \(error.localizedDescription)")
        }
    }
}

/// Appends text to a new file through a 1 MiB buffer (for files too large to build as one
/// string). Errors name the path. Call `close()` at the end; it flushes.
public final class BufferedTextWriter {
    public let path: String
    /// The name errors use (the final path when `path` is a temporary one).
    public let name: String
    private let fd: Int32
    private var buffer: [UInt8] = []
    private let capacity = 1 << 20
    private var closed = false

    /// Creates (or truncates) the file at `path`; errors name it `name` (default: `path`).
    public init(path: String, name: String? = nil) throws {
        self.path = path
        self.name = name ?? path
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw DataError.writeFailed(path: self.name, reason: String(cString: strerror(errno))) }
        buffer.reserveCapacity(capacity)
    }

    deinit { if !closed { Foundation.close(fd) } }

    public func write(_ text: String) throws {
        var text = text
        text.withUTF8 { buffer.append(contentsOf: $0) }
        if buffer.count >= capacity { try flush() }
    }

    /// Appends a whole number in decimal without going through a String.
    public func write(_ value: Int64) throws {
        var v = value.magnitude
        if value < 0 { buffer.append(UInt8(ascii: "-")) }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        withUnsafeMutableBytes(of: &digits) { d in
            repeat { d[n] = UInt8(48 + v % 10); v /= 10; n += 1 } while v > 0
            for k in stride(from: n - 1, through: 0, by: -1) { buffer.append(d[k]) }
        }
        if buffer.count >= capacity { try flush() }
    }

    public func write(byte: UInt8) { buffer.append(byte) }

    public func flush() throws {
        var offset = 0
        while offset < buffer.count {
            let n = buffer.withUnsafeBytes { Foundation.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw DataError.writeFailed(path: name, reason: String(cString: strerror(errno)))
            }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    public func close() throws {
        guard !closed else { return }
        try flush()
        closed = true
        guard Foundation.close(fd) == 0 else { throw DataError.writeFailed(path: name, reason: String(cString: strerror(errno))) }
    }
}
