"""The monitoring bundle (monitoring/): the alert and recording rules, checked by `promtool check rules`
and unit-tested by `promtool test rules` (and those tests shown to catch a broken rule), and the Grafana
dashboard: well-formed, one repeated row per site, every query valid PromQL over documented metrics.
Its queries are run against a real Prometheus scraping a real daemon in tests/test_lab_dashboard.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from agent.metrics import METRICS

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
ALERTS = MONITORING / "alerts.yml"
RECORDING = MONITORING / "recording.yml"
DASHBOARD = MONITORING / "grafana" / "xcheck.json"
RULE_TESTS = sorted((MONITORING / "tests").glob("*.yml"))
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool not on PATH (Debian: apt-get install prometheus)")

SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = {"summary", "description", "runbook"}
# What the issue's dashboard shows per site: verdicts, NAT, reachability per probe, path MTU, throughput, RTT.
DASHBOARD_METRICS = {"xcheck_option_verdict", "xcheck_nat_info", "xcheck_nat_detected", "xcheck_cgnat_detected",
                     "xcheck_udp_blocked", "xcheck_port_reachable", "xcheck_path_mtu_bytes",
                     "xcheck_throughput_bytes_per_second", "xcheck_rtt_seconds"}
# Grafana's own panel types that the dashboard may use (no plugin to install).
PANEL_TYPES = {"row", "stat", "state-timeline", "timeseries", "table"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Prometheus's own series the rules may read besides xcheck's.
PROMETHEUS_SERIES = {"up"}
# Grafana's interval variables, which a test gives a value (Grafana derives them from the time range).
INTERVAL_VARIABLES = ("$__rate_interval", "$__interval", "$__range")
# The characters Grafana escapes in a variable's value inside a PromQL regex (prometheusRegularEscape).
_REGEX_SPECIALS = re.compile(r"([$^*{}\[\]'+?.()|])")
_FUNCTIONS_AND_KEYWORDS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right|and|or|unless|offset|bool)\b\s*(?:\([^)]*\))?")
_IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")  # not the unit of a duration (1h)
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!=|!~|=)")


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def rules(path: Path) -> list[dict]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def alert_rules() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules(ALERTS)}


def recording_rules() -> dict[str, dict]:
    return {rule["record"]: rule for rule in rules(RECORDING)}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def grafana_regex_value(value: str) -> str:
    """A variable's value as Grafana writes it into a PromQL regex matcher (`instance=~"$site"`)."""
    return _REGEX_SPECIALS.sub(r"\\\\\1", value)


def panel_queries(board: dict, site: str, interval: str = "1m") -> list[tuple[str, dict, str]]:
    """(panel title, target, expr) for every target of every panel, the way Grafana sends it in the row
    of one site: the variables replaced by a value. A variable left unreplaced fails."""
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("${site}", "$site").replace("$site", grafana_regex_value(site))
            for variable in INTERVAL_VARIABLES:
                expr = expr.replace(variable, interval)
            assert "$" not in expr, f"{panel['title']}: a variable the test does not know in {target['expr']!r}"
            queries.append((panel["title"], target, expr))
    return queries


def template_variables(board: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in board["templating"]["list"]}


def promql_errors(exprs: list[str], workdir: Path) -> str:
    """promtool's complaint about the expressions ("" when every one parses): promtool has no command for
    an expression, but it parses (and type-checks) every rule of a rule file."""
    rule_file = workdir / "exprs.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "exprs", "rules": [
        {"record": f"expr_{index}", "expr": expr} for index, expr in enumerate(exprs)]}]}))
    completed = subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True, text=True,
                               timeout=60)
    return "" if completed.returncode == 0 else completed.stdout + completed.stderr


def names_in(expr: str) -> set[str]:
    """Series names an expression reads: identifiers that are no function, keyword, label or string."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values and other strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^]]*\]", "", expr)  # ranges
    expr = _FUNCTIONS_AND_KEYWORDS.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        following = expr[match.end():].lstrip()
        if not following.startswith("("):  # a function call
            names.add(match.group())
    return names


def annotation_queries(rule: dict) -> list[str]:
    """The PromQL of an annotation's `query` template (printf "...": the %q verbs stand for label values)."""
    found = []
    for text in rule.get("annotations", {}).values():
        for template in re.findall(r'printf "((?:[^"\\]|\\.)*)"[^|]*\| query', text):
            found.append(template.replace('\\"', '"').replace("%q", '"x"'))
    return found


def every_expression() -> list[tuple[str, str]]:
    """(where, expr) for each PromQL expression of the bundle, annotation queries included."""
    found = []
    for path in (ALERTS, RECORDING):
        for rule in rules(path):
            where = f"{path.name}: {rule.get('alert') or rule.get('record')}"
            found.append((where, rule["expr"]))
            found += [(where + " (annotation)", query) for query in annotation_queries(rule)]
    found += [(f"{DASHBOARD.name}: {title}", expr) for title, _, expr in panel_queries(dashboard(), "site:9478")]
    return found


def run_rule_tests(directory: Path, *files: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, "test", "rules", *files], cwd=directory, capture_output=True, text=True,
                          timeout=120)


# ------------------------------------------------------------------------------------------- rules


@needs_promtool
def test_rules_pass_promtool_check():
    completed = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS), str(RECORDING)], capture_output=True,
                               text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.count("SUCCESS") == 2


@needs_promtool
def test_rule_unit_tests_pass():
    completed = run_rule_tests(MONITORING / "tests", *(path.name for path in RULE_TESTS))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_tested_firing_and_not_firing():
    fires, stays_quiet = set(), set()
    for path in RULE_TESTS:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else stays_quiet).add(check["alertname"])
    assert set(alert_rules()) <= fires, f"never seen firing: {set(alert_rules()) - fires}"
    assert set(alert_rules()) <= stays_quiet, f"never seen quiet: {set(alert_rules()) - stays_quiet}"
    assert fires | stays_quiet <= set(alert_rules()), "a test names an alert that does not exist"


def test_every_recording_rule_is_tested():
    tested = {check["expr"].split("{")[0] for path in RULE_TESTS for case in load_yaml(path)["tests"]
              for check in case.get("promql_expr_test", [])}
    assert set(recording_rules()) <= tested


def test_alerts_carry_severity_and_site_in_their_text():
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == ANNOTATIONS, name
        if not rule["expr"].lstrip().startswith("absent("):  # absent() has no instance to name
            assert "$labels.instance" in rule["annotations"]["summary"], name
            assert "$labels.instance" in rule["annotations"]["description"], name


def _broken_alert(directory: Path, alert: str, change) -> None:
    """A copy of the bundle in `directory` whose `alert` rule went through `change`."""
    shutil.copytree(MONITORING, directory, dirs_exist_ok=True)
    document = load_yaml(ALERTS)
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                change(rule)
    (directory / "alerts.yml").write_text(yaml.safe_dump(document, sort_keys=False))


def _never_fires(rule):
    rule["expr"] = "vector(1) > 2"


def _fires_at_once(rule):
    rule.pop("for")


def _no_restart_grace(rule):
    rule["expr"] = rule["expr"].split("unless on (job, instance)")[0]


def _unknown_is_a_behaviour(rule):
    rule["expr"] = rule["expr"].replace('{mapping!="unknown", filtering!="unknown"}', "")


def _absence_is_a_loss(rule):
    # The naive form: the option was feasible and is not now, which holds as well when it is absent.
    rule["expr"] = ('max without (verdict) (max_over_time(xcheck_option_verdict{verdict="feasible"}[1d]) == 1) '
                    'unless on (job, instance, option) xcheck_option_verdict{verdict="feasible"} == 1')


BROKEN = [(alert, _never_fires) for alert in alert_rules()] + \
         [(alert, _fires_at_once) for alert, rule in alert_rules().items() if "for" in rule] + \
         [("XcheckOptionLost", _no_restart_grace), ("XcheckOptionLost", _absence_is_a_loss),
          ("XcheckNatChanged", _unknown_is_a_behaviour)]


@needs_promtool
@pytest.mark.parametrize(("alert", "change"), BROKEN, ids=[f"{a}-{c.__name__.strip('_')}" for a, c in BROKEN])
def test_rule_unit_tests_catch_a_broken_alert(tmp_path, alert, change):
    _broken_alert(tmp_path, alert, change)
    files = [path.name for path in RULE_TESTS if f"alertname: {alert}\n" in path.read_text()]
    completed = run_rule_tests(tmp_path / "tests", *files)
    output = completed.stdout + completed.stderr
    assert completed.returncode != 0, f"{alert} changed by {change.__name__} passed every test:\n{output}"
    assert f"alertname: {alert}," in output, output


def test_rules_and_dashboard_read_only_documented_metrics():
    recorded = set(recording_rules())
    for where, expr in every_expression():
        for name in names_in(expr):
            assert name in METRICS or name in recorded or name in PROMETHEUS_SERIES, f"{where}: unknown series {name}"
        for name, matchers in _SELECTOR.findall(expr):
            if name in METRICS:
                labels = set(_MATCHER_LABEL.findall(matchers))
                assert labels <= set(METRICS[name].labels) | TARGET_LABELS, f"{where}: {name} has no label {labels}"


# --------------------------------------------------------------------------------------- dashboard


def test_dashboard_is_a_grafana_dashboard():
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"] and board["time"]["from"] and board["time"]["to"]
    variables = template_variables(board)
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    site = variables["site"]
    assert site["type"] == "query" and site["datasource"] == DATASOURCE
    assert site["query"]["query"] == "label_values(xcheck_build_info, instance)"
    assert site["multi"] and site["includeAll"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        assert panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert set(panel["fieldConfig"]) == {"defaults", "overrides"}, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"], panel["title"]


def test_one_repeated_row_per_site_holds_every_panel_without_overlap():
    panels = dashboard()["panels"]
    row, *inside = panels
    assert row["type"] == "row" and row["repeat"] == "site" and "$site" in row["title"]
    assert not row["collapsed"] and all(panel["type"] != "row" for panel in inside)
    cells: dict[tuple[int, int], str] = {}
    for panel in inside:
        grid = panel["gridPos"]
        assert grid["y"] > row["gridPos"]["y"], panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_query_is_of_the_rows_site():
    for title, target, _ in panel_queries(dashboard(), "site:9478"):
        selectors = _SELECTOR.findall(target["expr"])
        assert selectors, f"{title}: no selector"
        for name, matchers in selectors:
            assert 'instance=~"$site"' in matchers, f"{title}: {name} is not limited to the row's site"


def test_dashboard_shows_what_the_issue_asks_and_uses_every_recorded_series():
    recorded = recording_rules()
    used = set()
    for _, _, expr in panel_queries(dashboard(), "site:9478"):
        for name in names_in(expr):
            used.add(name)
            used |= names_in(recorded[name]["expr"]) if name in recorded else set()
    assert DASHBOARD_METRICS <= used, f"not shown: {DASHBOARD_METRICS - used}"
    assert set(recorded) <= used, f"recorded for nothing: {set(recorded) - used}"


def test_legends_name_labels_the_series_have():
    for title, target, expr in panel_queries(dashboard(), "site:9478"):
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        series = [name for name in names_in(expr) if name in METRICS]
        if legend_labels and series:
            (name,) = series
            assert legend_labels <= set(METRICS[name].labels) | TARGET_LABELS, f"{title}: {legend_labels}"


@needs_promtool
def test_every_query_parses(tmp_path):
    where, exprs = zip(*every_expression())
    assert promql_errors(list(exprs), tmp_path) == "", "\n".join(f"expr_{i}: {w}" for i, w in enumerate(where))


@needs_promtool
def test_the_parse_check_finds_a_broken_query(tmp_path):
    assert "expr_1" in promql_errors(["up", 'xcheck_rtt_seconds{instance=~"a"'], tmp_path)
    assert promql_errors(["sum(up)", "rate(up[1m"], tmp_path)


def test_site_values_are_escaped_as_grafana_does():
    board = {"panels": [{"title": "t", "targets": [{"expr": 'up{instance=~"$site"}[$__rate_interval]'}]}]}
    ((_, _, expr),) = panel_queries(board, "10.0.0.2:9478", "2m")
    assert expr == r'up{instance=~"10\\.0\\.0\\.2:9478"}[2m]'
