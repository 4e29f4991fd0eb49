import ArgumentParser
import Logging

@main
struct Tiersync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiersync",
        abstract: "Multi-tier, multi-tenant sync: HQ hub, country nodes and dealer agents over HTTPS.",
        subcommands: [Demo.self, Hub.self, Node.self, Agent.self, Admin.self, OverlayCommand.self, GovernanceCommand.self, Contact.self, RecordCommand.self, Status.self,
                      Conflicts.self, Trace.self])
}

/// Options every long-running command shares.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func bootstrap() throws {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level '\(logLevel)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
