"""One assessment: the checks' results, the facts derived from them, and the verdicts the rule
set gives. `assessment_of` is the one function that makes one; the JSON report is built from it
(agent/report.py), the text and markdown renderings read that report (after redaction, when
asked), and a metrics collector can read the `Assessment` itself."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agent.audit.run import AuditReport, audit
from agent.config import Settings
from agent.facts import derive_facts
from agent.runner import Progress, run_checks
from agent.store import ResultStore
from agent.verdicts import RuleSet, evaluate, load_ruleset
from checks.contract import Check, CheckRun
from checks.targets import Targets
from checks.registry import CHECKS


@dataclass(frozen=True)
class Assessment:
    started_at: datetime
    finished_at: datetime
    ruleset: str
    requirements: Mapping[str, Any]
    targets: Targets
    runs: tuple[CheckRun, ...]  # in the registry's order
    facts: Mapping[str, Any]
    options: Mapping[str, Any]  # per option: title, verdict, reasons
    recommendation: tuple[str, ...]
    audit: AuditReport | None = None  # the site's own configuration, judged (None: no audit ran)


def assessment_of(runs: Iterable[CheckRun], ruleset: RuleSet, requirements: Mapping[str, Any], targets: Targets,
                  started_at: datetime, finished_at: datetime) -> Assessment:
    by_name = {run.name: run for run in runs}
    ordered = tuple(by_name[name] for name in CHECKS if name in by_name)
    facts = derive_facts(ordered)
    verdicts = evaluate(ruleset, facts, requirements)
    return Assessment(started_at, finished_at, ruleset.name, dict(requirements), targets, ordered, facts,
                      verdicts["options"], tuple(verdicts["recommendation"]))


async def assess(settings: Settings, progress: Progress = lambda check, fraction, text: None,
                 checks: Iterable[Check] = CHECKS.values(), store: ResultStore | None = None) -> Assessment:
    """Run `checks` (all by default) into `store` (a new one by default) and assess the store's
    latest results: a subset run is judged with the latest results of the other checks."""
    ruleset = load_ruleset(settings.ruleset)
    targets = dataclasses.replace(settings.targets, ike_offer=ruleset.ike_offer)  # what IKE proposes is the rule set's
    store = store if store is not None else ResultStore()
    started_at = datetime.now(timezone.utc)
    await run_checks(checks, targets, settings.timeout_seconds, store=store, progress=progress)
    assessment = assessment_of(store.runs(), ruleset, settings.requirements.to_dict(), targets, started_at,
                               datetime.now(timezone.utc))
    # The site's own configuration, judged with what was just measured (NAT, what the probes saw).
    progress("audit", None, "reading the site's IPsec, firewall and BGP configuration")
    try:
        found = await asyncio.to_thread(audit, settings, ruleset, assessment.facts)
    except Exception:  # the readers turn bad input into a status: this is a bug of ours, and the measurements stand
        logging.getLogger("xcheck.audit").warning("the audit failed; the report has none", exc_info=True)
        return assessment
    return dataclasses.replace(assessment, audit=found)
