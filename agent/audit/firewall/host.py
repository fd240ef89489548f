"""This host's own firewall: `nft -j list ruleset` and `iptables-save`, whichever exist.

With iptables' nf_tables back end, iptables-save prints tables that nft lists too (iptables-nft's
ip filter, nat, mangle, raw): they are taken from iptables-save, which knows its own matches
(nft shows them as opaque `xt` expressions), and left out of nft's listing, so that no chain is
walked twice. Tables of the legacy back end are not in nft's listing: when iptables-save says they
exist, iptables-legacy-save reads them too.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable

from agent.audit.findings import ParseStatus
from agent.audit.firewall.iptables import IPTABLES_COMMAND, read_iptables_save
from agent.audit.firewall.nft import NFT_COMMAND, read_nft_json
from agent.audit.firewall.reading import MAX_INPUT_CHARS, failed, quote
from agent.audit.firewall.ruleset import Ruleset

STDERR_BYTES = 4096  # warnings and error messages: a few lines
COMMAND_SECONDS = 20  # listing a large ruleset takes well under a second; a hung netlink socket never ends
LEGACY_COMMAND = "iptables-legacy-save"
LEGACY_WARNING = "iptables-legacy tables present"
NFT_BACKEND = "(nf_tables)"
NOT_INSTALLED = "is not installed"

# argv -> (standard output, its standard error), or (None, why not)
Runner = Callable[[list[str]], tuple[str | None, str]]


def run_command(argv: list[str]) -> tuple[str | None, str]:
    """A listing command's output and the start of its standard error (where iptables-save warns
    of legacy tables), bounded in size (read from a file, not held whole in a pipe) and time;
    None with the reason when it is not installed, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None, f"{argv[0]} {NOT_INSTALLED}"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            completed = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                       timeout=COMMAND_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(argv)} did not finish within {COMMAND_SECONDS} s"
        except OSError as exc:
            return None, f"{' '.join(argv)} could not run: {exc.strerror}"
        out.seek(0)
        data = out.read(MAX_INPUT_CHARS + 1)
        err.seek(0)
        errors = err.read(STDERR_BYTES).decode("utf-8", "replace").strip()
        if completed.returncode != 0:
            return None, f"{' '.join(argv)} failed: {quote(errors or f'exit status {completed.returncode}')}"
    if len(data) > MAX_INPUT_CHARS:
        return None, f"{' '.join(argv)} printed more than {MAX_INPUT_CHARS} bytes"
    return data.decode("utf-8", "replace"), errors


def read_host_firewall(run: Runner = run_command) -> tuple[list[Ruleset], list[ParseStatus]]:
    """Every ruleset in force on this host, and a parse status per listing (one that could not be
    taken, such as without root, is `failed` with the command's own message)."""
    statuses: list[ParseStatus] = []
    missing: list[str] = []

    def listing(argv: list[str], kind: str) -> tuple[str | None, str]:
        text, why = run(argv)
        if text is None:
            if argv[0] != LEGACY_COMMAND and why.endswith(NOT_INSTALLED):  # no such tool: no such ruleset
                missing.append(argv[0])
            else:
                statuses.append(failed(" ".join(argv), kind, why))
        return text, why

    nft_text, _ = listing(NFT_COMMAND.split(), "nftables")
    nft_ruleset = None
    if nft_text is not None:
        nft_ruleset, status = read_nft_json(nft_text, NFT_COMMAND)
        statuses.append(status)
    iptables: list[Ruleset] = []
    ipt_text, ipt_errors = listing([IPTABLES_COMMAND], "iptables")
    if ipt_text is not None:
        ruleset, status = read_iptables_save(ipt_text, IPTABLES_COMMAND)
        statuses.append(status)
        if ruleset is not None:
            iptables.append(ruleset)
            if nft_ruleset is not None and NFT_BACKEND in ipt_text:
                nft_ruleset = _without(nft_ruleset, {table.name for table in ruleset.tables})
        warned = LEGACY_WARNING in ipt_errors or LEGACY_WARNING in ipt_text
        legacy_text = listing([LEGACY_COMMAND], "iptables")[0] if warned else None
        if legacy_text is not None:
            legacy, status = read_iptables_save(legacy_text, LEGACY_COMMAND)
            statuses.append(status)
            iptables.extend([legacy] if legacy is not None else [])
    if len(missing) == 2:
        statuses.append(failed(NFT_COMMAND, "nftables", "neither nft nor iptables-save is installed: "
                                                          "no ruleset could be listed"))
    return ([nft_ruleset] if nft_ruleset is not None else []) + iptables, statuses


def _without(ruleset: Ruleset, iptables_tables: set[str]) -> Ruleset:
    """nft's listing less the ip tables iptables-nft owns (read from iptables-save instead)."""
    kept = tuple(t for t in ruleset.tables if not (t.family == "ip" and t.name in iptables_tables))
    notes = tuple(f"table ip {t.name} read from {IPTABLES_COMMAND} (iptables-nft's)"
                  for t in ruleset.tables if t not in kept)
    return Ruleset(ruleset.kind, ruleset.file, kept, ruleset.notes + notes)
