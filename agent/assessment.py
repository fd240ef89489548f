"""One assessment: run the checks, derive the facts, apply the rule set, build the report."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from agent.config import Settings
from agent.facts import derive_facts
from agent.report import build_report
from agent.runner import Progress, run_checks
from agent.verdicts import evaluate, load_ruleset
from checks.registry import CHECKS


async def assess(settings: Settings, progress: Progress = lambda check, fraction, text: None) -> dict[str, Any]:
    ruleset = load_ruleset(settings.ruleset)
    started_at = datetime.now(timezone.utc)
    results = await run_checks(CHECKS.values(), settings.targets, settings.timeout_seconds, progress=progress)
    facts = derive_facts(results)
    verdicts = evaluate(ruleset, facts, settings.requirements.to_dict())
    return build_report(settings, started_at, datetime.now(timezone.utc), results, facts, verdicts)
