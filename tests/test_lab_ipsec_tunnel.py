"""A real IPsec tunnel between a lab site and a lab "Azure" gateway: the rekey Azure initiates, and
the rule that says beforehand which site configuration it breaks (ipsec.rekey-proposal).

The gateway is charon (strongSwan 5.9.8) in the lab's cloud namespace at 203.0.113.10, configured
from azure-current's [audit.route_based]: IKEv2, phase 1 offers Azure's defaults (DH group 2), and
its CHILD_SA proposals are the offers Azure makes when it initiates a rekey. A strongSwan child has
one proposal list for both roles; as responder charon leaves the DH group aside for the first
CHILD_SA (keyed from the IKE SA), so the site's first CHILD_SA is chosen from the same list. Azure as
responder accepts more (its 26 offers), which matters only to a site proposing none of these six,
not to the two sites here. The site is charon in the onprem namespace at 198.51.100.2, loaded with
tests/fixtures/ipsec_rules/site-*.conf (its README), the files `judge_ipsec` is shown judging.

ESP runs in userland (strongSwan's kernel-libipsec plugin, a TUN device in each namespace): a lab
kernel need not carry ESP (one without CONFIG_INET_ESP refuses every SA charon installs), and the
IKE exchanges under test are the same. Debian ships the plugin in libcharon-extra-plugins, whose
other plugins would load into every charon on the host, so it is unpacked apart (`apt-get download
libcharon-extra-plugins`, `dpkg -x` into XCHECK_STRONGSWAN_EXTRA, /opt/xcheck/strongswan-extra by
default) and preloaded into these two charons only. libipsec carries ESP in UDP and so makes each
charon see its peer "behind NAT"; no NAT is on this path.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import needs_lab
from lab import Lab
from test_ipsec_rules import LAB_CONTEXT, LAB_SITES, parameters_of

from agent.audit.findings import Severity
from agent.audit.ipsec.rules import judge_ipsec, strongswan_keywords
from agent.audit.ipsec.swanctl import read_swanctl
from agent.audit.parameters import ROUTE_BASED, AzureParameters

CHARON = "/usr/lib/ipsec/charon"
PLUGIN = "usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"
EXTRA = Path(os.environ.get("XCHECK_STRONGSWAN_EXTRA", "/opt/xcheck/strongswan-extra"))
LIBIPSEC = next((path for path in (Path("/") / PLUGIN, EXTRA / PLUGIN) if path.exists()), None)
_MISSING = [tool for tool in (CHARON, "swanctl") if shutil.which(tool) is None] + (
    [] if LIBIPSEC else [f"strongSwan's kernel-libipsec plugin (/{PLUGIN}, or unpacked into {EXTRA})"])
# CI installs them (.ci/run): there a missing one must fail the run, not skip it.
pytestmark = [pytest.mark.lab, needs_lab, pytest.mark.skipif(
    bool(_MISSING) and not os.environ.get("CI"),
    reason=f"needs {', '.join(_MISSING)} (Debian: apt-get install -y strongswan-charon strongswan-swanctl; "
           f"apt-get download libcharon-extra-plugins && dpkg -x libcharon-extra-plugins_*.deb {EXTRA})")]

SITE, GATEWAY = "198.51.100.2", "203.0.113.10"
PSK = "q7Vt2LmX9pR4sK8wN3bZ6dH1"  # the site files' secret
READY_SECONDS = 30.0  # bounds on waiting, never expectations: each step takes well under a second
EXCHANGE_SECONDS = 30.0


def gateway_swanctl(parameters: AzureParameters) -> str:
    """An Azure route-based gateway's default policy, from the rule set's data."""
    route = parameters.gateways[ROUTE_BASED]
    ike = ",".join(strongswan_keywords(offer, ike=True) for offer in route.ike_offers)
    esp = ",".join(strongswan_keywords(offer, ike=False) for offer in route.child_initiator_offers)
    return f"""\
connections {{
  azure {{
    version = 2
    local_addrs = {GATEWAY}
    remote_addrs = {SITE}
    proposals = {ike}
    rekey_time = {parameters.phase1.lifetime_seconds}s
    local {{
      auth = psk
      id = {GATEWAY}
    }}
    remote {{
      auth = psk
      id = {SITE}
    }}
    children {{
      net {{
        local_ts = {LAB_CONTEXT.vnet_prefixes[0]}
        remote_ts = {LAB_CONTEXT.onprem_prefixes[0]}
        esp_proposals = {esp}
        rekey_time = {route.child_lifetime_seconds}s
      }}
    }}
  }}
}}
secrets {{
  ike-site {{
    id-site = {SITE}
    id-azure = {GATEWAY}
    secret = "{PSK}"
  }}
}}
"""


def _strongswan_conf(directory: Path, name: str) -> str:
    return f"""\
charon {{
  port = 500
  port_nat_t = 4500
  install_routes = no
  filelog {{
    lab {{
      path = {directory}/{name}.log
      default = 1
      ike = 2
      cfg = 2
      flush_line = yes
    }}
  }}
  plugins {{
    vici {{
      socket = unix://{directory}/{name}.vici
    }}
    include /etc/strongswan.d/charon/*.conf
    # after the include: a system-wide libcharon-extra-plugins says `load = no` there
    kernel-libipsec {{
      load = yes
    }}
  }}
}}
"""


class Charon:
    """One charon in one namespace, with its own strongswan.conf, vici socket, log and /run."""

    def __init__(self, lab: Lab, namespace: str, name: str):
        self.lab, self.namespace, self.name = lab, namespace, name
        directory = Path(lab.tmpdir)
        (directory / f"{name}.conf").write_text(_strongswan_conf(directory, name))
        self.env = dict(os.environ, STRONGSWAN_CONF=str(directory / f"{name}.conf"))
        self.vici = directory / f"{name}.vici"
        self.log = directory / f"{name}.log"
        preload = "" if LIBIPSEC == Path("/") / PLUGIN else (
            f"LD_PRELOAD={shlex.quote(str(LIBIPSEC))} LD_LIBRARY_PATH={shlex.quote(str(EXTRA / 'usr/lib/ipsec'))} ")
        # `ip netns exec` gives charon a mount namespace of its own: a tmpfs on /run there keeps its
        # pid file (fixed at /var/run/charon.pid) apart from the host's and the other charon's.
        start = f"mount -t tmpfs xcheck-lab-run /run && {preload}exec {CHARON}"
        self.process = lab.spawn(namespace, ["sh", "-c", start], env=self.env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + READY_SECONDS
        while not self.vici.exists():
            assert self.process.poll() is None and time.monotonic() < deadline, f"{name}: charon did not start"
            time.sleep(0.02)

    def swanctl(self, *args: str, timeout: float = EXCHANGE_SECONDS + 10) -> subprocess.CompletedProcess:
        return self.lab.run(self.namespace, ["swanctl", *args, "--uri", f"unix://{self.vici}"], env=self.env,
                            timeout=timeout)

    def load(self, path: Path) -> None:
        loaded = self.swanctl("--load-all", "--file", str(path))
        assert "successfully loaded 1 connections" in loaded.stdout, loaded.stdout + loaded.stderr

    def child_sas(self) -> list[tuple[int, str]]:
        """(unique id, state) of each CHILD_SA `net`, from `swanctl --list-sas`."""
        listed = self.swanctl("--list-sas").stdout
        return [(int(n), state) for n, state in re.findall(r"^\s+net: #(\d+), reqid \d+, (\w+)", listed, re.M)]

    def logged(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(what: str, condition, *logs: Charon) -> None:
    deadline = time.monotonic() + EXCHANGE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {EXCHANGE_SECONDS} s\n"
                                 + "\n".join(f"--- {c.name}\n{c.logged()[-4000:]}" for c in logs))
        time.sleep(0.1)


@contextmanager
def tunnel(site_file: Path) -> Iterator[tuple[Charon, Charon]]:
    """The lab gateway and a site loaded with `site_file`, the site's first CHILD_SA up."""
    with Lab(nat="public", stun="none") as lab:
        # libipsec routes a selector's traffic into its TUN device from an address inside it.
        lab.run(lab.onprem, ["ip", "addr", "add", "10.10.0.1/32", "dev", "lo"], check=True)
        lab.run(lab.cloud, ["ip", "addr", "add", "10.20.0.1/32", "dev", "lo"], check=True)
        gateway = Charon(lab, lab.cloud, "gateway")
        (Path(lab.tmpdir) / "gateway.swanctl.conf").write_text(gateway_swanctl(parameters_of("azure-current")))
        gateway.load(Path(lab.tmpdir) / "gateway.swanctl.conf")
        site = Charon(lab, lab.onprem, "site")
        site.load(site_file)
        up = site.swanctl("--initiate", "--child", "net", "--timeout", str(int(EXCHANGE_SECONDS)))
        assert up.returncode == 0 and "initiate completed successfully" in up.stdout, up.stdout + gateway.logged()
        assert [state for _, state in gateway.child_sas()] == ["INSTALLED"], gateway.logged()
        yield gateway, site


def rekey_from_the_gateway(gateway: Charon) -> int:
    """Make the gateway initiate a rekey of its CHILD_SA, as Azure does; the old SA's unique id."""
    [(old, _)] = gateway.child_sas()
    asked = gateway.swanctl("--rekey", "--child", "net")
    assert asked.returncode == 0, asked.stdout + asked.stderr
    return old


def test_a_good_site_survives_a_rekey_the_gateway_initiates():
    site_file = LAB_SITES / "site-good.conf"
    with tunnel(site_file) as (gateway, site):
        old = rekey_from_the_gateway(gateway)
        # The gateway proposed Azure's rekey offers and the site chose one: a new SA replaces the old.
        for charon in (gateway, site):
            wait_for(f"{charon.name}: a rekeyed CHILD_SA", lambda c=charon: (
                [n for n, state in c.child_sas() if state == "INSTALLED" and n != old]
                and old not in [n for n, _ in c.child_sas()]), gateway, site)
        assert "received NO_PROPOSAL_CHOSEN" not in gateway.logged()
    [connection], _ = read_swanctl(str(site_file))
    assert judge_ipsec([connection], parameters_of("azure-current"), LAB_CONTEXT) == []


def test_a_site_requiring_pfs_drops_at_the_gateways_rekey_and_the_rule_says_so():
    site_file = LAB_SITES / "site-rekey-pfs.conf"
    with tunnel(site_file) as (gateway, site):
        old = rekey_from_the_gateway(gateway)
        wait_for("the gateway: its rekey refused", lambda: "received NO_PROPOSAL_CHOSEN notify" in gateway.logged(),
                 gateway, site)
        assert "no acceptable proposal found" in site.logged()
        # No SA replaced the old one: it lives on only until its lifetime ends, then the tunnel is gone.
        assert [n for n, _ in gateway.child_sas()] == [old]
    [connection], _ = read_swanctl(str(site_file))
    [finding] = judge_ipsec([connection], parameters_of("azure-current"), LAB_CONTEXT)
    assert (finding.id, finding.severity, finding.evidence.file) == ("ipsec.rekey-proposal", Severity.ERROR,
                                                                      str(site_file))
    assert "drops at Azure's first rekey" in finding.text
