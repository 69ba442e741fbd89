import Foundation
import AffinityTestScratch
@testable import AffinityData

/// A fresh temporary folder for one test.
func temporaryFolder(_ name: String = #function) -> String {
    let safe = name.filter { $0.isLetter || $0.isNumber }
    let path = TestScratch.path("affinity-test-\(safe)")
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func write(_ text: String, to folder: String, _ name: String) -> String {
    let path = (folder as NSString).appendingPathComponent(name)
    try! Data(text.utf8).write(to: URL(fileURLWithPath: path))
    return path
}

func parse(_ text: String, _ dialect: InteractionReader.Dialect = .protocolTSV, name: String = "f.tsv") throws -> InteractionLog {
    try InteractionReader.parse(Array(text.utf8), name: name, dialect: dialect)
}

/// The error message of a throwing call, or nil.
func message(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch { return "\(error)" }
}
