import Foundation

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
            if FileManager.default.fileExists(atPath: path) {
                _ = try FileManager.default.replaceItemAt(url, withItemAt: tmp)
            } else {
                try FileManager.default.moveItem(at: tmp, to: url)
            }
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw DataError.writeFailed(path: path, reason: "\(error.localizedDescription)")
        }
    }

    /// Builds a folder: `fill` writes into a temporary folder, which then replaces `path`.
    /// If `fill` throws, the temporary folder is removed and any earlier `path` is untouched.
    public static func folder(_ path: String, overwrite: Bool, _ fill: (String) throws -> Void) throws {
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
        let parent = url.deletingLastPathComponent()
        try createFolder(parent.path)
        let tmp = parent.appendingPathComponent(".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
            try fill(tmp.path)
            if exists {
                let old = parent.appendingPathComponent(".\(url.lastPathComponent).old-\(ProcessInfo.processInfo.processIdentifier)")
                try fm.moveItem(at: url, to: old)
                do {
                    try fm.moveItem(at: tmp, to: url)
                } catch {
                    try? fm.moveItem(at: old, to: url)
                    throw error
                }
                try? fm.removeItem(at: old)
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

    static func createFolder(_ path: String) throws {
        guard !path.isEmpty else { return }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw DataError.writeFailed(path: path, reason: "cannot create folder: \(error.localizedDescription)")
        }
    }
}
