import Foundation

/// Scratch files for tests. Everything a test writes lives under one folder per test process
/// (`affinity-tests-<pid>-<random>` in the system's temporary folder), removed when the process
/// exits normally: tests used to leave their folders behind, about 11 MB a run (a gigabyte after
/// 80 runs). A run that crashed or was killed cannot remove its folder; the next run removes such
/// folders once their process is gone and they have not changed for an hour.
public enum TestScratch {
    /// This process's folder, made on first use.
    public static let root: String = {
        sweepAbandoned()
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(prefix)\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
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

    private static let prefix = "affinity-tests-"

    /// Removes the folders of earlier test processes that no longer run (a crash, a kill) and have
    /// not changed for an hour (the age guards against a live run in another pid namespace that
    /// shares the temporary folder).
    private static func sweepAbandoned() {
        let fm = FileManager.default, tmp = fm.temporaryDirectory.path
        for name in (try? fm.contentsOfDirectory(atPath: tmp)) ?? [] where name.hasPrefix(prefix) {
            guard let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }), pid > 0 else { continue }
            if kill(pid, 0) == 0 || errno != ESRCH { continue }   // alive, or not ours to ask about
            let path = (tmp as NSString).appendingPathComponent(name)
            guard let modified = (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                  Date().timeIntervalSince(modified) > 3600 else { continue }
            try? fm.removeItem(atPath: path)
        }
    }
}
