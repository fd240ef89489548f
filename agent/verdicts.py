"""The verdict engine: rule sets are data (agent/rules/*.toml), this reads and applies them.

An option's verdict is the worst verdict among its rules that hold; every such rule becomes a
reason naming its id, its source and the facts it read. The format is documented at the top of
agent/rules/azure-2015.toml.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

OPTIONS = ("p2s", "s2s", "expressroute_exp", "expressroute_nsp")
# Best first; the worst verdict among an option's rules decides it.
VERDICTS = ("feasible", "conditional", "unknown", "infeasible")
NOTE = "note"  # adds a reason, never changes the verdict
DEFAULT_RULESET = "azure-current"

_OPERATORS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "in": lambda a, b: a in b,
}
_PLACEHOLDER = re.compile(r"\{([a-z0-9_.]+)(?:\|(rate))?\}")
_ROOTS = ("facts", "requirements", "option")


class RuleSetError(ValueError):
    """A rule file that does not follow the format: a packaging bug, reported with the rule's id."""


@dataclass(frozen=True)
class Rule:
    id: str
    option: str
    verdict: str
    when: Mapping[str, Any]
    text: str
    source: str


@dataclass(frozen=True)
class RuleSet:
    name: str
    title: str
    sources: Mapping[str, str]
    options: Mapping[str, Mapping[str, Any]]
    rules: tuple[Rule, ...]
    recommendation: tuple[Mapping[str, Any], ...]


def available_rulesets() -> list[str]:
    folder = resources.files("agent") / "rules"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_ruleset(name: str) -> RuleSet:
    if name not in available_rulesets():
        raise RuleSetError(f"unknown rule set {name!r} (known: {', '.join(available_rulesets())})")
    data = tomllib.loads((resources.files("agent") / "rules" / f"{name}.toml").read_text(encoding="utf-8"))
    sources = data["sources"]
    try:
        rules = tuple(Rule(**raw) for raw in data["rules"])
    except TypeError as exc:
        raise RuleSetError(f"{name}: a rule has missing or unknown keys: {exc}") from None
    for rule in rules:
        _check_rule(rule, sources)
    for option in OPTIONS:
        if option not in data["options"]:
            raise RuleSetError(f"{name}: option {option!r} has no table")
    if data["recommendation"][-1]["when"]:
        raise RuleSetError(f"{name}: the last recommendation entry must hold always (when = {{}})")
    for entry in data["recommendation"]:
        _check_when(f"{name} recommendation", entry["when"])
        if sorted(entry["order"]) != sorted(OPTIONS):
            raise RuleSetError(f"{name}: a recommendation order must name each option once")
    return RuleSet(data["name"], data["title"], sources, data["options"], rules, tuple(data["recommendation"]))


def _check_rule(rule: Rule, sources: Mapping[str, str]) -> None:
    if rule.option not in OPTIONS:
        raise RuleSetError(f"rule {rule.id}: unknown option {rule.option!r}")
    if rule.verdict not in VERDICTS + (NOTE,):
        raise RuleSetError(f"rule {rule.id}: unknown verdict {rule.verdict!r}")
    if rule.source not in sources:
        raise RuleSetError(f"rule {rule.id}: unknown source {rule.source!r}")
    _check_when(f"rule {rule.id}", rule.when)
    for path, _ in _PLACEHOLDER.findall(rule.text):
        _check_path(f"rule {rule.id}", path)


def _check_when(where: str, when: Mapping[str, Any]) -> None:
    for path, condition in when.items():
        _check_path(where, path)
        if isinstance(condition, dict):
            unknown = set(condition) - set(_OPERATORS) - {"missing"}
            if unknown or not condition:
                raise RuleSetError(f"{where}: {path}: unknown operators {sorted(unknown)}")


def _check_path(where: str, path: str) -> None:
    if path.split(".", 1)[0] not in _ROOTS:
        raise RuleSetError(f"{where}: path {path!r} must start with one of {', '.join(_ROOTS)}")


def lookup(context: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any part is absent (= not measured)."""
    value: Any = context
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _resolve(context: Mapping[str, Any], operand: Any) -> Any:
    if isinstance(operand, str) and operand.startswith("$"):
        return lookup(context, operand[1:])
    return operand


def _holds(context: Mapping[str, Any], path: str, condition: Any) -> bool:
    value = lookup(context, path)
    if not isinstance(condition, dict):
        condition = {"eq": condition}
    for operator, operand in condition.items():
        if operator == "missing":
            if (value is None) != operand:
                return False
            continue
        operand = _resolve(context, operand)
        if value is None or operand is None or not _OPERATORS[operator](value, operand):
            return False
    return True


def format_rate(bits_per_second: float) -> str:
    # Four significant digits: a measured 47.79 Mbit/s, not 47.794312; a declared 80 Mbit/s as is.
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits_per_second >= scale:
            return f"{bits_per_second / scale:.4g} {unit}"
    return f"{bits_per_second:.4g} bit/s"


def _render(text: str, context: Mapping[str, Any]) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = lookup(context, match.group(1))
        if value is None:
            return "unknown"
        if match.group(2) == "rate":
            return format_rate(value)
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "none"
        return str(value).lower() if isinstance(value, bool) else str(value)

    return _PLACEHOLDER.sub(substitute, text)


def _option_context(table: Mapping[str, Any], need: float | None) -> dict[str, Any]:
    """The option's table plus what rules compare against: its largest tier, the smallest that fits."""
    tiers = sorted(table["tiers"], key=lambda tier: tier["bits_per_second"])
    fitting = next((t["name"] for t in tiers if need is not None and t["bits_per_second"] >= need), None)
    return {**table, "max_bits_per_second": tiers[-1]["bits_per_second"], "fitting_tier": fitting}


def _reason(rule: Rule, ruleset: RuleSet, context: Mapping[str, Any]) -> dict[str, Any]:
    used = set(rule.when) | {path for path, _ in _PLACEHOLDER.findall(rule.text)}
    return {
        "rule": rule.id,
        "verdict": rule.verdict,
        "text": _render(rule.text, context),
        "source": ruleset.sources[rule.source],
        "facts": {path: lookup(context, path) for path in sorted(used)},
    }


def evaluate(ruleset: RuleSet, facts: Mapping[str, Any], requirements: Mapping[str, Any]) -> dict[str, Any]:
    """{"options": {option: {verdict, title, reasons}}, "recommendation": [...]}"""
    need = requirements.get("bandwidth_bits_per_second")
    options: dict[str, Any] = {}
    for option in OPTIONS:
        context = {"facts": facts, "requirements": requirements, "option": _option_context(ruleset.options[option], need)}
        fired = [rule for rule in ruleset.rules if rule.option == option and all(
            _holds(context, path, condition) for path, condition in rule.when.items())]
        deciding = [rule.verdict for rule in fired if rule.verdict != NOTE]
        verdict = max(deciding, key=VERDICTS.index) if deciding else "unknown"
        # Deciding reasons first, worst first; notes last.
        fired.sort(key=lambda rule: -VERDICTS.index(rule.verdict) if rule.verdict != NOTE else 1)
        reasons = [_reason(rule, ruleset, context) for rule in fired]
        if not deciding:
            reasons.insert(0, {"rule": "engine.no-rule", "verdict": "unknown", "text": "No rule of this rule set decided this option.",
                               "source": f"rule set {ruleset.name}", "facts": {}})
        options[option] = {"title": ruleset.options[option]["title"], "verdict": verdict, "reasons": reasons}
    return {"options": options, "recommendation": recommend(ruleset, options, {"facts": facts, "requirements": requirements})}


def recommend(ruleset: RuleSet, options: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    """Options that are not infeasible, best verdict first, ties broken by the rule set's preference."""
    order = next(entry["order"] for entry in ruleset.recommendation
                 if all(_holds(context, path, condition) for path, condition in entry["when"].items()))
    candidates = [option for option in OPTIONS if options[option]["verdict"] != "infeasible"]
    return sorted(candidates, key=lambda option: (VERDICTS.index(options[option]["verdict"]), order.index(option)))
