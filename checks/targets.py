"""What the user asked xcheck to probe, and how names become addresses.

`Endpoint` is a target as the user named it (checked here, the one place every host is judged),
`Targets` all of them with the settings the probes need, `Resolver` the run's IPv4 look-ups.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from checks.contract import Scope, Target

if TYPE_CHECKING:
    from checks.protocols.ike_suites import IkeOffer


# RFC 1035 2.3.4: a name is at most 255 octets on the wire, so 253 characters as text.
MAX_HOST_NAME_LENGTH = 253
_HOST_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # RFC 1123 2.1: letters, digits, hyphens
# The longest HOST[:PORT] there is: a full-length name and ':65535' (an IPv6 literal is shorter).
_MAX_ENDPOINT_LENGTH = MAX_HOST_NAME_LENGTH + len(":65535")


@dataclass(frozen=True)
class Endpoint:
    """A target as the user named it: a host name or IP literal and a port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str, default_port: int) -> Endpoint:
        """Parse HOST, HOST:PORT or [IPV6]:PORT; ValueError with a message on bad input."""
        text = text.strip()
        if len(text) > _MAX_ENDPOINT_LENGTH:  # say so without echoing it: it may be megabytes
            raise ValueError(f"{len(text)} characters is too long for HOST[:PORT] (a host name has at most "
                             f"{MAX_HOST_NAME_LENGTH})")
        host, port_text = text, None
        if text.startswith("["):
            close = text.find("]")
            if close < 0:
                raise ValueError(f"{text!r}: missing ']' after an IPv6 address")
            host, rest = text[1:close], text[close + 1 :]
            if rest and not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            if ":" not in host:
                raise ValueError(f"{text!r}: brackets are for an IPv6 address only")
            port_text = rest[1:] if rest else None
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        if not host:
            raise ValueError(f"{text!r}: empty host")
        try:
            host = cls.check_host(host)
        except ValueError as exc:
            raise ValueError(f"{text!r}: {exc}") from None
        if port_text is None:
            return cls(host, default_port)
        if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
            raise ValueError(f"{text!r}: port must be a number from 1 to 65535")
        return cls(host, int(port_text))

    @staticmethod
    def check_host(host: str) -> str:
        """`host` normalised if it is an IPv4 literal or an RFC 1123 host name; ValueError otherwise.

        The one place every target's host is judged (STUN servers, far end, gateways, proxy).
        Names are lower-cased, so one host is one string everywhere.
        """
        if len(host) > MAX_HOST_NAME_LENGTH:
            raise ValueError(f"a host name has at most {MAX_HOST_NAME_LENGTH} characters, this one {len(host)}")
        if ":" in host:
            try:
                address = ipaddress.IPv6Address(host)
            except ValueError:
                # One colon reaches here only where a port has no place (a gateway is a host).
                raise ValueError("a host without a port expected" if host.count(":") == 1
                                 else "not an IPv6 address") from None
            # Azure's VPN gateways, the seed's rules and every probe here are IPv4: an IPv6 target
            # could only ever fail to resolve, so it is refused with the reason now.
            raise ValueError(f"{address.compressed} is IPv6: xcheck measures IPv4 paths; give an IPv4 address "
                             "or a name with an A record")
        name = host.lower()
        labels = name.removesuffix(".").split(".")
        if not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError("not an IP address or a host name (labels of 1-63 letters, digits and hyphens, "
                             "not starting or ending with a hyphen, joined by dots)")
        # A name whose last label is a number, or that inet_aton reads as one ("127.1", "0x7f000001"),
        # is an address typed wrong: the system resolver would turn it into some other address.
        try:
            socket.inet_aton(name)
            numeric = True
        except OSError:
            numeric = labels[-1].isdigit()
        if numeric:
            try:
                return str(ipaddress.IPv4Address(host))
            except ValueError:
                raise ValueError("not an IPv4 address (four numbers 0-255, without leading zeros)") from None
        return name

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ThroughputPlan:
    """How to load the far end: one stage per entry of `streams`, each upload then download."""

    seconds: float = 10.0
    omit_seconds: float = 1.0  # TCP's slow start is not the path's rate
    streams: tuple[int, ...] = (4,)
    window_bytes: int | None = None

    def load_seconds(self) -> float:
        return len(self.streams) * 2 * (self.seconds + self.omit_seconds)


@dataclass(frozen=True)
class Targets:
    """Everything the user asked xcheck to probe. Later probes add their own fields."""

    stun: tuple[Endpoint, ...] = ()
    iperf: Endpoint | None = None  # an iperf3 server (or `xcheck responder`) at the far end
    throughput: ThroughputPlan | None = ThroughputPlan()  # None: --no-throughput
    # VPN gateways (an IP or a name each) or `xcheck responder`: IKE, NAT-T, ESP, TLS/SSTP, health probe, MTU.
    gateways: tuple[str, ...] = ()
    gateway_fingerprint: str | None = None  # SHA-256 of the gateway's certificate, hex, if the user knows it
    proxy: str | None = None  # http://HOST:PORT for CONNECT to port 443 (from --proxy or HTTPS_PROXY)
    ike_offer: IkeOffer | None = None  # the suites the IKE probes propose: the rule set's [ike] table

    def all(self) -> tuple[Endpoint, ...]:
        gateways = tuple(Endpoint(host, 500) for host in self.gateways)
        return self.stun + ((self.iperf,) if self.iperf else ()) + gateways

    def of_scope(self, scope: Scope) -> tuple[Target, ...]:
        """The targets a check of `scope` probes, in the order the user gave them."""
        if scope is Scope.HOST:
            return (Target(Scope.HOST, "host"),)
        if scope is Scope.STUN_SERVER:
            return tuple(Target(scope, str(endpoint), endpoint) for endpoint in self.stun)
        if scope is Scope.GATEWAY:
            return tuple(Target(scope, host, Endpoint(host, 500)) for host in self.gateways)
        return (Target(scope, str(self.iperf), self.iperf),) if self.iperf else ()


class Resolver:
    """IPv4 name resolution, cached for one run so that every check sees the same answer.

    xcheck measures IPv4 paths (Azure VPN gateways and the seed's rules are IPv4), so an
    IPv6-only target is a resolve failure with that said. Look-ups run in daemon threads:
    a resolver that hangs must neither hold a check past its deadline nor keep the
    process from exiting.
    """

    def __init__(self) -> None:
        self._cache: dict[str, asyncio.Future[str]] = {}

    async def resolve(self, host: str, timeout: float) -> str:
        """The first IPv4 address of host; OSError with a readable message when there is none."""
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            pass
        if host not in self._cache:
            self._cache[host] = _lookup_in_thread(host)
        try:
            return await asyncio.wait_for(asyncio.shield(self._cache[host]), timeout)
        except TimeoutError:
            raise OSError(f"looking up {host!r} took longer than {timeout:.3g} s") from None


def _lookup_in_thread(host: str) -> asyncio.Future[str]:
    loop = asyncio.get_running_loop()
    result: asyncio.Future[str] = loop.create_future()

    def settle(value: str | None, error: OSError | None) -> None:
        if result.done():
            return
        if error is None:
            result.set_result(value)
            return
        result.set_exception(error)
        result.exception()  # marked as seen: a look-up that no check waits for any more must not log

    def look_up() -> None:
        try:
            infos = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_DGRAM)
            outcome: tuple[str | None, OSError | None] = (infos[0][4][0], None)
        except (OSError, UnicodeError, ValueError) as exc:  # UnicodeError: a label IDNA refuses
            outcome = (None, OSError(f"cannot resolve {host!r} to an IPv4 address: {exc}"))
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the run ended while we were looking up

    threading.Thread(target=look_up, name=f"resolve {host}", daemon=True).start()
    return result
