"""`--redact`: no address, host, user, target or certificate name survives in any string or key of
the report, nor in any of its renderings, and the redacted report is still valid against the schema;
xcheck's own wording survives it, whatever the host is called."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import socket
import ssl
from datetime import datetime, timedelta, timezone
from unittest import mock

import pytest
from conftest import validate_report
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from test_report import report_of, sample_report
from test_tls import check_against

from agent.assessment import assessment_of
from agent.config import build_settings
from agent.render import render_json, render_markdown, render_text
from agent.report import build_report, redact
from agent.runner import run_checks
from agent.verdicts import load_ruleset
from checks.contract import CheckRun, Scope, Target, TargetResult
from checks.targets import Endpoint, Targets
from checks.probes import tls_tcp443
from checks.registry import CHECKS

HOST, FQDN, USER, HOME = "lab-host7", "lab-host7.corp.example.net", "alice", "/home/alice"


@contextlib.contextmanager
def this_host(hostname=HOST, fqdn=FQDN, user=USER, home=HOME, sudo_user=None):
    """Redaction reads this host's names when it runs: give it known ones."""
    environment = {"SUDO_USER": sudo_user} if sudo_user else {}
    with mock.patch.object(socket, "gethostname", return_value=hostname), \
         mock.patch.object(socket, "getfqdn", return_value=fqdn), \
         mock.patch("getpass.getuser", return_value=user), \
         mock.patch("os.path.expanduser", return_value=home), \
         mock.patch.dict(os.environ, environment):
        if not sudo_user:
            os.environ.pop("SUDO_USER", None)
        yield


def report_with(detail="", evidence=None, hostname=HOST, **requirements):
    """The recorded NAT site's report, its first check's detail and first result's evidence amended."""
    report = json.loads(json.dumps(sample_report(**requirements)))
    report["host"]["hostname"] = hostname
    # Without targets, the amended detail is the first string that holds addresses: pseudonyms
    # are numbered from it (`public-ipv4-1`), as the expectations below read.
    report["targets"] = {"stun": [], "iperf": None, "gateways": []}
    report["checks"][0]["detail"] = detail
    report["checks"][0]["results"][0]["evidence"].update(evidence or {})
    return report


def evidence_of(report, check=0, result=0):
    return report["checks"][check]["results"][result]["evidence"]


def outputs(report) -> dict[str, str]:
    return {"json": render_json(report), "text": render_text(report), "markdown": render_markdown(report)}


@pytest.mark.parametrize("ruleset", ["azure-current", "azure-2015"])
def test_an_address_before_a_full_stop_is_hidden(ruleset):
    """The reported leak: "This host has an Internet-facing IPv4 address: 198.51.100.2." kept it."""
    report = report_of("public-responder", ruleset)  # the lab site on 198.51.100.2, no NAT
    reason = next(r for r in report["options"]["s2s"]["reasons"] if r["rule"].endswith(".s2s.public-ipv4"))
    assert reason["text"].endswith("address: 198.51.100.2.")
    with this_host():
        hidden = validate_report(redact(report))
    for name, text in outputs(hidden).items():
        assert "198.51.100.2" not in text, name
    [pseudonym] = hidden["facts"]["public_ipv4"]["addresses"]
    assert pseudonym.startswith("public-ipv4-")
    assert f"address: {pseudonym}." in json.dumps(hidden["options"]["s2s"]["reasons"])


@pytest.mark.parametrize(("text", "secret", "shown"), [
    ("seen at 198.51.100.2, then 198.51.100.2.", "198.51.100.2", "seen at public-ipv4-1, then public-ipv4-1."),
    ("from 198.51.100.2:3478 to [2001:db8::1]:443", "2001:db8::1", "from public-ipv4-1:3478 to [public-ipv6-1]:443"),
    ("GET https://198.51.100.2:8081/healthprobe", "198.51.100.2", "GET https://public-ipv4-1:8081/healthprobe"),
    ("GET https://[2001:db8::1]:8081/healthprobe", "2001:db8::1", "GET https://[public-ipv6-1]:8081/healthprobe"),
    ("IP Address:2001:DB8:0:0:0:0:0:1, IP Address:198.51.100.2", "2001:DB8", "IP Address:public-ipv6-1, IP Address:public-ipv4-1"),
    ("fe80::1%eth0 is fe80::1", "fe80::1", "link-local-ipv6-1%eth0 is link-local-ipv6-1"),
    ("::ffff:198.51.100.2 maps 198.51.100.2", "198.51.100.2", "::ffff:public-ipv4-1 maps public-ipv4-1"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001 is 2001:db8::1.", "db8", "public-ipv6-1 is public-ipv6-1."),
    ("not an address: 999.198.51.100.2", "198.51.100.2", "not an address: 999.public-ipv4-1"),
    ("version 1.198.51.100.2", "198.51.100.2", "version public-ipv4-1.2"),
    ("x=10.0.0.2;y=100.64.0.9", "10.0.0.2", "x=rfc1918-ipv4-1;y=cgnat-ipv4-1"),
])
def test_address_forms(text, secret, shown):
    with this_host():
        hidden = redact(report_with(detail=text))
    assert hidden["checks"][0]["detail"] == shown
    assert secret.lower() not in json.dumps(hidden).lower()


def test_what_is_not_an_address_stays():
    text = "at 04:19:46.893Z, MAC 02:42:ac:11:00:02, kernel 6.1.0-28, 0.5 s, ratio 1.2.3"
    with this_host():
        assert redact(report_with(detail=text))["checks"][0]["detail"] == text


def test_keys_are_redacted_too():
    with this_host():
        hidden = validate_report(redact(report_with(detail="198.51.100.2",
                                                    evidence={"by_server": {"198.51.100.2:3478": {HOST: 1}}})))
    assert hidden["checks"][0]["detail"] == "public-ipv4-1"  # the same address, the same pseudonym in a key
    assert evidence_of(hidden)["by_server"] == {"public-ipv4-1:3478": {"host-1": 1}}


def test_names_whole_labels_longest_first_and_case_blind():
    detail = f"{FQDN.upper()} aka {HOST} in corp.example.net; backup.{HOST} is not {HOST}-2; {HOME}/x by {USER}"
    with this_host():
        hidden = redact(report_with(detail=detail))
    assert hidden["host"]["hostname"] == "host-1"
    assert hidden["checks"][0]["detail"] == ("host-2 aka host-1 in domain-1; backup.host-1 is not "
                                             "host-3; home-1/x by user-1")


def test_a_sudo_caller_and_target_names_are_hidden_but_not_root_nor_the_default_servers():
    """root is every Unix host's administrator: it names no one, and hiding it would also rename
    "run as root". xcheck's default STUN servers are the same for everyone."""
    report = report_with(detail="run as root by bob for vpngw.contoso.example via stun.l.google.com", hostname=HOST)
    report["targets"] = {"stun": ["stun.l.google.com:19302", "203.0.113.10:3478"], "iperf": "far.contoso.example:5201",
                         "gateways": ["vpngw.contoso.example"]}
    with this_host(user="root", home="/root", sudo_user="bob"):
        hidden = validate_report(redact(report))
    assert hidden["targets"] == {"stun": ["stun.l.google.com:19302", "public-ipv4-1:3478"], "iperf": "target-1:5201",
                                 "gateways": ["target-2"]}
    assert hidden["checks"][0]["detail"] == "run as root by user-1 for target-2 via stun.l.google.com"


@pytest.mark.parametrize("hostname", ["ok", "public", "upload", "conditional", "xcheck"])
def test_a_host_named_like_the_schema_vocabulary_keeps_the_report_valid(hostname):
    report = report_with(detail=f"on {hostname}", hostname=hostname)
    with this_host(hostname=hostname, fqdn=hostname):
        hidden = validate_report(redact(report))
    assert hidden["host"]["hostname"] == "host-1" and hidden["checks"][0]["detail"] == "on host-1"
    assert hidden["checks"][0]["status"] == "ok" and hidden["tool"]["name"] == "xcheck"


def test_the_original_is_untouched_and_pseudonyms_are_stable():
    report = report_with(detail="198.51.100.2 198.51.100.7 198.51.100.2")
    with this_host():
        first, second = redact(report), redact(report)
    assert first == second and first["checks"][0]["detail"] == "public-ipv4-1 public-ipv4-2 public-ipv4-1"
    assert report["checks"][0]["detail"] == "198.51.100.2 198.51.100.7 198.51.100.2" and report["redacted"] is False


# ---------------------------------------------------------------- certificates

def test_certificate_names_are_hidden_wherever_they_appear():
    """A gateway given by address still shows its certificate's names: the owner's DNS names and
    organisation, its place, its AD domain, its contact, and its CA (a public CA too: all are hidden)."""
    certificate = {"subject": "CN=vpn.contoso-corp.com, O=Contoso Ltd, OU=Network Operations, L=Redmond, "
                              "ST=Washington, C=US, DC=contoso, DC=com, emailAddress=netops@contoso-corp.com",
                   "issuer": "CN=DigiCert Global G2 TLS RSA SHA256 2020 CA1, O=DigiCert Inc, C=US",
                   "san_dns": ["vpn.contoso-corp.com", "*.gw.contoso-corp.com"], "san_ip": ["203.0.113.7"]}
    detail = ("www.contoso-corp.com (Contoso Ltd, network operations) signed by DigiCert Inc; "
              "ask NetOps@Contoso-Corp.com")
    report = report_with(detail=detail, evidence={"gateways": [{"gateway": "203.0.113.7", "certificate": certificate}]})
    evidence_of(report, 1)["certificate_subject"] = "CN=sstp.contoso.com, O=Contoso Ltd"
    with this_host():
        hidden = validate_report(redact(report))
    assert hidden["checks"][0]["detail"] == "www.domain-1 (org-1, org-2) signed by org-3; ask email-1"
    shown = evidence_of(hidden)["gateways"][0]["certificate"]
    assert shown["subject"] == ("CN=name-1, O=org-1, OU=org-2, L=place-1, ST=place-2, C=US, DC=domain-2, "
                                "DC=domain-3, emailAddress=email-1")
    assert shown["issuer"] == "CN=name-2, O=org-3, C=US"
    # 203.0.113.7 is the third public address the report holds (after the lab's routes): the count
    # is the report's, the class is kept.
    assert shown["san_dns"] == ["name-1", "name-3"] and re.fullmatch(r"public-ipv4-\d+", shown["san_ip"][0])
    assert evidence_of(hidden)["gateways"][0]["gateway"] == shown["san_ip"][0]
    assert evidence_of(hidden, 1)["certificate_subject"] == "CN=name-4, O=org-1"
    for name, text in outputs(hidden).items():
        for secret in ("contoso", "redmond", "washington", "network operations", "netops", "digicert"):
            assert secret not in text.lower(), (name, secret)


def _certificate(subject: x509.Name, issuer: x509.Name, key, signer, *, ca: bool, dns=(), ips=()) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
               .not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns or ips:
        names = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def test_a_gateway_given_by_address_leaks_none_of_its_certificate_names(tmp_path):
    """End to end: a TLS server on loopback with an internal CA's certificate for Contoso, probed by
    tls_tcp443 as `--gateway 127.0.0.1` with a fingerprint that differs (so the check's own texts quote
    the issuer too); no name of either certificate survives in any rendering of the redacted report."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "com"),
                         x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "contoso"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso Ltd"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "Contoso Issuing CA 01")])
    leaf_name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                           x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
                           x509.NameAttribute(NameOID.LOCALITY_NAME, "Redmond"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Contoso Ltd"),
                           x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Network Operations"),
                           x509.NameAttribute(NameOID.EMAIL_ADDRESS, "netops@contoso-corp.com"),
                           x509.NameAttribute(NameOID.COMMON_NAME, "vpn.contoso-corp.com")])
    ca = _certificate(ca_name, ca_name, ca_key, ca_key, ca=True)
    leaf = _certificate(leaf_name, ca_name, leaf_key, ca_key, ca=False,
                        dns=("vpn.contoso-corp.com", "vpngw.internal.contoso.com"), ips=("127.0.0.1",))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca))
                      + leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)

    async def silent(reader, writer):
        await asyncio.sleep(30)  # cancelled when the check's loop ends

    outcome = check_against(tls_tcp443, silent, context, gateway="127.0.0.1", gateway_fingerprint="00" * 32)
    target = Target(Scope.GATEWAY, "127.0.0.1", Endpoint("127.0.0.1", 500))
    result = TargetResult("tls_tcp443", target, outcome.status, outcome.reason, outcome.detail, 0.1, outcome.evidence,
                          0.0)
    report = report_with()
    report["checks"].append(json.loads(json.dumps(CheckRun.of(tls_tcp443.CHECK, [result]).to_dict())))
    secrets = ("contoso", "redmond", "washington", "network operations", "netops", "issuing ca")
    plain = render_json(report).lower()
    assert all(secret in plain for secret in secrets)  # the scan below looks for what really is in a report
    assert "issuing ca 01" in " ".join(outcome.evidence.exchange.interception_evidence).lower()
    with this_host():
        hidden = validate_report(redact(report))
    for name, text in outputs(hidden).items():
        for secret in secrets:
            assert secret not in text.lower(), (name, secret)
    issuer = evidence_of(hidden, -1)["exchange"]["certificate"]["issuer"]
    assert re.fullmatch(r"DC=domain-\d+, DC=domain-\d+, O=org-1, CN=name-\d+", issuer), issuer


# ---------------------------------------------------------------- a host named like xcheck's own words

def test_a_label_that_holds_the_host_name_is_hidden_whole():
    """`lab-host7-vpn` names the site as much as `lab-host7` does; `xlab-host7` is another word."""
    detail = f"{HOST}-vpn.corp.example.net, vpn-{HOST}, {HOST}_old, {USER}-laptop; x{HOST} stays"
    with this_host():
        hidden = redact(report_with(detail=detail))
    assert hidden["checks"][0]["detail"] == f"host-2.domain-1, host-3, host-4, user-1; x{HOST} stays"


@pytest.fixture(scope="module")
def own_wording_report():
    """A report of every check run with no target (no packet leaves: every probe that sends is
    skipped), so the checks' own texts are in it ("no gateway given (--gateway)"), as are rule
    texts and sources that say "gateway", "NAT" and "VPN"."""
    runs = asyncio.run(run_checks(CHECKS.values(), Targets(), timeout=5))
    assert any("gateway" in run.detail for run in runs)
    settings = build_settings({})
    moment = datetime.now(timezone.utc)
    return build_report(assessment_of(runs, load_ruleset(settings.ruleset), settings.requirements.to_dict(),
                                      Targets(), moment, moment))


def _named(report: dict, host: str) -> dict:
    """The report of a host named `host`, whose name shows where a host's name really shows."""
    report = json.loads(json.dumps(report))
    report["host"]["hostname"] = host
    report["checks"][0]["detail"] += (f"; {host}.corp.example.net answered, {host}-02.corp.example.net did not; "
                                      f"refused by {host}; {host.upper()}")
    evidence_of(report)["certificate"] = {"subject": f"CN={host}", "san_dns": [host, f"{host}.corp.example.net"]}
    evidence_of(report)["gateway"] = host  # a key xcheck writes, holding the name
    return report


@pytest.mark.parametrize("host", ["gateway", "nat", "vpn", "azure", "stun", "tls", "current", "esp", "latency"])
def test_a_host_named_like_xcheck_s_own_words_leaves_them_and_hides_itself(own_wording_report, host):
    """A host named "gateway" turned "no gateway given (--gateway)" into "no host-1 given". Its
    redacted report must be the very report a host with a name of its own gets: xcheck's wording
    intact, and the name hidden wherever it really is (host name, FQDN, a label, peer text)."""
    with this_host(hostname=host, fqdn=f"{host}.corp.example.net"):
        hidden = validate_report(redact(_named(own_wording_report, host)))
    with this_host(hostname=HOST, fqdn=FQDN):
        expected = redact(_named(own_wording_report, HOST))
    assert hidden == expected
    for name, text in outputs(hidden).items():
        assert text == outputs(expected)[name]
    assert hidden["host"]["hostname"] == "host-1" and evidence_of(hidden)["gateway"] == "host-1"
    assert hidden["checks"][0]["detail"].endswith("; host-2 answered, host-3.domain-1 did not; "
                                                  "refused by host-1; host-1")
    assert "no gateway given (--gateway)" in render_text(hidden)
    assert hidden["summary"] == own_wording_report["summary"] and hidden["ruleset"] == "azure-current"


# ---------------------------------------------------------------- fuzz

def _ipv4_forms(ip: ipaddress.IPv4Address):
    text = str(ip)
    return st.sampled_from([text, f"{text}:3478", f"{text}.", f"http://{text}:8081/p", f"IP Address:{text}"])


def _ipv6_forms(ip: ipaddress.IPv6Address):
    forms = [ip.compressed, ip.exploded, ip.compressed.upper(), f"[{ip.compressed}]:443",
             f"https://[{ip.compressed}]:8081/p", f"IP Address:{ip.exploded.upper()}", f"{ip.compressed}%eth0"]
    return st.sampled_from(forms)


ipv4s = st.ip_addresses(v=4).flatmap(lambda ip: st.tuples(st.just(str(ip)), _ipv4_forms(ip)))
ipv6s = st.ip_addresses(v=6).flatmap(lambda ip: st.tuples(st.just(ip.compressed), _ipv6_forms(ip)))
# Host names: labels with a letter first; none of them may be a hex-only label an IPv6 address could
# hold (the test looks for leaks by substring) nor a word the report itself uses.
labels = st.from_regex(r"[g-z][a-z0-9]{2,9}", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=3).map(".".join)
# Between secrets: at least one character that ends an address or a name (a digit, hex digit,
# colon or dot would make a longer token, "-" and "_" a longer name).
glue = st.text(alphabet=" ,;=/()<>'\"\t\n!?[]", min_size=1, max_size=4)


def _baseline_words() -> str:
    with this_host(hostname="nohost", fqdn="nohost", user="nouser", home="/nohome"):
        report = report_with(hostname="nohost")
        return "\n".join(outputs(report).values()) + "\n".join(outputs(redact(report)).values())


BASELINE = _baseline_words()


def _occurs(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE) is not None


def _without_mapped_prefixes(text: str) -> str:
    """`text` less each "::ffff:" that a pseudonym of an IPv4 address follows, the text table's
    wrapping (line breaks and cell borders, within the pseudonym too) disregarded."""
    kept, start = [], 0
    for found in re.finditer("::ffff:", text):
        following = re.sub(r"[\s│┃]", "", text[found.end():found.end() + 200])
        if re.match(r"[a-z0-9-]+-ipv4-\d", following):
            kept.append(text[start:found.start()])
            start = found.end()
    return "".join(kept) + text[start:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(addresses=st.lists(st.one_of(ipv4s, ipv6s), min_size=1, max_size=6), host=hostnames, user=labels,
       target=hostnames, glues=st.lists(glue, min_size=8, max_size=8))
@example(addresses=[("::", "::"), ("::ffff:0:0", "::ffff:0:0")], host="g01", user="g00", target="gce",
         glues=[";"] * 8)  # a mapped pseudonym wrapped across table rows: its "::ffff:" hides nothing
def test_no_address_or_name_survives_any_rendering(addresses, host, user, target, glues):
    names = [host, user, target]
    assume(not any(_occurs(part, BASELINE) for name in names for part in [name, *name.split(".")]))
    assume(len({n.lower() for n in names}) == 3 and not any(a != b and _occurs(a, b) for a in names for b in names))
    forms = [form for _, form in addresses]
    words = forms + [host, user, target]
    free_text = "".join(g + w for g, w in zip(glues, words)) + glues[-1]
    report = report_with(detail=free_text, evidence={free_text: [free_text, {"peer": free_text}]}, hostname=host)
    report["options"]["p2s"]["reasons"][0]["text"] = free_text
    report["facts"]["public_ipv4"]["addresses"] = [canonical for canonical, _ in addresses]
    report["targets"]["gateways"] = [target]
    with this_host(hostname=host, fqdn=host, user=user, home=f"/home/{user}"):
        hidden = validate_report(redact(report))
    for name, rendered in outputs(hidden).items():
        # An IPv4-mapped address shows as "::ffff:" and its IPv4 pseudonym: that "::" hides nothing
        # (the text table may wrap between the two, onto its next row of cell borders).
        lowered = _without_mapped_prefixes(rendered.lower())
        for canonical, form in addresses:
            assert canonical.lower() not in lowered, (name, canonical)
            assert form.lower() not in lowered, (name, form)
        for secret in names:
            assert not _occurs(secret, rendered), (name, secret)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(common_name=hostnames, org=st.lists(labels, min_size=1, max_size=3).map(" ".join), unit=labels, place=labels,
       component=labels, mailbox=labels, alt_names=st.lists(hostnames, min_size=1, max_size=3),
       glues=st.lists(glue, min_size=10, max_size=10))
def test_no_certificate_name_survives_any_rendering(common_name, org, unit, place, component, mailbox, alt_names,
                                                    glues):
    """Every name of a gateway's certificate, in its evidence and quoted in free text, is hidden."""
    email = f"{mailbox}@{common_name}"
    names = [common_name, org, unit, place, component, email, *alt_names]
    assume(not any(_occurs(part, BASELINE) for name in names for part in [name, *re.split(r"[ .@]", name)]))
    assume(len({n.lower() for n in names}) == len(names))  # one may hold another: the longest is hidden first
    certificate = {"subject": f"CN={common_name}, O={org}, OU={unit}, L={place}, C=US, DC={component}, DC=com, "
                              f"emailAddress={email}",
                   "issuer": f"CN={org} CA, O={org}", "san_dns": alt_names}
    free_text = "".join(g + w for g, w in zip(glues, names)) + glues[-1]
    report = report_with(detail=free_text, evidence={"gateways": [{"certificate": certificate}]})
    report["options"]["p2s"]["reasons"][0]["text"] = free_text
    with this_host():
        hidden = validate_report(redact(report))
    for name, rendered in outputs(hidden).items():
        for secret in names:
            assert not _occurs(secret, rendered), (name, secret)
