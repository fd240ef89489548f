"""The firewall evaluator proven against the kernel (issue 11, item 4 and "Tests: Firewalls").

Every ruleset of tests/fixtures/firewall/ is loaded into a lab namespace's real netfilter by each
back end that reads its syntax (nft; iptables-restore on nf_tables and on legacy x_tables), read
back as the kernel holds it, and probed with real packets (tests/firewall_kernel.py says how).
For each ruleset and back end:

* the kernel does what the ruleset's sidecar says (written by reading the rules), MSS included;
* `evaluate(read(readback), packet)` agrees with the kernel on every probe: accepted <-> delivered,
  dropped <-> silence, rejected <-> an ICMP error or a reset reached the sender; unknown only where
  the sidecar says the probe's fate hangs on a match the evaluator does not model, and there always
  unknown, naming that rule (where the outcome is the same whether or not such a match matches, the
  evaluator must say it). A drop or reject names the rule (or policy) that decided.

The three back ends run at once, each in its own lab: most of a ruleset's time is the silence that
proves a drop, so the file takes about as long as the nft corpus alone.
"""

from __future__ import annotations

import re
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

import pytest
from conftest import needs_lab
from firewall_kernel import (
    BACKENDS,
    OUTCOMES,
    TABLES,
    Backend,
    Case,
    CaseResult,
    FirewallLab,
    load_case,
    load_corpus,
    run_corpus,
)
from lab import LabError

from agent.audit.findings import ParseState
from agent.audit.firewall import Outcome, evaluate, read_iptables_save, read_nft_json

CASES = load_corpus()
RUNS = [pytest.param(backend, case, id="%s-%s" % (backend.name, case.name))
        for backend in BACKENDS for case in CASES if case.syntax == backend.syntax]
AS_DECIDED = {"delivered": Outcome.ACCEPTED, "dropped": Outcome.DROPPED, "rejected": Outcome.REJECTED}
READERS = {"nft": read_nft_json, "iptables": read_iptables_save}


@pytest.fixture(scope="module")
def kernel() -> dict[str, Future]:
    """Per back end (that is installed), the corpus's results, from one lab each, all at once."""
    stop = threading.Event()
    runnable = [b for b in BACKENDS if b.unavailable_reason() is None]
    with ThreadPoolExecutor(max(1, len(runnable)), thread_name_prefix="firewall-kernel") as pool:
        futures = {b.name: pool.submit(run_corpus, b, [c for c in CASES if c.syntax == b.syntax], stop)
                   for b in runnable}
        try:
            wait(futures.values())
        except BaseException:  # Ctrl-C: the labs end after their current case and tear down
            stop.set()
            raise
    return futures


def result_of(kernel: dict[str, Future], backend: Backend, case: Case) -> CaseResult:
    reason = backend.unavailable_reason()
    if reason:
        pytest.skip(reason)
    result = kernel[backend.name].result()[case.name]  # a lab that could not be built raises here
    if isinstance(result, Exception):
        raise result
    return result


@pytest.mark.parametrize(("backend", "case"), RUNS)
@pytest.mark.lab
@needs_lab
def test_the_kernel_does_what_the_ruleset_says(kernel, backend, case):
    result = result_of(kernel, backend, case)
    wrong = ["%s: the sidecar says %s, the kernel: %s (%s)" % (key, case.expected[key], seen.outcome, seen.detail)
             for key, seen in result.seen.items() if seen.outcome != case.expected[key]]
    wrong += ["%s: the gateway saw MSS %s, not %d" % (key, result.seen[key].mss, mss)
              for key, mss in case.mss.items() if result.seen[key].mss != mss]
    assert not wrong, "%s on %s (%s):\n%s" % (case.file.name, backend.name, case.purpose, "\n".join(wrong))


@pytest.mark.parametrize(("backend", "case"), RUNS)
@pytest.mark.lab
@needs_lab
def test_the_evaluator_agrees_with_the_kernel(kernel, backend, case):
    result = result_of(kernel, backend, case)
    ruleset, status = READERS[case.syntax](result.readback, " ".join(backend.save))
    assert ruleset is not None and status.status is not ParseState.FAILED, (
        "%s on %s: the readback was not read: %s\n%s" % (case.file.name, backend.name, status, result.readback))
    disagreements = []
    for key, seen in result.seen.items():
        decision = evaluate(ruleset, seen.packet)
        named = case.unmodelled.get(key)
        if named is not None:
            want = "unknown, naming the rule with %r" % named
            agrees = (decision.outcome is Outcome.UNKNOWN and decision.rule is not None
                      and named in decision.rule.text)
        else:
            want = str(AS_DECIDED[seen.outcome])
            agrees = decision.outcome is AS_DECIDED[seen.outcome] and (
                decision.outcome is Outcome.ACCEPTED or decision.rule is not None)
        if not agrees:
            disagreements.append("%s: the kernel: %s (%s), so %s; the evaluator: %s (%s; rule %s)" % (
                key, seen.outcome, seen.detail, want, decision.outcome, decision.reason,
                decision.rule and decision.rule.text))
    assert not disagreements, "%s on %s (%s):\n%s\nread back:\n%s" % (
        case.file.name, backend.name, case.purpose, "\n".join(disagreements), result.readback)


# what the issue asks the corpus to hold, as it is written in each syntax
NFT_FEATURES = {
    "inet table": r"^table inet ", "ip table": r"^table ip ",
    "policy drop": r"policy drop;", "policy accept": r"policy accept;",
    "two base chains on one hook at different priorities": r"hook output priority -10;(?s:.*)hook output priority 10;",
    "jump": r"\bjump \w", "goto": r"\bgoto \w", "return": r"\breturn$",
    "named set": r"@\w+", "anonymous set": r"\{ \d", "port range": r"dport \d+-\d+",
    "address prefix": r"\d/\d\d?\b", "address range": r"\d+\.\d+\.\d+\.\d+-\d+", "negation": r"!= ",
    "iifname wildcard": r'iifname "\w+\*"', "oifname wildcard": r'oifname "\w+\*"',
    "answers by conntrack": r"ct state established,related accept", "reject": r"\breject\b",
    "drop": r"\bdrop$", "MSS clamp": r"tcp option maxseg size set 1350", "unmodelled meta": r"meta (mark|skuid) ",
}
IPTABLES_FEATURES = {
    "filter table": r"^\*filter$", "mangle table": r"^\*mangle$", "raw table": r"^\*raw$",
    "user chain": r"^:[A-Z]+ - ", "goto": r" -g \w", "RETURN": r"-j RETURN$", "multiport": r"-m multiport",
    "conntrack": r"-m conntrack --ctstate", "state": r"-m state --state", "negation": r" ! -",
    "-i with +": r" -i \w+\+", "-o with +": r" -o \w+\+", "REJECT": r"-j REJECT", "DROP policy": r"^:\w+ DROP",
    "TCPMSS": r"-j TCPMSS --set-mss 1350", "unmodelled owner": r"-m owner", "unmodelled mark": r"-m mark",
}


def test_the_corpus_holds_what_the_issue_names():
    assert len(CASES) >= 25
    for syntax, features in (("nft", NFT_FEATURES), ("iptables", IPTABLES_FEATURES)):
        mine = [c for c in CASES if c.syntax == syntax]
        rules = "\n".join(line for c in mine for line in c.file.read_text().splitlines()
                          if not line.lstrip().startswith("#"))
        rules = re.sub(r"^\s+", "", rules, flags=re.M)
        missing = [what for what, pattern in features.items() if not re.search(pattern, rules, re.M)]
        assert not missing, "no %s ruleset has: %s" % (syntax, ", ".join(missing))
        # every outcome on every path, an unmodelled match and an MSS to see, in each syntax
        for table in TABLES:
            seen = {c.expected[k] for c in mine for k in c.expected if k.startswith(table + " ")}
            assert seen == set(OUTCOMES), "%s: [%s] never expects %s" % (syntax, table, set(OUTCOMES) - seen)
        assert any(c.unmodelled for c in mine) and any(c.mss for c in mine)


@pytest.mark.lab
@needs_lab
def test_a_ruleset_the_tool_refuses_fails_its_case_and_the_lab_leaves_nothing(tmp_path):
    backend = next(b for b in BACKENDS if b.name == "nft")
    if backend.unavailable_reason():
        pytest.skip(backend.unavailable_reason())
    good = next(c for c in CASES if c.syntax == "nft")
    bad = tmp_path / "refused.nft"
    bad.write_text("# Tests: nothing: nft refuses it.\ntable inet t { chain c { type filter hook nowhere; } }\n")
    (tmp_path / "refused.toml").write_text(good.file.with_suffix(".toml").read_text())
    results = run_corpus(backend, [load_case("nft", bad), good])
    assert isinstance(results["refused"], LabError) and "nft -f" in str(results["refused"])
    assert isinstance(results[good.name], CaseResult)  # the next case still runs
    with pytest.raises(RuntimeError, match="boom"):
        with FirewallLab(backend) as lab:
            namespaces = lab.lab.namespaces
            raise RuntimeError("boom")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [ns for ns in namespaces if ns in listed]
