import Logging
import NIOCore

/// The first handler of every accepted connection: asks the ``ConnectionLimiter`` when the
/// connection is set up, closes a refused one as soon as it is active (before TLS sees a
/// byte), and gives an admitted one's place back when the channel closes.
///
/// It also stops reading a connection on ``StopReading`` (``UnreadBodyMiddleware``, before it
/// closes one whose body it left unread): TLS waits up to its shutdown timeout for the
/// client's close_notify, and reading meanwhile took in and decrypted 500 MB in that second.
final class ConnectionLimitHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny

    /// Read nothing more from this connection: it is being closed.
    struct StopReading: Sendable {}
    private var stopped = false

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
        // A refused or stopped connection's bytes go nowhere: it is closing.
        guard refusal == nil, !stopped else { return }
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        guard refusal == nil, !stopped else { return }
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is StopReading {
            stopped = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        if admitted {
            admitted = false
            limiter.release(address)
        }
    }
}
