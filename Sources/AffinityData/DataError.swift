/// Errors of reading, validating and writing interaction data. Each names the file, the line or the
/// field, and what was wrong, so a user can fix the input without reading our code.
public enum DataError: Error, CustomStringConvertible, Equatable {
    /// A line that could not be parsed. `line` is 1-based.
    case malformedLine(file: String, line: Int, reason: String)
    /// A file that holds no interaction at all.
    case emptyFile(file: String)
    /// A file or folder that does not exist or cannot be read.
    case unreadable(path: String, reason: String)
    /// A split folder that lacks a required file.
    case incompleteSplit(folder: String, missing: String)
    /// An argument or setting outside its allowed range.
    case invalidSetting(name: String, reason: String)
    /// Data that cannot support the requested operation.
    case unsupported(String)
    /// Writing an output failed; nothing was left behind under the final name.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case .malformedLine(let file, let line, let reason): return "\(file):\(line): \(reason)"
        case .emptyFile(let file): return "\(file): no interactions (the file is empty or holds only a header)"
        case .unreadable(let path, let reason): return "\(path): \(reason)"
        case .incompleteSplit(let folder, let missing): return "\(folder): not a split folder: \(missing) is missing"
        case .invalidSetting(let name, let reason): return "\(name): \(reason)"
        case .unsupported(let what): return what
        case .writeFailed(let path, let reason): return "\(path): could not write: \(reason)"
        }
    }
}
