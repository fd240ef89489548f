"""The command line: parses, runs, and maps outcomes to exit codes. Nothing else.

Exit codes: 0 a report was produced; 1 an --expect'ed option is not feasible; 2 usage or
config error, or an --output or --textfile that cannot be written or a bad --push-gateway (found
before measuring); 3 internal error (run again with --traceback to see it), or the report or
--textfile could not be written after all; 4 the metrics could not be pushed to --push-gateway
(unreachable, or an HTTP error; the report and --textfile were written).
Heavy modules (the checks, rich, psutil) are imported inside the commands so that
`xcheck --help` and `xcheck version` start as fast as a bare typer app.
"""

from __future__ import annotations

import contextlib
import enum
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent import __version__

EXIT_OK, EXIT_EXPECTATION, EXIT_USAGE, EXIT_INTERNAL, EXIT_PUSH = 0, 1, 2, 3, 4

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Measure what decides an Azure cross-premises connection from this host: public IPv4, NAT "
    "and its RFC 5780 type, CGNAT; then a verdict per option (P2S, S2S, ExpressRoute EXP/NSP).",
)


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"
    markdown = "markdown"


# Command-line flags that set a config field: flag -> config field path (agent.config.FIELDS).
_FLAG_FIELDS = {
    "--stun": "stun",
    "--timeout": "timeout_seconds",
    "--ruleset": "ruleset",
    "--expect": "expect",
    "--bandwidth-mbps": "requirements.bandwidth_mbps",
    "--clients": "requirements.clients",
    "--private-only": "requirements.private_only",
    "--vpn-device": "requirements.vpn_device",
    "--colocation": "requirements.colocation",
    "--nsp-wan": "requirements.nsp_wan",
    "--iperf": "iperf",
    "--gateway": "gateway",
    "--gateway-fingerprint": "gateway_fingerprint",
    "--proxy": "proxy",
    "--throughput": "throughput",
    "--throughput-seconds": "throughput_seconds",
    "--streams": "streams",
    "--throughput-profile": "throughput_profile",
    "--listen": "daemon.listen",
    "--interval": "daemon.interval_seconds",
    "--throughput-interval": "daemon.throughput_interval_seconds",
    "--probe-target": "daemon.probe_targets",
    "--web-config": "daemon.web_config",
    "--log-format": "daemon.log_format",
    "--ipsec-config": "audit.ipsec_config",
    "--firewall": "audit.firewall",
    "--gateway-type": "audit.gateway_type",
    "--gateway-sku": "audit.gateway_sku",
    "--policy-based-selectors": "audit.policy_based_selectors",
    "--asn": "audit.asn",
    "--bgp-peer-address": "audit.bgp_peer_address",
    "--onprem-prefix": "audit.onprem_prefixes",
    "--vnet-prefix": "audit.vnet_prefixes",
    "--er-peering-subnet": "audit.expressroute_peering_subnets",
    "--plan": "audit.plan",
    "--routes-vpn-device": "audit.routes_vpn_device",
    "--fail-on": "audit.fail_on",
}


def _flags(values: dict) -> dict:
    """{flag: value} of a command's parameters (a parameter is named as its flag: --bandwidth-mbps, bandwidth_mbps)."""
    return {flag: values[flag[2:].replace("-", "_")] for flag in _FLAG_FIELDS if flag[2:].replace("-", "_") in values}


def _fail(message: str, code: int) -> typer.Exit:
    from agent.text import visible

    # An error may quote a peer or a file name: inert on the terminal, one line per problem.
    typer.echo("xcheck: " + "\n".join(visible(line) for line in message.split("\n")), err=True)
    return typer.Exit(code)


def _log_to_stderr(level: int, format: str) -> None:
    import logging

    from agent.text import inert_log_record

    logging.basicConfig(level=level, stream=sys.stderr, format=format)
    for handler in logging.getLogger().handlers:
        handler.addFilter(inert_log_record)  # log lines quote peers (the responder's clients, every check)


@app.command()
def version() -> None:
    """Print xcheck's version."""
    typer.echo(__version__)


# The flags `run` and `daemon` share: what to probe and what the site declares.
StunFlag = Annotated[Optional[list[str]], typer.Option("--stun", metavar="HOST[:PORT]", help="STUN server (repeatable; default port 3478). Default: a few public servers.")]
ConfigFlag = Annotated[Optional[Path], typer.Option("--config", metavar="FILE", help="TOML config file; flags override it.")]
TimeoutFlag = Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS", help="Time each check may take (default 3).")]
RulesetFlag = Annotated[Optional[str], typer.Option("--ruleset", help="Rule set: azure-current (default) or azure-2015 (the 2015 page, exactly).")]
ExpectFlag = Annotated[Optional[list[str]], typer.Option("--expect", metavar="OPTION", help="Exit 1 unless this option (p2s, s2s, expressroute_exp, expressroute_nsp) is feasible. Repeatable.")]
BandwidthMbpsFlag = Annotated[Optional[float], typer.Option("--bandwidth-mbps", help="Bandwidth the site needs, in Mbit/s.")]
ClientsFlag = Annotated[Optional[int], typer.Option("--clients", help="Number of client computers to connect.")]
PrivateOnlyFlag = Annotated[Optional[bool], typer.Option("--private-only/--internet-ok", help="Traffic must not cross the public Internet.")]
VpnDeviceFlag = Annotated[Optional[bool], typer.Option("--vpn-device/--no-vpn-device", help="A VPN device is (or is not) available at the site.")]
ColocationFlag = Annotated[Optional[bool], typer.Option("--colocation/--no-colocation", help="Present (or not) at an exchange provider's facility.")]
NspWanFlag = Annotated[Optional[bool], typer.Option("--nsp-wan/--no-nsp-wan", help="Has (or has not) an MPLS/VPLS WAN from a provider.")]
GatewayFlag = Annotated[Optional[list[str]], typer.Option("--gateway", metavar="HOST", help="VPN gateway (or xcheck responder) to probe: IKE, NAT-T, ESP, TLS/SSTP, health probe, path MTU. Repeatable.")]
GatewayFingerprintFlag = Annotated[Optional[str], typer.Option("--gateway-fingerprint", metavar="SHA256", help="Expected SHA-256 fingerprint of the gateway's TLS certificate.")]
ProxyFlag = Annotated[Optional[str], typer.Option("--proxy", metavar="http://HOST:PORT", help="CONNECT proxy for TLS probes (default: HTTPS_PROXY).")]
IperfFlag = Annotated[Optional[str], typer.Option("--iperf", metavar="HOST[:PORT]", help="Far end running iperf3 -s or xcheck responder (default port 5201): throughput and latency.")]
ThroughputFlag = Annotated[Optional[bool], typer.Option("--throughput/--no-throughput", help="Measure throughput to --iperf (default) or only latency.")]
ThroughputSecondsFlag = Annotated[Optional[float], typer.Option("--throughput-seconds", metavar="SECONDS", help="Length of each load stage (default 10).")]
StreamsFlag = Annotated[Optional[int], typer.Option("--streams", help="Parallel TCP streams, 1-16 (default 4).")]
ThroughputProfileFlag = Annotated[Optional[str], typer.Option("--throughput-profile", help="default, or azurect: stages of 1, 6 and 16 streams as Microsoft's AzureCT.")]


@app.command()
def run(
    stun: StunFlag = None,
    config: ConfigFlag = None,
    timeout: TimeoutFlag = None,
    ruleset: RulesetFlag = None,
    expect: ExpectFlag = None,
    bandwidth_mbps: BandwidthMbpsFlag = None,
    clients: ClientsFlag = None,
    private_only: PrivateOnlyFlag = None,
    vpn_device: VpnDeviceFlag = None,
    colocation: ColocationFlag = None,
    nsp_wan: NspWanFlag = None,
    gateway: GatewayFlag = None,
    gateway_fingerprint: GatewayFingerprintFlag = None,
    proxy: ProxyFlag = None,
    iperf: IperfFlag = None,
    throughput: ThroughputFlag = None,
    throughput_seconds: ThroughputSecondsFlag = None,
    streams: StreamsFlag = None,
    throughput_profile: ThroughputProfileFlag = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text (default), json or markdown.")] = OutputFormat.text,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write the report here instead of standard output: a file is replaced atomically, a device or FIFO written as it is.")] = None,
    redact: Annotated[bool, typer.Option("--redact", help="Replace addresses, host and user names with stable pseudonyms.")] = False,
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the Python traceback of an internal error.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each check does to standard error.")] = False,
    push_gateway: Annotated[Optional[str], typer.Option("--push-gateway", metavar="URL", help="After the report, push its metrics to this Prometheus pushgateway (an http or https URL; a user and password in it become basic auth), grouped by job and instance (this host's name).")] = None,
    push_job: Annotated[Optional[str], typer.Option("--push-job", metavar="NAME", help="The job --push-gateway groups the metrics under (default xcheck).")] = None,
    textfile: Annotated[Optional[Path], typer.Option("--textfile", metavar="FILE", help="Also write the metrics for node_exporter's textfile collector (a .prom file in its directory), atomically.")] = None,
) -> None:
    """Measure this host's connectivity and give a verdict for each Azure cross-premises option."""
    if verbose:
        import logging

        _log_to_stderr(logging.DEBUG, "%(name)s: %(message)s")
    flags = _flags(locals())
    try:
        code = _run(config, flags, output_format, output, redact, push_gateway=push_gateway, push_job=push_job,
                    textfile=textfile)
    except typer.Exit:
        raise
    except Exception as exc:
        if traceback:
            raise
        raise _fail(f"internal error: {type(exc).__name__}: {exc}. Run again with --traceback for details.",
                    EXIT_INTERNAL) from None
    raise typer.Exit(code)


def _load_settings(config: Path | None, flags: dict):
    """Settings from the environment, the config file and the flags given (ConfigError lists every problem)."""
    from agent.config import build_settings, from_environment, load_file, parse_values

    given = {_FLAG_FIELDS[flag]: value for flag, value in flags.items() if value not in (None, [])}
    labels = {field: flag for flag, field in _FLAG_FIELDS.items()}
    from_file = load_file(config) if config else {}
    from_flags = parse_values(given, "command line", labels)
    # HTTPS_PROXY counts only for the TLS probes of gateways, and only where no proxy was set:
    # a bad one must not block a good --proxy, nor a run that would never use it.
    uses_env_proxy = ("gateway" in from_file or "gateway" in from_flags) \
        and "proxy" not in from_file and "proxy" not in from_flags
    from_env = from_environment() if uses_env_proxy else {}
    return build_settings(from_env, from_file, from_flags)


def _run(config: Path | None, flags: dict, output_format: OutputFormat, output: Path | None, redact: bool, *,
         push_gateway: str | None = None, push_job: str | None = None, textfile: Path | None = None) -> int:
    import asyncio

    from agent.assessment import assess
    from agent.config import ConfigError
    from agent.output import ReportWriteError, check_output, write_report
    from agent.render import RENDERERS
    from agent.report import build_report
    from agent.report import redact as redact_report

    try:
        settings = _load_settings(config, flags)
    except ConfigError as exc:
        raise _fail("bad settings:\n  " + "\n  ".join(exc.lines()), EXIT_USAGE) from None
    for written in filter(None, (output, textfile)):
        try:  # now, not after a throughput run of minutes
            check_output(written)
        except ReportWriteError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
    pushing = _push_target(push_gateway, push_job)

    with _progress(output_format is OutputFormat.text and output is None) as progress:
        assessment = asyncio.run(assess(settings, progress))
    report = build_report(assessment)
    if redact:
        report = redact_report(report)
    render = RENDERERS[output_format.value]
    if output_format is OutputFormat.text:
        text = render(report, color=output is None and sys.stdout.isatty())
    else:
        text = render(report)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            write_report(output, text)
        except ReportWriteError as exc:
            raise _fail(str(exc), EXIT_INTERNAL) from None
        typer.echo(f"xcheck: report written to {output}", err=True)
    _export_metrics(assessment, textfile, pushing)

    unmet = [o for o in settings.expect if assessment.options[o]["verdict"] != "feasible"]
    if unmet:
        verdicts = ", ".join(f"{o} is {assessment.options[o]['verdict']}" for o in unmet)
        typer.echo(f"xcheck: expectation not met: {verdicts}", err=True)
        return EXIT_EXPECTATION
    return EXIT_OK


DEFAULT_PUSH_JOB = "xcheck"


def _push_target(push_gateway: str | None, push_job: str | None):
    """(the pushgateway, the job) of --push-gateway and --push-job, judged before measuring; None when not asked."""
    if push_gateway is None:
        if push_job is not None:
            raise _fail("--push-job: needs --push-gateway", EXIT_USAGE)
        return None
    from agent.metrics import PushGateway, check_job

    try:
        gateway = PushGateway.parse(push_gateway)
    except ValueError as exc:
        raise _fail(f"--push-gateway: {exc}", EXIT_USAGE) from None
    try:
        return gateway, check_job(push_job if push_job is not None else DEFAULT_PUSH_JOB)
    except ValueError as exc:
        raise _fail(f"--push-job: {exc}", EXIT_USAGE) from None


def _export_metrics(assessment, textfile: Path | None, pushing) -> None:
    """--textfile, then --push-gateway: each is tried even when the other failed, then the first
    failure sets the exit code (3 for the file, as for the report; 4 for the push)."""
    if textfile is None and pushing is None:
        return
    from agent.metrics import PushError, push, write_textfile
    from agent.output import ReportWriteError

    failures = []
    if textfile is not None:
        try:
            write_textfile(textfile, assessment)
            typer.echo(f"xcheck: metrics written to {textfile}", err=True)
        except ReportWriteError as exc:
            failures.append(_fail(str(exc), EXIT_INTERNAL))
    if pushing is not None:
        gateway, job = pushing
        try:
            push(gateway, job, assessment)
            typer.echo(f"xcheck: metrics pushed to {gateway} (job {job})", err=True)
        except PushError as exc:
            failures.append(_fail(str(exc), EXIT_PUSH))
    if failures:
        raise failures[0]


@contextlib.contextmanager
def _progress(enabled: bool):
    """A live line on the terminal while checks run (a bar for long work); nothing when either
    output is piped: `xcheck run | less` must not draw over the pager."""
    if not enabled or not (sys.stdout.isatty() and sys.stderr.isatty()):
        yield lambda check, fraction, text: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), console=Console(stderr=True),
                  transient=True) as bar:
        task = bar.add_task("xcheck: measuring", total=None)

        def show(check: str, fraction: float | None, text: str) -> None:
            bar.update(task, description=f"{check}: {text}", total=1.0 if fraction is not None else None,
                       completed=fraction or 0.0)

        yield show


@app.command()
def responder(
    listen: Annotated[str, typer.Option("--listen", metavar="ADDRESS", help="Address to listen on.")] = "0.0.0.0",
    alternate: Annotated[Optional[str], typer.Option("--alternate", metavar="ADDRESS", help="A second address of this host: STUN then answers RFC 5780 NAT behaviour discovery (ports STUN and STUN+1).")] = None,
    stun_port: Annotated[int, typer.Option("--stun-port", min=1, max=65535, help="UDP port for STUN round trips.")] = 3478,
    iperf_port: Annotated[int, typer.Option("--iperf-port", min=1, max=65535, help="TCP port for the iperf3 protocol.")] = 5201,
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", metavar="PEM", help="Certificate for TLS/SSTP (default: a new self-signed one).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", metavar="PEM", help="Key of --tls-cert.")] = None,
    max_test_seconds: Annotated[int, typer.Option("--max-test-seconds", metavar="SECONDS", min=1, max=86400, help="Longest iperf3 test taken, omitted warm-up included (xcheck run's stage is --throughput-seconds + 1); longer ones are refused, so no client holds the one test slot for long.")] = 60,
) -> None:
    """Be the far end: run this on a VM in the virtual network, then `xcheck run --iperf VM`."""
    import asyncio
    import logging
    import signal

    from agent.responder.serve import serve

    problem = _responder_addresses_problem(listen, alternate)
    if problem:
        raise _fail(problem, EXIT_USAGE)
    _log_to_stderr(logging.INFO, "xcheck responder: %(message)s")

    async def until_signalled() -> None:
        # The process's signals are the entry point's to take, not the server's (tests embed it).
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(listen, stun_port, iperf_port, cert=tls_cert, key=tls_key, alternate=alternate,
                    max_test_seconds=max_test_seconds, stop=stop)

    try:
        asyncio.run(until_signalled())
    except OSError as exc:
        raise _fail(f"cannot listen on {listen}: {exc.strerror or exc}", EXIT_INTERNAL) from None


@app.command()
def audit(
    ipsec_config: Annotated[Optional[list[Path]], typer.Option("--ipsec-config", metavar="FILE", help="swanctl.conf, strongSwan or Libreswan ipsec.conf to audit (repeatable; default: this host's /etc/swanctl/swanctl.conf and /etc/ipsec.conf).")] = None,
    firewall: Annotated[Optional[list[Path]], typer.Option("--firewall", metavar="FILE", help="`nft -j list ruleset` or `iptables-save` output to audit (repeatable; default: this host's, which needs root).")] = None,
    config: ConfigFlag = None,
    ruleset: RulesetFlag = None,
    gateway: Annotated[Optional[list[str]], typer.Option("--gateway", metavar="HOST", help="The Azure VPN gateway's public address (repeatable; default: the remote addresses of the IPsec connections read).")] = None,
    routes_vpn_device: Annotated[Optional[bool], typer.Option("--routes-vpn-device/--no-routes-vpn-device", help="This host routes for the VPN device behind it: the firewall's FORWARD chains and IPv4 forwarding are judged too.")] = None,
    gateway_type: Annotated[Optional[str], typer.Option("--gateway-type", help="The Azure VPN gateway's type: route-based or policy-based.")] = None,
    gateway_sku: Annotated[Optional[str], typer.Option("--gateway-sku", help="Its SKU: Basic, VpnGw1 ... VpnGw5.")] = None,
    policy_based_selectors: Annotated[Optional[bool], typer.Option("--policy-based-selectors/--any-to-any-selectors", help="The Azure connection uses UsePolicyBasedTrafficSelectors (or not).")] = None,
    asn: Annotated[Optional[int], typer.Option("--asn", help="The site's BGP ASN (default: read from FRR or BIRD).")] = None,
    bgp_peer_address: Annotated[Optional[str], typer.Option("--bgp-peer-address", metavar="ADDRESS", help="The site's BGP peer address, as entered in the local network gateway.")] = None,
    onprem_prefix: Annotated[Optional[list[str]], typer.Option("--onprem-prefix", metavar="PREFIX", help="An on-premises address prefix (repeatable).")] = None,
    vnet_prefix: Annotated[Optional[list[str]], typer.Option("--vnet-prefix", metavar="PREFIX", help="A virtual network address prefix (repeatable).")] = None,
    er_peering_subnet: Annotated[Optional[list[str]], typer.Option("--er-peering-subnet", metavar="PREFIX", help="An ExpressRoute peering subnet: a /29, or two /30s (repeatable).")] = None,
    plan: Annotated[Optional[list[str]], typer.Option("--plan", metavar="OPTIONS", help="The options planned together: p2s,s2s,expressroute (comma-separated or repeated).")] = None,
    fail_on: Annotated[Optional[str], typer.Option("--fail-on", help="Exit 1 when a finding is this severe or worse: warning or error.")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="text (default), json or markdown.")] = OutputFormat.text,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write the findings here instead of standard output (as `run --output`).")] = None,
    traceback: Annotated[bool, typer.Option("--traceback", help="Show the Python traceback of an internal error.")] = False,
) -> None:
    """Audit this site's own side of an Azure connection: IPsec, firewall, MSS, BGP and address plan."""
    if plan:
        plan = [part.strip() for entry in plan for part in entry.split(",") if part.strip()]
    flags = _flags({**locals(), "ipsec_config": [str(p) for p in ipsec_config or []] or None,
                    "firewall": [str(p) for p in firewall or []] or None})
    try:
        code = _audit(config, flags, output_format, output)
    except typer.Exit:
        raise
    except Exception as exc:
        if traceback:
            raise
        raise _fail(f"internal error: {type(exc).__name__}: {exc}. Run again with --traceback for details.",
                    EXIT_INTERNAL) from None
    raise typer.Exit(code)


def _input_problem(path: Path) -> str | None:
    """Why a named input file cannot be read at all (None: it can be opened; what is in it is the
    readers' to judge)."""
    import os
    import stat

    try:
        found = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISREG(found.st_mode):
        return "not a regular file (a FIFO or device would be read without end; save the listing to a file)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def _audit(config: Path | None, flags: dict, output_format: OutputFormat, output: Path | None) -> int:
    from datetime import datetime, timezone

    from agent.audit.run import SEVERITY_ORDER, audit as run_audit
    from agent.config import ConfigError
    from agent.output import ReportWriteError, check_output, write_report
    from agent.render import AUDIT_RENDERERS
    from agent.report import build_audit_document
    from agent.verdicts import load_ruleset

    try:
        settings = _load_settings(config, flags)
    except ConfigError as exc:
        raise _fail("bad settings:\n  " + "\n  ".join(exc.lines()), EXIT_USAGE) from None
    if output is not None:
        try:
            check_output(output)
        except ReportWriteError as exc:
            raise _fail(str(exc), EXIT_USAGE) from None
    for path in (*settings.audit.ipsec_config, *settings.audit.firewall):
        problem = _input_problem(path)
        if problem:  # a typo must not pass a CI gate as "nothing found"
            raise _fail(f"cannot audit {path}: {problem}", EXIT_USAGE)
    started = datetime.now(timezone.utc)
    ruleset = load_ruleset(settings.ruleset)
    found = run_audit(settings, ruleset)
    document = build_audit_document(found, ruleset.name, started)
    render = AUDIT_RENDERERS[output_format.value]
    text = render(document, color=output is None and sys.stdout.isatty()) if output_format is OutputFormat.text \
        else render(document)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            write_report(output, text)
        except ReportWriteError as exc:
            raise _fail(str(exc), EXIT_INTERNAL) from None
        typer.echo(f"xcheck: findings written to {output}", err=True)
    threshold = settings.audit.fail_on
    worst = found.worst()
    if threshold and worst is not None and SEVERITY_ORDER.index(worst) <= SEVERITY_ORDER.index(threshold):
        typer.echo(f"xcheck: a finding is {worst} (--fail-on {threshold})", err=True)
        return EXIT_EXPECTATION
    return EXIT_OK


@app.command()
def daemon(
    stun: StunFlag = None,
    config: ConfigFlag = None,
    timeout: TimeoutFlag = None,
    ruleset: RulesetFlag = None,
    bandwidth_mbps: BandwidthMbpsFlag = None,
    clients: ClientsFlag = None,
    private_only: PrivateOnlyFlag = None,
    vpn_device: VpnDeviceFlag = None,
    colocation: ColocationFlag = None,
    nsp_wan: NspWanFlag = None,
    gateway: GatewayFlag = None,
    gateway_fingerprint: GatewayFingerprintFlag = None,
    proxy: ProxyFlag = None,
    iperf: IperfFlag = None,
    throughput_seconds: ThroughputSecondsFlag = None,
    streams: StreamsFlag = None,
    throughput_profile: ThroughputProfileFlag = None,
    listen: Annotated[Optional[str], typer.Option("--listen", metavar="ADDRESS:PORT", help="Where to serve /metrics, /probe, /report, /healthz and / (default 127.0.0.1:9478).")] = None,
    interval: Annotated[Optional[float], typer.Option("--interval", metavar="SECONDS", help="Seconds between two runs of the quick checks, +-10% jitter (default 60).")] = None,
    throughput_interval: Annotated[Optional[float], typer.Option("--throughput-interval", metavar="SECONDS", help="Seconds between two throughput stages to --iperf (default: never; at least 300).")] = None,
    probe_target: Annotated[Optional[list[str]], typer.Option("--probe-target", metavar="HOST", help="A host /probe may probe besides the configured targets. Repeatable.")] = None,
    web_config: Annotated[Optional[str], typer.Option("--web-config", metavar="FILE", help="TLS and basic auth, in the exporter-toolkit web config format Prometheus exporters read.")] = None,
    log_format: Annotated[Optional[str], typer.Option("--log-format", help="logfmt (default) or json: one line per event on standard error.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what each check does.")] = False,
) -> None:
    """Run the checks on a schedule and serve their latest results as Prometheus metrics."""
    import asyncio
    import logging
    import os
    import signal

    from agent.config import ConfigError
    from agent.daemon import logs
    from agent.daemon.service import Daemon

    flags = _flags(locals())
    try:
        settings = _load_settings(config, flags)
    except ConfigError as exc:
        raise _fail("bad settings:\n  " + "\n  ".join(exc.lines()), EXIT_USAGE) from None
    logs.configure(settings.daemon.log_format, logging.DEBUG if verbose else logging.INFO)
    try:
        service = Daemon(lambda: _load_settings(config, flags))
    except (ConfigError, ValueError) as exc:  # the web config
        raise _fail(f"bad settings:\n  {exc}", EXIT_USAGE) from None

    async def until_signalled() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await service.serve(stop, reload)

    try:
        asyncio.new_event_loop().run_until_complete(until_signalled())
    except OSError as exc:
        host, port = settings.daemon.listen
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", EXIT_INTERNAL) from None
    # Stopped: work still in a thread (an iperf3 stage, a slow `nft`) is not waited for, as
    # asyncio.run and the interpreter's exit would: SIGTERM means within 5 s, and the kernel closes
    # its sockets.
    logging.shutdown()
    os._exit(EXIT_OK)


def _responder_addresses_problem(listen: str, alternate: str | None) -> str | None:
    """xcheck run measures IPv4 paths, so the far end listens on IPv4. RFC 5780 needs the primary
    address named: its answers carry it (RESPONSE-ORIGIN), and 0.0.0.0 would also take the
    alternate's port."""
    import ipaddress

    for flag, value in (("--listen", listen), ("--alternate", alternate)):
        if value is None:
            continue
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            return f"{flag}: expected an IPv4 address of this host, got {value!r}"
    if alternate is not None and listen == "0.0.0.0":
        return "--alternate needs --listen with this host's primary address (not 0.0.0.0)"
    if alternate is not None and alternate == listen:
        return "--alternate must be another address than --listen"
    return None


def main() -> None:
    app()
