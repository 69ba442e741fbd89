import Foundation
import _AffinityZlib

/// Low-level helpers to scan a text file line by line over its raw bytes.
enum TextScanner {
    /// Reads a whole file. The error names the path.
    static func readBytes(_ path: String) throws -> [UInt8] {
        try checkFile(path)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError.unreadable(path: path, reason: "cannot be read (permissions?)")
        }
        return [UInt8](data)
    }

    /// Checks that `path` is a readable file (not a folder); the error names the path.
    static func checkFile(_ path: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataError.unreadable(path: path, reason: "no such file")
        }
        guard !isDirectory.boolValue else { throw DataError.unreadable(path: path, reason: "is a folder, expected a file") }
    }

    /// Calls `body(lineNumber, lineBytes)` for each line of the file at `path`, reading it in
    /// chunks of `chunkBytes` so the text is never held whole (a line longer than a chunk grows
    /// the buffer to hold it). Same lines and numbers as `forEachLine(_:_:)` over the file's bytes.
    /// Return false from `body` to stop.
    static func forEachLine(inFile path: String, chunkBytes: Int = 8 << 20, _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) throws {
        try withOpenFile(path) { fd in
            try forEachLine(chunkBytes: chunkBytes, reading: { buffer, count in
                while true {
                    let n = read(fd, buffer, count)
                    if n >= 0 { return n }
                    if errno != EINTR { throw DataError.unreadable(path: path, reason: "read failed (\(String(cString: strerror(errno))))") }
                }
            }, body)
        }
    }

    /// Runs `body` with a read-only descriptor of the regular file at `path` (closed after it);
    /// a missing file, a folder or one that cannot be opened is an error naming it.
    private static func withOpenFile(_ path: String, _ body: (Int32) throws -> Void) throws {
        try checkFile(path)
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw DataError.unreadable(path: path, reason: "cannot be opened (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        try body(fd)
    }

    /// `forEachLine(inFile:)` for a gzip file, decompressed as it is read (every member); more than
    /// `limit` decompressed bytes is refused as a decompression bomb.
    static func forEachLine(inGzipFile path: String, limit: Int, chunkBytes: Int = 8 << 20, _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) throws {
        try withOpenFile(path) { fd in
            var message = [CChar](repeating: 0, count: 160)
            guard let stream = affinity_gz_open(fd, limit, &message, message.count) else {
                throw gzipError(path, message)
            }
            defer { affinity_gz_close(stream) }
            try forEachLine(chunkBytes: chunkBytes, reading: { buffer, count in
                let n = affinity_gz_read(stream, buffer, count, &message, message.count)
                guard n >= 0 else {
                    throw gzipError(path, message)
                }
                return n
            }, body)
        }
    }

    /// The error for a zlib wrapper's NUL-ended `message` about `path`.
    static func gzipError(_ path: String, _ message: [CChar]) -> DataError {
        .unreadable(path: path, reason: "gzip: " + String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// The chunked line loop over any byte source: `read(buffer, count)` fills up to `count` bytes
    /// and returns how many (0 at the end).
    static func forEachLine(chunkBytes: Int, reading read: (UnsafeMutablePointer<UInt8>, Int) throws -> Int,
                            _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) throws {
        var capacity = max(16, chunkBytes)
        var buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buffer.deallocate() }
        var filled = 0
        var lineNumber = 0
        var stopped = false
        // Hands the complete lines in buffer[0..<end] (end just after a newline, or the file's end) to body.
        func lines(upTo end: Int) throws {
            let region = UnsafeBufferPointer(start: buffer, count: end)
            let first = lineNumber
            try forEachLine(region) { k, line in
                lineNumber = first + k
                if try !body(lineNumber, line) { stopped = true; return false }
                return true
            }
        }
        while !stopped {
            if filled == capacity {
                // One line fills the whole buffer: grow it.
                let larger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
                larger.update(from: buffer, count: filled)
                buffer.deallocate()
                buffer = larger
                capacity *= 2
            }
            let n = try read(buffer + filled, capacity - filled)
            if n == 0 {
                if filled > 0 { try lines(upTo: filled) }
                return
            }
            filled += n
            // The last newline, looked for in the bytes just read only (the tail before them has none).
            var last = filled - 1
            while last >= filled - n && buffer[last] != 0x0A { last -= 1 }
            if last < filled - n { last = -1 }
            guard last >= 0 else { continue }
            let end = last + 1
            try lines(upTo: end)
            let tail = filled - end
            if tail > 0 { memmove(buffer, buffer + end, tail) }
            filled = tail
        }
    }

    /// Calls `body(lineNumber, lineBytes)` for each line (1-based numbers, `\n` or `\r\n` endings
    /// removed). Return false from `body` to stop.
    static func forEachLine(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (Int, UnsafeBufferPointer<UInt8>) throws -> Bool) rethrows {
        var start = 0
        var lineNumber = 0
        let n = bytes.count
        guard let base = bytes.baseAddress else { return }
        while start < n {
            lineNumber += 1
            var end = start
            if let p = memchr(base + start, 0x0A, n - start) {
                end = base.distance(to: p.assumingMemoryBound(to: UInt8.self))
            } else {
                end = n
            }
            var lineEnd = end
            if lineEnd > start && bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            if try !body(lineNumber, UnsafeBufferPointer(rebasing: bytes[start..<lineEnd])) { return }
            start = end + 1
        }
    }

    /// Whether a line holds only spaces and tabs.
    static func isBlank(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 }
    }

    /// Splits a line on a one- or two-byte delimiter into at most `limit` field ranges; the count
    /// returned is the real number of fields (may exceed `limit`).
    static func split(_ line: UnsafeBufferPointer<UInt8>, delimiter: [UInt8], into fields: inout [Range<Int>], limit: Int = 16) -> Int {
        fields.removeAll(keepingCapacity: true)
        var start = 0
        var i = 0
        var total = 1
        let d0 = delimiter[0]
        let width = delimiter.count
        while i < line.count {
            if line[i] == d0 && (width == 1 || (i + 1 < line.count && line[i + 1] == delimiter[1])) {
                if fields.count < limit { fields.append(start..<i) }
                total += 1
                i += width
                start = i
            } else {
                i += 1
            }
        }
        if fields.count < limit { fields.append(start..<line.count) }
        return total
    }

    /// Splits one CSV record (RFC 4180 quoting, no embedded newlines) into strings.
    static func splitCSV(_ line: UnsafeBufferPointer<UInt8>, delimiter: UInt8 = UInt8(ascii: ",")) -> [String]? {
        var out: [String] = []
        var field: [UInt8] = []
        var i = 0
        var inQuotes = false
        while i < line.count {
            let b = line[i]
            if inQuotes {
                if b == UInt8(ascii: "\"") {
                    if i + 1 < line.count && line[i + 1] == UInt8(ascii: "\"") {
                        field.append(b)
                        i += 1
                    } else {
                        inQuotes = false
                    }
                } else {
                    field.append(b)
                }
            } else if b == UInt8(ascii: "\"") && field.isEmpty {
                inQuotes = true
            } else if b == delimiter {
                out.append(String(decoding: field, as: UTF8.self))
                field.removeAll(keepingCapacity: true)
            } else {
                field.append(b)
            }
            i += 1
        }
        if inQuotes { return nil }
        out.append(String(decoding: field, as: UTF8.self))
        return out
    }

    /// Parses a decimal number such as `4`, `4.0`, `3.5` or `-1e3`; nil when it is not one.
    static func parseFloat(_ f: UnsafeBufferPointer<UInt8>) -> Float? {
        guard !f.isEmpty else { return nil }
        var i = 0
        var negative = false
        if f[0] == UInt8(ascii: "-") || f[0] == UInt8(ascii: "+") { negative = f[0] == UInt8(ascii: "-"); i = 1 }
        var mantissa: Int64 = 0
        var scale = 0
        var digits = 0
        var seenDot = false
        while i < f.count {
            let b = f[i]
            if b >= 48 && b <= 57 {
                if digits < 17 {
                    mantissa = mantissa * 10 + Int64(b - 48)
                    if seenDot { scale += 1 }
                } else if !seenDot { scale -= 1 }
                digits += 1
            } else if b == UInt8(ascii: ".") && !seenDot {
                seenDot = true
            } else {
                // Rare forms (exponents, inf): defer to the standard parser.
                return Float(String(decoding: f, as: UTF8.self)).flatMap { $0.isFinite ? $0 : nil }
            }
            i += 1
        }
        guard digits > 0 else { return nil }
        var value = Double(mantissa)
        if scale > 0 { value /= pow(10, Double(scale)) } else if scale < 0 { value *= pow(10, Double(-scale)) }
        return Float(negative ? -value : value)
    }

    /// Parses a decimal integer with an optional sign; nil when it is not one.
    static func parseInt(_ f: UnsafeBufferPointer<UInt8>) -> Int64? {
        guard !f.isEmpty, f.count <= 19 else { return nil }
        var i = 0
        var negative = false
        if f[0] == UInt8(ascii: "-") || f[0] == UInt8(ascii: "+") {
            negative = f[0] == UInt8(ascii: "-")
            i = 1
            guard f.count > 1 else { return nil }
        }
        var value: Int64 = 0
        while i < f.count {
            let d = Int64(f[i]) - 48
            guard d >= 0 && d <= 9 else { return nil }
            value = value * 10 + d
            i += 1
        }
        return negative ? -value : value
    }

    /// Decodes ISO-8859-1 (latin-1) bytes: each byte is the Unicode scalar of the same value.
    static func latin1(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(Unicode.Scalar(b)) }
        return String(s)
    }

    /// An ISO-8601 date or date-time (`2024-03-01`, `2024-03-01T12:30:00`, with a space instead of
    /// `T`, optional fractional seconds, and `Z` or `±hh:mm`; no zone means UTC) as Unix seconds.
    static func parseISODate(_ f: UnsafeBufferPointer<UInt8>) -> Int64? {
        func digits(_ at: Int, _ n: Int) -> Int64? {
            guard at + n <= f.count else { return nil }
            var v: Int64 = 0
            for k in at..<(at + n) {
                guard f[k] >= 0x30 && f[k] <= 0x39 else { return nil }
                v = v * 10 + Int64(f[k] - 0x30)
            }
            return v
        }
        guard let year = digits(0, 4), f.count >= 10, f[4] == UInt8(ascii: "-"), let month = digits(5, 2),
              f[7] == UInt8(ascii: "-"), let day = digits(8, 2), (1...12).contains(month), (1...31).contains(day) else { return nil }
        var seconds: Int64 = 0, i = 10
        if i < f.count && (f[i] == UInt8(ascii: "T") || f[i] == UInt8(ascii: " ")) {
            guard let h = digits(i + 1, 2), f.count > i + 3, f[i + 3] == UInt8(ascii: ":"), let m = digits(i + 4, 2), h < 24, m < 60 else { return nil }
            seconds = h * 3600 + m * 60
            i += 6
            if i < f.count && f[i] == UInt8(ascii: ":") {
                guard let sec = digits(i + 1, 2), sec < 61 else { return nil }
                seconds += sec
                i += 3
                if i < f.count && f[i] == UInt8(ascii: ".") {
                    i += 1
                    while i < f.count && f[i] >= 0x30 && f[i] <= 0x39 { i += 1 }
                }
            }
        }
        if i < f.count && f[i] == UInt8(ascii: "Z") {
            i += 1
        } else if i < f.count && (f[i] == UInt8(ascii: "+") || f[i] == UInt8(ascii: "-")) {
            guard let zh = digits(i + 1, 2) else { return nil }
            var zone = zh * 3600
            var j = i + 3
            if j < f.count && f[j] == UInt8(ascii: ":") { j += 1 }
            if let zm = digits(j, 2) { zone += zm * 60; j += 2 }
            seconds -= f[i] == UInt8(ascii: "+") ? zone : -zone
            i = j
        }
        guard i == f.count else { return nil }
        // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        return days * 86_400 + seconds
    }

    /// Shows a field in an error message.
    static func quoted(_ f: UnsafeBufferPointer<UInt8>) -> String {
        let s = String(decoding: f.prefix(60), as: UTF8.self)
        return "'\(s)'"
    }
}
