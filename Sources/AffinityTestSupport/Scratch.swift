import Foundation

/// Scratch files for tests. Everything a test writes lives under one folder per test process
/// (`affinity-tests-<pid>` in the system's temporary folder), removed when the process exits:
/// tests used to leave their folders behind, about 11 MB a run (a gigabyte after 80 runs).
public enum TestScratch {
    /// This process's folder, made on first use.
    public static let root: String = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("affinity-tests-\(getpid())").path
        try? FileManager.default.removeItem(atPath: root)   // left by a killed run that had this pid
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(atPath: TestScratch.root) }
        return root
    }()

    /// A fresh path under `root`, `prefix-<random><suffix>`, not yet created.
    public static func path(_ prefix: String, suffix: String = "") -> String {
        (root as NSString).appendingPathComponent("\(prefix)-\(UInt32.random(in: 0...UInt32.max))\(suffix)")
    }

    /// A fresh, empty folder under `root`.
    public static func folder(_ prefix: String) -> String {
        let path = path(prefix)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
