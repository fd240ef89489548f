"""A lying STUN server, and a listener that records what reaches a port: for tests/test_stun_hostile.py.

    python tests/hostile_stun_server.py serve IP:PORT [--other IP:PORT] [--mapped IP:PORT] [--also IP:PORT]...
    python tests/hostile_stun_server.py capture PORT...

`serve` answers every Binding request on IP:PORT (and on each --also address) with the mapped and
other address it is told to say (by default the request's true source, and no OTHER-ADDRESS) and
prints one JSON line per request: {"to": where it arrived, "from": where it came from}.
`capture` listens on 0.0.0.0:PORT for each PORT and, when SIGTERM arrives, prints one JSON line
{PORT: [every source a datagram came from]} and exits. Both print "ready" once listening.
Run them in a lab namespace (`ip netns exec`): they answer whatever reaches them.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import selectors
import signal
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checks.protocols import stun  # noqa: E402

Address = tuple[str, int]


def lying_answer(data: bytes, source: Address, local: Address, *, other: stun.TransportAddress | None = None,
                 mapped: stun.TransportAddress | None = None) -> bytes | None:
    """A well-formed Binding success answer that says what it is told; None to anything but a Binding request."""
    try:
        request = stun.parse_message(data)
    except stun.StunParseError:
        return None
    if (request.method, request.message_class) != (stun.BINDING, stun.MessageClass.REQUEST):
        return None
    tid = request.transaction_id
    seen = mapped or stun.TransportAddress(ipaddress.ip_address(source[0]), source[1])
    origin = stun.TransportAddress(ipaddress.ip_address(local[0]), local[1])
    attributes = [(stun.Attribute.XOR_MAPPED_ADDRESS, stun.encode_address(seen, xor_transaction_id=tid)),
                  (stun.Attribute.RESPONSE_ORIGIN, stun.encode_address(origin))]
    if other is not None:
        attributes.append((stun.Attribute.OTHER_ADDRESS, stun.encode_address(other)))
    return stun.encode_message(stun.BINDING, stun.MessageClass.SUCCESS_RESPONSE, tid, attributes)


def _bind(address: Address) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(address)
    return sock


def serve(listen: list[Address], other: stun.TransportAddress | None, mapped: stun.TransportAddress | None) -> None:
    selector = selectors.DefaultSelector()
    for address in listen:
        selector.register(_bind(address), selectors.EVENT_READ, address)
    print("ready", flush=True)
    while True:  # until SIGTERM
        for key, _ in selector.select():
            data, source = key.fileobj.recvfrom(65535)
            print(json.dumps({"to": "%s:%d" % key.data, "from": "%s:%d" % source}), flush=True)
            answer = lying_answer(data, source, key.data, other=other, mapped=mapped)
            if answer is not None:
                key.fileobj.sendto(answer, source)


def capture(ports: list[int]) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    sockets = {port: _bind(("0.0.0.0", port)) for port in ports}
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})
    received: dict[int, list[str]] = {}
    for port, sock in sockets.items():
        sock.setblocking(False)
        received[port] = []
        while True:
            try:
                _, source = sock.recvfrom(65535)
            except BlockingIOError:
                break
            received[port].append("%s:%d" % source)
    print(json.dumps(received), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve")
    serving.add_argument("listen")
    serving.add_argument("--other")
    serving.add_argument("--mapped")
    serving.add_argument("--also", action="append", default=[])
    capturing = commands.add_parser("capture")
    capturing.add_argument("ports", nargs="+", type=int)
    args = parser.parse_args()
    if args.command == "capture":
        capture(args.ports)
        return
    listen = [(str(a.ip), a.port) for a in map(stun.TransportAddress.parse, [args.listen, *args.also])]
    other = stun.TransportAddress.parse(args.other) if args.other else None
    mapped = stun.TransportAddress.parse(args.mapped) if args.mapped else None
    serve(listen, other, mapped)


if __name__ == "__main__":
    main()
