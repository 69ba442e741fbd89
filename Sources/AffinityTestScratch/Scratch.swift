import Foundation

/// Scratch files for tests. Everything a test writes lives under one folder per test process
/// (`affinity-tests-<pid>-<random>` in the system's temporary folder), removed when the process
/// exits normally: tests used to leave their folders behind, about 11 MB a run (a gigabyte after
/// 80 runs). A run that crashed or was killed cannot remove its folder; the next run removes it:
/// each process holds an exclusive `flock` on its folder's `.lock` while it lives (the kernel drops
/// it when the process dies, in whatever pid namespace), and a folder whose lock can be taken is
/// abandoned.
public enum TestScratch {
    /// This process's folder, made on first use.
    public static let root: String = {
        sweepAbandoned()
        let root = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(prefix)\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let lock = open((root as NSString).appendingPathComponent(".lock"), O_CREAT | O_RDWR, 0o600)
        if lock >= 0 { _ = flock(lock, LOCK_EX) }   // held, descriptor open, until the process ends
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

    /// Removes the folders of earlier test processes that are gone: their `.lock` can be locked
    /// (no live holder). Folders without one (made before the lock existed) go when their pid does
    /// not run here and they have not changed for an hour.
    private static func sweepAbandoned() {
        let fm = FileManager.default, tmp = fm.temporaryDirectory.path
        for name in (try? fm.contentsOfDirectory(atPath: tmp)) ?? [] where name.hasPrefix(prefix) {
            let path = (tmp as NSString).appendingPathComponent(name)
            let lockPath = (path as NSString).appendingPathComponent(".lock")
            // A folder younger than a minute may belong to a run that has not taken its lock yet.
            guard let modified = (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date else { continue }
            let idle = Date().timeIntervalSince(modified)
            if idle < 60 { continue }
            if fm.fileExists(atPath: lockPath) {
                let fd = open(lockPath, O_RDWR)
                guard fd >= 0 else { continue }
                let free = flock(fd, LOCK_EX | LOCK_NB) == 0
                close(fd)
                if free { try? fm.removeItem(atPath: path) }
                continue
            }
            guard let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }), pid > 0 else { continue }
            if kill(pid, 0) == 0 || errno != ESRCH || idle < 3600 { continue }   // alive, not ours to ask about, or recent
            try? fm.removeItem(atPath: path)
        }
    }
}
