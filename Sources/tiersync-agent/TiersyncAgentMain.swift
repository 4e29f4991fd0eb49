import ArgumentParser
import TiersyncAgentCLI

/// The node agent alone: `tiersync agent run` without the hub, country node, PKI and admin
/// code in the binary, so an idle dealer agent maps far less. Same options, same behaviour.
@main
struct TiersyncAgentMain: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tiersync-agent",
        abstract: AgentRunCommand.configuration.abstract,
        discussion: AgentRunCommand.configuration.discussion)

    @OptionGroup var command: AgentRunCommand

    func run() async throws {
        try await command.run()
    }
}
