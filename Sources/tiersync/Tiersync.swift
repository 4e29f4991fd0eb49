import ArgumentParser
import Logging

@main
struct Tiersync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiersync",
        abstract: "Multi-tier, multi-tenant sync: HQ hub, country nodes and dealer agents over HTTPS.",
        subcommands: [Demo.self, Hub.self, Node.self, Agent.self, Admin.self, OverlayCommand.self, GovernanceCommand.self, Contact.self, RecordCommand.self, Generate.self, KPICommand.self, RulesCommand.self, Status.self,
                      Conflicts.self, Trace.self, Backup.self, Erase.self, Erasures.self, ConsentCommand.self])
}
