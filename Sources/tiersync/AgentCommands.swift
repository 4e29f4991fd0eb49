@_exported import TiersyncAgentCLI
import ArgumentParser
import Foundation
import Logging
import TiersyncAgent
import TiersyncCore
import TiersyncGovernance
import TiersyncStore

/// Where a node's store is and how it reaches its parent.
struct Agent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a node's sync agent.", subcommands: [AgentRunCommand.self])
}
