/// Swiftlet's version: the single source of truth. SwiftPM manifests carry no version of their
/// own (a dependent package pins a git tag), so a release bumps this constant and tags the same
/// commit `vVERSION`. `swiftlet --version`, the `Server` header and `/v1/models` all read it.
public enum SwiftletVersion {
    public static let current = "0.4.0"

    /// `swiftlet/VERSION`, as HTTP `Server` and `User-Agent` headers name the program.
    public static var product: String { "swiftlet/\(current)" }
}
