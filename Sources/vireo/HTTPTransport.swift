import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// How the CLI trusts vireod's TLS certificate.
enum ServerTrust: Sendable, Equatable {
    /// The system's CA store with host-name checks (a certificate from a real CA).
    case system
    /// Exactly the certificate with this SHA-256 fingerprint (`AA:BB:…`, as vireod logs it and
    /// `openssl x509 -noout -fingerprint -sha256` prints it): the way to trust a self-signed node.
    case fingerprint(String)
    /// Any certificate (`--insecure`): the connection is encrypted but not authenticated.
    case insecure

    /// Normalises a fingerprint to uppercase hex with colons; nil when it is not 32 bytes of hex.
    static func normalizedFingerprint(_ text: String) -> String? {
        let hex = text.uppercased().filter { $0 != ":" && $0 != " " }
        guard hex.count == 64, hex.allSatisfy(\.isHexDigit) else { return nil }
        return stride(from: 0, to: 64, by: 2).map { offset -> String in
            let start = hex.index(hex.startIndex, offsetBy: offset)
            return String(hex[start..<hex.index(start, offsetBy: 2)])
        }.joined(separator: ":")
    }
}

struct HTTPReply {
    var status: Int
    var body: Data
}

struct TransportError: Error, CustomStringConvertible {
    var description: String
}

/// One HTTP/1.1 request per connection over SwiftNIO, with TLS through NIOSSL when the URL is
/// https. Foundation's URLSession on Linux cannot pin a certificate, hence this small transport.
enum HTTPTransport {
    static func send(method: String, url: URL, headers: [(String, String)], body: Data?, trust: ServerTrust,
                     timeout: TimeAmount = .seconds(60)) throws -> HTTPReply {
        guard let scheme = url.scheme, scheme == "http" || scheme == "https", let host = url.host else {
            throw TransportError(description: "unsupported URL \(url) (expected http:// or https://)")
        }
        let port = url.port ?? (scheme == "https" ? 443 : 80)
        var target = url.path.isEmpty ? "/" : url.path
        if let query = url.query { target += "?" + query }

        var context: NIOSSLContext?
        if scheme == "https" {
            var configuration = TLSConfiguration.makeClientConfiguration()
            switch trust {
            case .insecure: configuration.certificateVerification = .none
            // The pin replaces chain and name checks: the certificate is the identity.
            case .fingerprint: configuration.certificateVerification = .noHostnameVerification
            case .system: break
            }
            context = try NIOSSLContext(configuration: configuration)
        }
        let sslContext = context
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: HTTPReply.self)
        let bootstrap = ClientBootstrap(group: group)
            .connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        let sniName = host.contains(":") || host.allSatisfy({ $0.isNumber || $0 == "." }) ? nil : host
                        let handler: NIOSSLClientHandler
                        if case .fingerprint(let expected) = trust {
                            handler = try NIOSSLClientHandler(context: sslContext, serverHostname: sniName) { chain, verdict in
                                let actual = (try? chain.first?.toDERBytes()).map { der in
                                    SHA256.hash(data: der).map { String(format: "%02X", $0) }.joined(separator: ":")
                                }
                                verdict.succeed(actual == expected ? .certificateVerified : .failed)
                            }
                        } else {
                            handler = try NIOSSLClientHandler(context: sslContext, serverHostname: sniName)
                        }
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
        let channel: Channel
        do {
            channel = try bootstrap.connect(host: host, port: port).wait()
        } catch {
            promise.fail(error)  // a promise must be completed before it goes (NIO traps on a leaked one)
            throw TransportError(description: "cannot connect to \(host):\(port): \(error)")
        }
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: target)
        head.headers.add(name: "Host", value: url.port.map { "\(host):\($0)" } ?? host)
        head.headers.add(name: "Connection", value: "close")
        head.headers.add(name: "Content-Length", value: String(body?.count ?? 0))
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body, !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(TransportError(description: "no reply from \(host):\(port) within \(timeout.nanoseconds / 1_000_000_000) s"))
            channel.close(promise: nil)
        }
        defer { timer.cancel(); channel.close(promise: nil) }
        do {
            return try promise.futureResult.wait()
        } catch let error as NIOSSLError {
            throw TransportError(description: tlsAdvice(error, trust: trust))
        } catch let error as BoringSSLError {
            throw TransportError(description: tlsAdvice(error, trust: trust))
        }
    }

    static func tlsAdvice(_ error: Error, trust: ServerTrust) -> String {
        switch trust {
        case .fingerprint: "TLS: the server's certificate does not have the expected fingerprint (\(error))"
        case .system, .insecure: """
            TLS: cannot verify the server's certificate (\(error)). vireod makes a self-signed certificate: pass \
            --fingerprint with the SHA-256 fingerprint vireod logs at start (or `openssl x509 -noout -fingerprint \
            -sha256 -in DATA_DIR/pki/vireod.pem`), or --insecure to skip the check
            """
        }
    }
}

/// Collects one response and completes the promise when it ends or the connection fails.
private final class ResponseCollector: ChannelInboundHandler, @unchecked Sendable {
    // SAFETY (@unchecked): used only on its channel's event loop.
    typealias InboundIn = HTTPClientResponsePart
    private let promise: EventLoopPromise<HTTPReply>
    private var status = 0
    private var body = Data()

    init(promise: EventLoopPromise<HTTPReply>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(let buffer): body.append(contentsOf: buffer.readableBytesView)
        case .end:
            promise.succeed(HTTPReply(status: status, body: body))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(TransportError(description: "the server closed the connection before replying"))
    }
}
