import Foundation
import Testing

/// Inputs that crashed the loaders before the fixes of issue "Hardening", found by
/// `Benchmarks/fuzz/run.sh` (the mutation fuzzer) against the code as it was, kept in
/// `Tests/Fixtures/fuzz/LOADER-seedN/` (files renamed `*.bin` so that no tool mistakes them for real
/// data). Each is replayed through the fuzzer's own loader (`affinity fuzz --replay`), which loads
/// it as the CLI and the server do and uses what loads: the process must end normally, with the
/// input rejected by a message.
@Suite struct FuzzFixtureTests {
    static let fixtures: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/fuzz").path

    static var cases: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: fixtures)) ?? []).sorted()
    }

    @Test func thereAreFixtures() {
        #expect(Self.cases.count >= 10)
    }

    @Test(arguments: cases)
    func crashingInputIsRejected(name: String) throws {
        let loader = name.replacingOccurrences(of: #"-seed\d+$"#, with: "", options: .regularExpression)
        let source = Self.fixtures + "/" + name
        let dir = tempDir()
        let files = try FileManager.default.contentsOfDirectory(atPath: source).sorted()
        for file in files {
            try FileManager.default.copyItem(atPath: source + "/" + file, toPath: dir + "/" + String(file.dropLast(4)))
        }
        let target = loader == "model" || loader == "split" ? dir : dir + "/" + String(files[0].dropLast(4))
        let r = try CLI.run("fuzz", "--loader", loader, "--work", dir + "/work", "--replay", target)
        #expect(r.status == 0, "\(name): \(r.stderr.prefix(500))")
        #expect(r.stdout.hasPrefix("rejected: "), "\(name): \(r.stdout)")
    }
}
