import HummingbirdCore
import Logging
import NIOCore

/// A server child channel (HTTP/1, with or without TLS) whose connections are counted and
/// bounded by a ``ConnectionLimiter``: its ``ConnectionLimitHandler`` goes first in the
/// pipeline, ahead of TLS.
struct ConnectionLimitedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let limiter: ConnectionLimiter
    let onRefused: @Sendable (ConnectionLimiter.Refusal, String?) -> Void

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(ConnectionLimitHandler(limiter: limiter, onRefused: onRefused))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }.flatMapError { error in
            // A child whose setup failed is neither registered nor closed by the server:
            // closed here, which also gives its place in the limiter back.
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(error)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}
