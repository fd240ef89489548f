"""The verdict engine: rule sets are data (agent/rules/*.toml), this reads and applies them.

An option's verdict is the worst verdict among its rules that hold; every such rule becomes a
reason naming its id, its source and the facts it read. The format is documented at the top of
agent/rules/azure-2015.toml.
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from agent.audit.parameters import AzureParameters
from checks.protocols.ike_suites import IkeOffer

OPTIONS = ("p2s", "s2s", "expressroute_exp", "expressroute_nsp")
# Best first; the worst verdict among an option's rules decides it.
VERDICTS = ("feasible", "conditional", "unknown", "infeasible")
NOTE = "note"  # adds a reason, never changes the verdict
DEFAULT_RULESET = "azure-current"
RULESET_SCHEMA = 1  # the rule file format this engine reads (`schema = 1` at the top of each file)

_OPERATORS = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}
_PLACEHOLDER = re.compile(r"\{([a-z0-9_.]+)(?:\|(rate))?\}")
ANY = "any"  # a `when` key: holds when one of its condition tables holds
_TABLES = ("sources", "options", "limits", "ike", "audit", "rules", "recommendation")
_TOP_LEVEL = ("schema", "name", "title", *_TABLES)


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
    limits: Mapping[str, float]  # Azure's limits rules compare with (`$limits.max_packet_bytes`), source aside
    ike_offer: IkeOffer  # what the IKE probes propose
    table_sources: Mapping[str, str]  # "limits", "ike" -> the key in `sources` their figures come from
    audit: AzureParameters  # what `xcheck audit` judges a site's configuration against


def available_rulesets() -> list[str]:
    folder = resources.files("agent") / "rules"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_ruleset(name: str) -> RuleSet:
    if name not in available_rulesets():
        raise RuleSetError(f"unknown rule set {name!r} (known: {', '.join(available_rulesets())})")
    return parse_ruleset((resources.files("agent") / "rules" / f"{name}.toml").read_text(encoding="utf-8"), name)


def parse_ruleset(text: str, name: str) -> RuleSet:
    """A rule set from the text of its file, `name` being the file's (it must be the `name` inside).

    Everything is checked here, once: the format version, every table, every rule's option,
    verdict, source, conditions and every dotted path it reads (against the report schema's
    facts, the declared requirements, the rule set's limits and its option's table)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleSetError(f"{name}: not TOML: {exc}") from None
    if "schema" not in data:
        raise RuleSetError(f"{name}: no `schema = {RULESET_SCHEMA}` line: not a rule file this xcheck reads")
    if data["schema"] != RULESET_SCHEMA:
        raise RuleSetError(f"{name}: schema = {data['schema']!r}, this xcheck reads schema = {RULESET_SCHEMA} only")
    unknown = set(data) - set(_TOP_LEVEL)
    if unknown:
        raise RuleSetError(f"{name}: unknown keys {sorted(unknown)} (known: {', '.join(_TOP_LEVEL)})")
    for table in _TABLES:
        if table not in data:
            raise RuleSetError(f"{name}: no " + (f"[[{table}]] tables" if table in ("rules", "recommendation")
                                                  else f"[{table}] table"))
    if data.get("name") != name:
        raise RuleSetError(f"{name}: name = {data.get('name')!r}, not the file's name {name!r}")
    if not isinstance(data.get("title"), str):
        raise RuleSetError(f"{name}: no title")
    sources = data["sources"]
    if not isinstance(sources, Mapping) or not all(isinstance(citation, str) for citation in sources.values()):
        raise RuleSetError(f"{name}: [sources] maps ids to citations")
    options = _options(name, data["options"])
    table_sources = {table: _table_source(name, table, data[table], sources) for table in ("limits", "ike")}
    limits = _limits(name, data["limits"])
    try:
        offer = IkeOffer.from_table({key: value for key, value in data["ike"].items() if key != "source"})
    except ValueError as exc:
        raise RuleSetError(f"{name}: [ike] {exc}") from None
    paths = {"facts": _fact_paths(), "requirements": dict.fromkeys(_requirement_names(), _VALUE),
             "limits": dict.fromkeys(limits, _VALUE)}
    rules = _rules(name, data["rules"], sources, options, paths)
    recommendation = _recommendation(name, data["recommendation"], paths)
    try:
        audit = AzureParameters.from_table(data["audit"], sources)
    except ValueError as exc:
        raise RuleSetError(f"{name}: {exc}") from None
    return RuleSet(name, data["title"], sources, options, rules, recommendation, limits, offer, table_sources, audit)


def _options(name: str, options: Any) -> dict[str, Mapping[str, Any]]:
    if not isinstance(options, Mapping):
        raise RuleSetError(f"{name}: [options] is not a table")
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise RuleSetError(f"{name}: unknown options {sorted(unknown)} (known: {', '.join(OPTIONS)})")
    for option in OPTIONS:
        table = options.get(option)
        if not isinstance(table, Mapping):
            raise RuleSetError(f"{name}: no [options.{option}] table")
        tiers = table.get("tiers")
        if not isinstance(table.get("title"), str) or not isinstance(tiers, list) or not tiers \
                or not all(isinstance(tier, Mapping) and isinstance(tier.get("name"), str)
                           and _is_number(tier.get("bits_per_second")) for tier in tiers):
            raise RuleSetError(f"{name}: [options.{option}] needs a title and tiers of {{name, bits_per_second}}")
    return dict(options)


def _table_source(name: str, table: str, data: Any, sources: Mapping[str, str]) -> str:
    if not isinstance(data, Mapping):
        raise RuleSetError(f"{name}: [{table}] is not a table")
    if data.get("source") not in sources:
        raise RuleSetError(f"{name}: [{table}] needs a source from [sources], not {data.get('source')!r}")
    return data["source"]


def _limits(name: str, table: Mapping[str, Any]) -> dict[str, float]:
    limits = {key: value for key, value in table.items() if key != "source"}
    for key, value in limits.items():
        if not _is_number(value):
            raise RuleSetError(f"{name}: [limits] {key} = {value!r} is not a number")
    return limits


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rules(name: str, raw_rules: Any, sources: Mapping[str, str], options: Mapping[str, Mapping[str, Any]],
           paths: Mapping[str, Any]) -> tuple[Rule, ...]:
    if not isinstance(raw_rules, list):
        raise RuleSetError(f"{name}: rules are [[rules]] tables")
    keys = [field.name for field in fields(Rule)]
    rules: list[Rule] = []
    for number, raw in enumerate(raw_rules, start=1):
        if not isinstance(raw, Mapping) or set(raw) != set(keys):
            where = raw.get("id", f"number {number}") if isinstance(raw, Mapping) else f"number {number}"
            raise RuleSetError(f"{name}: rule {where}: a rule has exactly the keys {', '.join(keys)}")
        rule = Rule(**raw)
        where = f"{name}: rule {rule.id}"
        if any(rule.id == seen.id for seen in rules):
            raise RuleSetError(f"{where}: a second rule with this id")
        if rule.option not in OPTIONS:
            raise RuleSetError(f"{where}: unknown option {rule.option!r}")
        if rule.verdict not in VERDICTS + (NOTE,):
            raise RuleSetError(f"{where}: unknown verdict {rule.verdict!r}")
        if rule.source not in sources:
            raise RuleSetError(f"{where}: unknown source {rule.source!r}")
        if not isinstance(rule.text, str):
            raise RuleSetError(f"{where}: text is not a string")
        option = dict.fromkeys(_option_context(options[rule.option], None), _VALUE)
        _check_when(where, rule.when, {**paths, "option": option}, rule.text)
        rules.append(rule)
    return tuple(rules)


def _recommendation(name: str, entries: Any, paths: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(entries, list) or not entries:
        raise RuleSetError(f"{name}: recommendations are [[recommendation]] tables")
    for number, entry in enumerate(entries, start=1):
        if not isinstance(entry, Mapping) or set(entry) != {"when", "order"}:
            raise RuleSetError(f"{name}: recommendation {number}: an entry has exactly the keys when, order")
        _check_when(f"{name}: recommendation {number}", entry["when"], paths, "")
        if not isinstance(entry["order"], list) or sorted(entry["order"]) != sorted(OPTIONS):
            raise RuleSetError(f"{name}: recommendation {number}: the order must name each option once")
    if entries[-1]["when"]:
        raise RuleSetError(f"{name}: the last recommendation entry must hold always (when = {{}})")
    return tuple(entries)


# What a dotted path may lead to: a table of known keys (a dict), a value, or a table the schema leaves open.
_VALUE, _OPEN = "a value", "an open table"


def _check_when(where: str, when: Any, paths: Mapping[str, Any], text: str) -> None:
    """Every condition well formed, and every path the rule reads known (when, `$` operands, text)."""
    _check_conditions(where, when)
    if re.search(r"[{}]", _PLACEHOLDER.sub("", text)):
        raise RuleSetError(f"{where}: a brace in the text that is no placeholder ({{facts.a.b}}, "
                           f"{{option.x|rate}}: lower case, digits, _ and .)")
    for path in sorted(_paths_read(when, text)):
        problem = _unknown_path(paths, path)
        if problem:
            raise RuleSetError(f"{where}: unknown path {path!r}: {problem}")


def _check_conditions(where: str, when: Any) -> None:
    if not isinstance(when, Mapping):
        raise RuleSetError(f"{where}: `when` is not a table")
    for path, condition in when.items():
        if path == ANY:
            if not isinstance(condition, list) or len(condition) < 2 \
                    or not all(isinstance(alternative, Mapping) and alternative for alternative in condition):
                raise RuleSetError(f"{where}: `any` takes a list of at least two condition tables, none empty")
            for alternative in condition:
                _check_conditions(where, alternative)
        elif isinstance(condition, Mapping):
            unknown = set(condition) - set(_OPERATORS) - {"missing"}
            if unknown or not condition:
                raise RuleSetError(f"{where}: {path}: unknown operators {sorted(unknown)}")
            if not isinstance(condition.get("missing", False), bool):
                raise RuleSetError(f"{where}: {path}: `missing` is true or false")


def _paths_read(when: Mapping[str, Any], text: str) -> set[str]:
    """The dotted paths a rule reads: its conditions' (in every `any` alternative), `$` operands, placeholders."""
    paths = {path for path, _ in _PLACEHOLDER.findall(text)}
    for path, condition in when.items():
        if path == ANY:
            for alternative in condition:
                paths |= _paths_read(alternative, "")
            continue
        paths.add(path)
        operands = condition.values() if isinstance(condition, Mapping) else [condition]
        paths |= {operand[1:] for operand in operands if isinstance(operand, str) and operand.startswith("$")}
    return paths


def _unknown_path(paths: Mapping[str, Any], path: str) -> str | None:
    """Why `path` leads nowhere in the tree of known paths; None when it is known."""
    node: Any = paths
    walked: list[str] = []
    for part in path.split("."):
        if node is _OPEN:
            return None
        if node is _VALUE:
            return f"{'.'.join(walked)} is a value, it has no {part!r}"
        if part not in node:
            return (f"{'.'.join(walked)} has no {part!r} (it has {', '.join(node)})" if walked
                    else f"a path starts with {', '.join(node)}")
        walked.append(part)
        node = node[part]
    if isinstance(node, Mapping):  # a condition on a table could never hold, or always would
        return f"{path} is a table, not a value: name one of {', '.join(node)}"
    return None


@functools.cache
def _fact_paths() -> Mapping[str, Any]:
    """The facts' paths, from the `facts` of the report schema xcheck writes (agent/schema's newest,
    report-vN.schema.json): a rule reads only what a report carries."""
    schemas = {int(match[1]): entry for entry in (resources.files("agent") / "schema").iterdir()
               if (match := re.fullmatch(r"report-v(\d+)\.schema\.json", entry.name))}
    root = json.loads(schemas[max(schemas)].read_text(encoding="utf-8"))

    def tree(node: Mapping[str, Any]) -> Any:
        if "$ref" in node:
            node = {**root["$defs"][node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
        if node.get("additionalProperties", False) is not False:
            return _OPEN
        parts = [tree(part) for part in node.get("allOf", [])]
        if "properties" in node:
            parts.append({key: tree(child) for key, child in node["properties"].items()})
        tables = [part for part in parts if isinstance(part, dict)]
        if tables and _OPEN not in parts:
            return {key: child for table in tables for key, child in table.items()}
        kinds = node.get("type", [])
        return _OPEN if _OPEN in parts or "object" in ([kinds] if isinstance(kinds, str) else kinds) else _VALUE

    return tree(root["properties"]["facts"])


def _requirement_names() -> list[str]:
    from agent.config import Requirements  # agent.config imports this module

    return list(Requirements().to_dict())


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


def _holds_all(context: Mapping[str, Any], when: Mapping[str, Any]) -> bool:
    """Every condition holds; an `any` condition holds when one of its alternatives holds."""
    return all(any(_holds_all(context, alternative) for alternative in condition) if path == ANY
               else _holds(context, path, condition) for path, condition in when.items())


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
    used = _paths_read(rule.when, rule.text)
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
        context = {"facts": facts, "requirements": requirements, "limits": ruleset.limits,
                   "option": _option_context(ruleset.options[option], need)}
        fired = [rule for rule in ruleset.rules if rule.option == option and _holds_all(context, rule.when)]
        deciding = [rule.verdict for rule in fired if rule.verdict != NOTE]
        verdict = max(deciding, key=VERDICTS.index) if deciding else "unknown"
        # Deciding reasons first, worst first; notes last.
        fired.sort(key=lambda rule: -VERDICTS.index(rule.verdict) if rule.verdict != NOTE else 1)
        reasons = [_reason(rule, ruleset, context) for rule in fired]
        if not deciding:
            reasons.insert(0, {"rule": "engine.no-rule", "verdict": "unknown", "text": "No rule of this rule set decided this option.",
                               "source": f"rule set {ruleset.name}", "facts": {}})
        options[option] = {"title": ruleset.options[option]["title"], "verdict": verdict, "reasons": reasons}
    context = {"facts": facts, "requirements": requirements, "limits": ruleset.limits}
    return {"options": options, "recommendation": recommend(ruleset, options, context)}


def recommend(ruleset: RuleSet, options: Mapping[str, Any], context: Mapping[str, Any]) -> list[str]:
    """Options that are not infeasible, best verdict first, ties broken by the rule set's preference."""
    order = next(entry["order"] for entry in ruleset.recommendation if _holds_all(context, entry["when"]))
    candidates = [option for option in OPTIONS if options[option]["verdict"] != "infeasible"]
    return sorted(candidates, key=lambda option: (VERDICTS.index(options[option]["verdict"]), order.index(option)))
