import Logging
import NIOCore

/// The first handler of every accepted connection: asks the ``ConnectionLimiter`` when the
/// connection is set up, closes a refused one as soon as it is active (before TLS sees a
/// byte), and gives an admitted one's place back when the channel closes.
final class ConnectionLimitHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let limiter: ConnectionLimiter
    private let onRefused: @Sendable (ConnectionLimiter.Refusal, String?) -> Void
    private var address: String?
    private var admitted = false
    private var refusal: ConnectionLimiter.Refusal?

    init(limiter: ConnectionLimiter, onRefused: @escaping @Sendable (ConnectionLimiter.Refusal, String?) -> Void) {
        self.limiter = limiter
        self.onRefused = onRefused
    }

    func handlerAdded(context: ChannelHandlerContext) {
        address = context.channel.remoteAddress?.ipAddress
        refusal = limiter.admit(address)
        admitted = refusal == nil
        if let refusal { onRefused(refusal, address) }
    }

    func channelActive(context: ChannelHandlerContext) {
        guard refusal == nil else {
            context.close(promise: nil)
            return
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A refused connection's bytes go nowhere: it is closing.
        guard refusal == nil else { return }
        context.fireChannelRead(data)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if admitted {
            admitted = false
            limiter.release(address)
        }
    }
}
