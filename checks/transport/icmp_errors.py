"""ICMP errors as Linux reports them on a socket with IP_RECVERR (errqueue.h): shared by the
probes that must tell "port unreachable", "prohibited", "fragmentation needed" and silence apart."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass, field

from checks.contract import Reason
from checks.transport.addressing import source_address_toward

# Linux names Python 3.11 does not export (include/uapi/linux/in.h, errqueue.h).
IP_RECVERR = 11
SO_EE_ORIGIN_ICMP = 2
ICMP_DEST_UNREACH = 3
ICMP_PORT_UNREACH, ICMP_FRAG_NEEDED = 3, 4
ICMP_TIME_EXCEEDED = 11
# RFC 792 and RFC 1812 §5.2.7.1: the destination unreachable codes a probe may meet, as said in details.
UNREACHABLE_CODES = {0: "network unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
                     9: "network administratively prohibited", 10: "host administratively prohibited",
                     13: "communication administratively prohibited"}
MAX_IPV4_PACKET = 65535
_ERRQUEUE_CONTROL_BYTES = 512


@dataclass(frozen=True)
class IcmpError:
    """One entry of a socket's error queue (struct sock_extended_err and its offender)."""

    error_number: int  # what the kernel reports it as (EMSGSIZE, ECONNREFUSED, ...)
    origin: int  # SO_EE_ORIGIN_*
    icmp_type: int
    icmp_code: int
    info: int  # the next-hop MTU for "fragmentation needed" and for a local EMSGSIZE
    offender: str | None  # who sent the ICMP error
    quoted: bytes  # the start of our packet that the error refers to (payload, no IP header)
    # Where that packet was going (msg_name): on an unconnected socket, which of our flows was refused.
    destination: tuple[str, int] | None = None

    @classmethod
    def parse(cls, control: bytes, quoted: bytes, destination: tuple[str, int] | None = None) -> IcmpError:
        """ValueError when `control` is not a sock_extended_err."""
        if len(control) < 16:
            raise ValueError(f"sock_extended_err needs 16 bytes, got {len(control)}")
        err, origin, icmp_type, code, _pad, info, _data = struct.unpack_from("=IBBBBII", control)
        offender = None
        if len(control) >= 24 and struct.unpack_from("=H", control, 16)[0] == socket.AF_INET:
            offender = socket.inet_ntoa(control[20:24])
        return cls(err, origin, icmp_type, code, info, offender, quoted, destination)

    @property
    def from_icmp(self) -> bool:
        return self.origin == SO_EE_ORIGIN_ICMP


def read_error_queue(sock: socket.socket) -> list[IcmpError]:
    """Drain the socket's IP_RECVERR queue (non-blocking)."""
    errors = []
    while True:
        try:
            quoted, ancillary, _flags, address = sock.recvmsg(
                MAX_IPV4_PACKET, _ERRQUEUE_CONTROL_BYTES, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return errors
        destination = address[:2] if isinstance(address, tuple) else None
        for level, kind, control in ancillary:
            if (level, kind) == (socket.IPPROTO_IP, IP_RECVERR):
                try:
                    errors.append(IcmpError.parse(control, quoted, destination))
                except ValueError:
                    continue  # the kernel wrote something else: nothing to learn from it


def enable_error_queue(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def send_once_more_on_error(sock: socket.socket, packet: bytes,
                            destination: tuple[str, int] | None = None) -> OSError | None:
    """Send to `destination`, or to the connected peer without one; the error if it could not be sent.

    An ICMP error that arrived earlier fails the next send once (the kernel reports it there
    and clears it; with IP_RECVERR on an unconnected socket too, whatever destination it was
    about), so a failed send is tried again before its error counts.
    """
    error = None
    for _ in range(2):
        try:
            if destination is None:
                sock.send(packet)
            else:
                sock.sendto(packet, destination)
            return None
        except OSError as exc:
            error = exc
            if exc.errno == errno.EMSGSIZE:
                break  # larger than the local link allows: trying again will not help
    return error


@dataclass(frozen=True)
class IcmpReport:
    """An ICMP error about our packets, as evidence: the proof that something refused them."""

    icmp_type: int = field(metadata={"key": "type"})
    icmp_code: int = field(metadata={"key": "code"})
    offender: str | None = field(metadata={"key": "from"})  # the target itself, or a router or firewall on the way
    description: str
    # This host's own stack reporting its failure on the way out (a next hop that never answers
    # ARP, a local firewall's REJECT): no proof of anything beyond this host.
    from_this_host: bool = False

    @property
    def detail(self) -> str:
        said = (f"ICMP {self.description} (type {self.icmp_type}, code {self.icmp_code}) "
                f"from {self.offender or 'an unknown sender'}")
        return said + (", this host itself: its own stack refused (no neighbour answered, or a local filter)"
                       if self.from_this_host else "")


def _from_this_host(error: IcmpError) -> bool:
    """This host's stack said it, about a packet to someone else (the target may be this host)."""
    if error.offender is None:
        return True
    if error.destination is not None and error.offender == error.destination[0]:
        return False
    # The one address the kernel picks as the source toward itself is itself.
    return source_address_toward(error.offender, 0) == error.offender


def classify_icmp(error: IcmpError) -> tuple[Reason, IcmpReport] | None:
    """What an error-queue entry says about the target; None when it is no refusal (local, PMTU).
    An error this host's own stack reported is `network_error`: it proves nothing about the path."""
    if not error.from_icmp:
        return None
    if error.icmp_type == ICMP_DEST_UNREACH:
        if error.icmp_code == ICMP_FRAG_NEEDED:
            return None
        description = UNREACHABLE_CODES.get(error.icmp_code, f"destination unreachable, code {error.icmp_code}")
        result = Reason.PORT_UNREACHABLE if error.icmp_code == ICMP_PORT_UNREACH else Reason.PROHIBITED
    elif error.icmp_type == ICMP_TIME_EXCEEDED:
        description, result = "time exceeded (a routing loop or a too-short TTL)", Reason.PROHIBITED
    else:
        return None
    local = _from_this_host(error)
    return (Reason.NETWORK_ERROR if local else result,
            IcmpReport(error.icmp_type, error.icmp_code, error.offender, description, local))
