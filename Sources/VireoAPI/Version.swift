public enum VireoAPIVersion { public static let api = "8.2.4" }
