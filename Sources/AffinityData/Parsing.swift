import Foundation

/// Low-level helpers to scan a text file line by line over its raw bytes.
enum TextScanner {
    /// Reads a whole file. The error names the path.
    static func readBytes(_ path: String) throws -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw DataError.unreadable(path: path, reason: "no such file")
        }
        guard !isDirectory.boolValue else { throw DataError.unreadable(path: path, reason: "is a folder, expected a file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError.unreadable(path: path, reason: "cannot be read (permissions?)")
        }
        return [UInt8](data)
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
    static func splitCSV(_ line: UnsafeBufferPointer<UInt8>) -> [String]? {
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
            } else if b == UInt8(ascii: ",") {
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

    /// Shows a field in an error message.
    static func quoted(_ f: UnsafeBufferPointer<UInt8>) -> String {
        let s = String(decoding: f.prefix(60), as: UTF8.self)
        return "'\(s)'"
    }
}
