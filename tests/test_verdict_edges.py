"""The rule engine at its edges (issue 13): every operator at its exact edge, `$path` operands, a
missing value, `any`, the fallback when no rule decides, the order of reasons, how values render in
reason text, the recommendation order, and every refusal of the loader, word for word.

Facts are what `derive_facts` made of the lab recordings (tests/recorded.py); what varies is the rule:
a copy of the shipped azure-current with its [[rules]] replaced by the rule under test, loaded by the
loader itself (agent.verdicts.parse_ruleset).
"""

from __future__ import annotations

import copy
import functools
import re

import pytest

import recorded
from agent.facts import derive_facts
from agent.verdicts import (OPTIONS, RuleSetError, available_rulesets, evaluate, format_rate, load_ruleset,
                            parse_ruleset)
from test_ruleset_loader import CURRENT, NO_DECLARATION, edited, fired, refusal, without

BARE = without(CURRENT, re.compile(r"\[\[rules\]\]"))  # the shipped tables, no rule


@functools.cache
def _derived(scenario: str) -> dict:
    _, runs = recorded.load(scenario)
    return derive_facts(runs)


def facts_of(scenario: str) -> dict:
    return copy.deepcopy(_derived(scenario))


def rule(when: str, verdict: str = "note", *, id: str = "test.rule", option: str = "p2s", text: str = "t") -> str:
    return (f'\n[[rules]]\nid = "{id}"\noption = "{option}"\nverdict = "{verdict}"\nwhen = {when}\n'
            f'text = "{text}"\nsource = "vpn-faq"\n')


# The shipped tables with one note and no recommendation.
LOOSE_ENDS = without(BARE, re.compile(r"\[\[recommendation\]\]")) + rule("{}", id="test.filler")


def rules(*texts: str):
    return parse_ruleset(BARE + "".join(texts), "azure-current")


def holds(when: str, facts: dict, requirements: dict = NO_DECLARATION) -> bool:
    return "test.rule" in fired(evaluate(rules(rule(when)), facts, requirements), "p2s")


# ---------------------------------------------------------------- operators at their edges

# narrow-path measured a path MTU of exactly 1400 bytes, Azure's limit (limits.max_packet_bytes = 1400).
EDGES = [
    ("eq", "1400", True), ("eq", "1399", False), ("eq", "1401", False),
    ("ne", "1400", False), ("ne", "1401", True),
    ("gt", "1399", True), ("gt", "1400", False),
    ("ge", "1400", True), ("ge", "1401", False),
    ("lt", "1401", True), ("lt", "1400", False),
    ("le", "1400", True), ("le", "1399", False),
    ("in", "[1400, 1500]", True), ("in", "[1399, 1500]", False),
    ("not_in", "[1399, 1500]", True), ("not_in", "[1400, 1500]", False),
    # a `$path` operand reads the rule set's limit: the measured MTU is exactly at it
    ("eq", '"$limits.max_packet_bytes"', True), ("ne", '"$limits.max_packet_bytes"', False),
    ("gt", '"$limits.max_packet_bytes"', False), ("ge", '"$limits.max_packet_bytes"', True),
    ("lt", '"$limits.max_packet_bytes"', False), ("le", '"$limits.max_packet_bytes"', True),
]


@pytest.mark.parametrize("operator, operand, expected", EDGES)
def test_every_operator_at_its_exact_edge(operator, operand, expected):
    facts = facts_of("narrow-path")
    assert facts["path_mtu"]["bytes"] == 1400
    assert holds(f'{{ "facts.path_mtu.bytes" = {{ {operator} = {operand} }} }}', facts) is expected


@pytest.mark.parametrize("operator, operand", sorted({(operator, operand) for operator, operand, _ in EDGES}))
def test_no_comparison_holds_on_a_value_not_measured(operator, operand):
    """Not even `ne` or `not_in`: a value not measured is no evidence either way."""
    facts = facts_of("cgnat")  # no gateway given: no path MTU
    assert facts["path_mtu"]["bytes"] is None
    assert holds(f'{{ "facts.path_mtu.bytes" = {{ {operator} = {operand} }} }}', facts) is False


@pytest.mark.parametrize("operator", ["eq", "ne", "gt", "ge", "lt", "le"])
def test_no_comparison_holds_with_an_operand_not_declared(operator):
    facts = facts_of("narrow-path")
    when = f'{{ "facts.path_mtu.bytes" = {{ {operator} = "$requirements.bandwidth_bits_per_second" }} }}'
    assert holds(when, facts) is False
    declared = {"bandwidth_bits_per_second": 1400}
    assert holds(when, facts, NO_DECLARATION | declared) is (operator in ("eq", "ge", "le"))


@pytest.mark.parametrize("scenario, missing, expected", [
    ("narrow-path", "true", False), ("narrow-path", "false", True),
    ("cgnat", "true", True), ("cgnat", "false", False),
])
def test_missing_tells_measured_from_not(scenario, missing, expected):
    assert holds(f'{{ "facts.path_mtu.bytes" = {{ missing = {missing} }} }}', facts_of(scenario)) is expected


@pytest.mark.parametrize("condition, expected", [
    ("{ missing = false, gt = 1400 }", False),  # `missing` is one condition among the others, not the last
    ("{ missing = false, ge = 1400 }", True),
    ("{ ge = 1400, le = 1400 }", True),
    ("{ gt = 1399, lt = 1400 }", False),
    ("1400", True),  # a bare value is `eq`
    ("1500", False),
])
def test_conditions_on_one_path_all_hold(condition, expected):
    assert holds(f'{{ "facts.path_mtu.bytes" = {condition} }}', facts_of("narrow-path")) is expected


@pytest.mark.parametrize("scenario, expected", [
    ("nat-strongswan", True), ("public-responder", False), ("all-dropped", False)])
def test_a_bare_boolean_and_a_string_set(scenario, expected):
    facts = facts_of(scenario)
    assert holds('{ "facts.nat.detected" = true }', facts) is expected
    assert holds('{ "facts.nat.filtering" = { in = ["address-and-port-dependent"] } }', facts) is expected


@pytest.mark.parametrize("scenario, expected", [
    ("narrow-path", True),  # behind a NAT, and the MTU at the limit
    ("cgnat", True),  # behind a NAT, no MTU
    ("public-responder", False),  # no NAT
])
def test_any_written_before_the_other_keys(scenario, expected):
    """The keys after an `any` count too, in the conditions and in the facts a reason lists."""
    when = ('{ any = [{ "facts.path_mtu.bytes" = { missing = true } }, { "facts.path_mtu.bytes" = { le = 1400 } }], '
            '"facts.nat.detected" = true }')
    facts = facts_of(scenario)
    reasons = fired(evaluate(rules(rule(when)), facts, NO_DECLARATION), "p2s")
    assert ("test.rule" in reasons) is expected
    if expected:
        assert reasons["test.rule"]["facts"] == {"facts.nat.detected": True,
                                                 "facts.path_mtu.bytes": facts["path_mtu"]["bytes"]}


def test_a_typo_after_an_any_is_refused():
    when = '{ any = [{ "facts.nat.cgnat" = true }, { "facts.nat.udp_blocked" = true }], "facts.nat.detectd" = true }'
    assert "unknown path 'facts.nat.detectd'" in refusal(BARE + rule(when))


# ---------------------------------------------------------------- a tier's exact capacity


@pytest.mark.parametrize("need, tier, above", [
    (650e6, "VpnGw1", False),  # exactly VpnGw1's aggregate: it fits
    (650e6 + 1, "VpnGw2", False),
    (10e9, "VpnGw5", False),  # exactly the largest gateway's
    (10e9 + 1, None, True),
])
def test_a_need_at_a_tiers_exact_capacity_fits_that_tier(need, tier, above):
    result = evaluate(load_ruleset("azure-current"), facts_of("public-responder"),
                      NO_DECLARATION | {"bandwidth_bits_per_second": need})
    reasons = fired(result, "p2s")
    assert ("current.p2s.bandwidth-above" in reasons) is above
    if tier:
        assert f"fits a {tier} gateway's aggregate" in reasons["current.p2s.bandwidth-fits"]["text"]
    else:
        assert "current.p2s.bandwidth-fits" not in reasons and result["options"]["p2s"]["verdict"] == "infeasible"


@pytest.mark.parametrize("need, rule_id", [(1e9, "current.s2s.bandwidth-fits"),
                                           (1e9 + 1, "current.s2s.bandwidth-several-tunnels")])
def test_a_need_at_one_tunnels_exact_capacity_fits_one_tunnel(need, rule_id):
    reasons = fired(evaluate(load_ruleset("azure-current"), facts_of("public-responder"),
                             NO_DECLARATION | {"bandwidth_bits_per_second": need}), "s2s")
    assert {"current.s2s.bandwidth-fits", "current.s2s.bandwidth-several-tunnels"} & set(reasons) == {rule_id}


# ---------------------------------------------------------------- the verdict and its reasons


def test_an_option_no_rule_decides_is_unknown_and_says_so_first():
    ruleset = rules(rule("{}", "note", id="test.only-a-note", text="Just so you know."))
    result = evaluate(ruleset, facts_of("public-responder"), NO_DECLARATION)
    fallback = {"rule": "engine.no-rule", "verdict": "unknown", "text": "No rule of this rule set decided this option.",
                "source": "rule set azure-current", "facts": {}}
    note = {"rule": "test.only-a-note", "verdict": "note", "text": "Just so you know.",
            "source": load_ruleset("azure-current").sources["vpn-faq"], "facts": {}}
    assert result["options"]["p2s"] == {"title": "Point-to-Site (SSTP, OpenVPN or IKEv2 client VPN)",
                                        "verdict": "unknown", "reasons": [fallback, note]}
    for option in OPTIONS[1:]:
        assert result["options"][option]["verdict"] == "unknown"
        assert result["options"][option]["reasons"] == [fallback]


def test_reasons_come_worst_first_and_notes_last_in_file_order():
    order = ["note", "feasible", "infeasible", "note", "conditional", "unknown", "feasible"]
    ruleset = rules(*(rule("{}", verdict, id=f"test.{number}") for number, verdict in enumerate(order)))
    p2s = evaluate(ruleset, facts_of("public-responder"), NO_DECLARATION)["options"]["p2s"]
    assert p2s["verdict"] == "infeasible"
    assert [(reason["rule"], reason["verdict"]) for reason in p2s["reasons"]] == [
        ("test.2", "infeasible"), ("test.5", "unknown"), ("test.4", "conditional"), ("test.1", "feasible"),
        ("test.6", "feasible"), ("test.0", "note"), ("test.3", "note")]


@pytest.mark.parametrize("verdicts, expected", [
    (["feasible", "conditional"], "conditional"), (["conditional", "unknown"], "unknown"),
    (["unknown", "infeasible", "feasible"], "infeasible"), (["feasible", "note"], "feasible"),
])
def test_the_worst_deciding_verdict_decides(verdicts, expected):
    ruleset = rules(*(rule("{}", verdict, id=f"test.{number}") for number, verdict in enumerate(verdicts)))
    assert evaluate(ruleset, {}, NO_DECLARATION)["options"]["p2s"]["verdict"] == expected


# ---------------------------------------------------------------- values in reason text


def render(text: str, facts: dict, requirements: dict = NO_DECLARATION) -> str:
    result = evaluate(rules(rule("{}", text=text)), facts, requirements)
    return fired(result, "p2s")["test.rule"]["text"]


def test_values_render_as_a_user_reads_them():
    nat = facts_of("nat-strongswan")
    assert render("NAT {facts.nat.detected}, CGNAT {facts.nat.cgnat}, port {facts.nat.reflexive_port}", nat) == \
        f"NAT true, CGNAT false, port {nat['nat']['reflexive_port']}"
    dropped = facts_of("all-dropped")
    assert render("NAT {facts.nat.detected}, addresses {facts.public_ipv4.addresses}", dropped) == \
        "NAT unknown, addresses none"
    public = facts_of("public-responder")
    assert render("addresses {facts.public_ipv4.addresses}", public) == "addresses 198.51.100.2"
    public["public_ipv4"]["addresses"].append("203.0.113.7")
    assert render("addresses {facts.public_ipv4.addresses}", public) == "addresses 198.51.100.2, 203.0.113.7"
    assert render("MTU {facts.path_mtu.bytes}, over {option.fitting_tier}", facts_of("narrow-path")) == \
        "MTU 1400, over unknown"


def test_rates_render_with_their_unit():
    stalled = facts_of("download-stalled")  # 47.76 Mbit/s measured
    assert render("{facts.throughput.path_bits_per_second|rate} of {requirements.bandwidth_bits_per_second|rate} "
                  "on {option.fitting_tier}", stalled, NO_DECLARATION | {"bandwidth_bits_per_second": 650e6}) == \
        f"{format_rate(stalled['throughput']['path_bits_per_second'])} of 650 Mbit/s on VpnGw1"
    assert format_rate(stalled["throughput"]["path_bits_per_second"]).endswith(" Mbit/s")


@pytest.mark.parametrize("bits_per_second, text", [
    (0, "0 bit/s"), (999, "999 bit/s"), (999.5, "999.5 bit/s"),
    (1000, "1 kbit/s"), (1001, "1.001 kbit/s"), (999_999, "1000 kbit/s"),
    (1e6, "1 Mbit/s"), (1e6 + 1, "1 Mbit/s"), (47_764_790.25, "47.76 Mbit/s"), (999e6, "999 Mbit/s"),
    (1e9, "1 Gbit/s"), (2.5e9, "2.5 Gbit/s"), (20e9, "20 Gbit/s"),
])
def test_format_rate_at_each_unit_boundary(bits_per_second, text):
    assert format_rate(bits_per_second) == text


# ---------------------------------------------------------------- the recommendation


RECOMMENDATION = """
[[recommendation]]
when = { "facts.nat.detected" = true }
order = ["s2s", "p2s", "expressroute_exp", "expressroute_nsp"]

[[recommendation]]
when = { "limits.max_packet_bytes" = 1400 }
order = ["expressroute_nsp", "expressroute_exp", "s2s", "p2s"]

[[recommendation]]
when = {}
order = ["p2s", "expressroute_nsp", "s2s", "expressroute_exp"]
"""


@pytest.mark.parametrize("scenario, limit, order", [
    ("nat-strongswan", 1400, ["s2s", "p2s", "expressroute_exp", "expressroute_nsp"]),  # a fact decides
    ("public-responder", 1400, ["expressroute_nsp", "expressroute_exp", "s2s", "p2s"]),  # a limit decides
    ("public-responder", 1500, ["p2s", "expressroute_nsp", "s2s", "expressroute_exp"]),  # the last holds always
])
def test_the_first_recommendation_entry_that_holds_breaks_ties(scenario, limit, order):
    text = edited(LOOSE_ENDS, "max_packet_bytes = 1400", f"max_packet_bytes = {limit}") + RECOMMENDATION
    ruleset = parse_ruleset(text, "azure-current")
    assert evaluate(ruleset, facts_of(scenario), NO_DECLARATION)["recommendation"] == order


def test_the_recommendation_ranks_by_verdict_before_preference_and_drops_the_infeasible():
    verdicts = (rule("{}", "conditional", id="test.p2s", option="p2s")
                + rule("{}", "infeasible", id="test.s2s", option="s2s")
                + rule("{}", "feasible", id="test.nsp", option="expressroute_nsp"))
    ruleset = parse_ruleset(LOOSE_ENDS + RECOMMENDATION + verdicts, "azure-current")
    result = evaluate(ruleset, facts_of("nat-strongswan"), NO_DECLARATION)
    assert result["recommendation"] == ["expressroute_nsp", "p2s", "expressroute_exp"]


def test_one_entry_that_holds_always_is_enough():
    one = LOOSE_ENDS + '[[recommendation]]\nwhen = {}\norder = ["expressroute_nsp", "s2s", "p2s", "expressroute_exp"]\n'
    assert evaluate(parse_ruleset(one, "azure-current"), {}, NO_DECLARATION)["recommendation"] == \
        ["expressroute_nsp", "s2s", "p2s", "expressroute_exp"]


# ---------------------------------------------------------------- the loader's refusals, word for word


def test_the_title_is_the_files():
    assert parse_ruleset(CURRENT, "azure-current").title == \
        "Azure cross-premises connectivity as documented today (VPN FAQ 2023-07, SKU table, ExpressRoute FAQ)"


def test_an_unknown_rule_set_names_the_known_ones():
    with pytest.raises(RuleSetError) as refused:
        load_ruleset("azure-1999")
    assert str(refused.value) == f"unknown rule set 'azure-1999' (known: {', '.join(available_rulesets())})"
    assert {"azure-2015", "azure-current"} <= set(available_rulesets())


TITLE_LINE = re.search(r"^title = .*\n", CURRENT, re.M)[0]
RULE_KEYS = "id, option, verdict, when, text, source"
OPTION_SHAPE = "needs a title and tiers of {name, bits_per_second}"
P2S_TIERS = CURRENT[CURRENT.index("tiers = [", CURRENT.index("[options.p2s]")):CURRENT.index("]\n", CURRENT.index(
    "tiers = [", CURRENT.index("[options.p2s]"))) + 2]


def _options_as(value: str) -> str:
    return value + without(CURRENT, re.compile(r"\[options\.\w+\]"))


@pytest.mark.parametrize("text, message", [
    ("schema = = 1", None),  # checked below: tomllib's own words follow
    (CURRENT.replace("\nschema = 1\n", "\n", 1), "no `schema = 1` line: not a rule file this xcheck reads"),
    (CURRENT.replace("\nschema = 1\n", "\nschema = 2\n", 1), "schema = 2, this xcheck reads schema = 1 only"),
    ('weather = "fine"\n' + CURRENT,
     "unknown keys ['weather'] (known: schema, name, title, sources, options, limits, ike, audit, rules, recommendation)"),
    (without(CURRENT, re.compile(r"\[limits\]")), "no [limits] table"),
    (without(CURRENT, re.compile(r"\[\[recommendation\]\]")), "no [[recommendation]] tables"),
    (edited(CURRENT, 'name = "azure-current"', 'name = "azure-2024"'),
     "name = 'azure-2024', not the file's name 'azure-current'"),
    (edited(CURRENT, TITLE_LINE, ""), "no title"),
    (edited(CURRENT, TITLE_LINE, "title = 5\n"), "no title"),
    (edited(CURRENT, "[sources]\n", "[sources]\ncount = 1\n"), "[sources] maps ids to citations"),
    ("sources = 5\n" + without(CURRENT, re.compile(r"\[sources\]")), "[sources] maps ids to citations"),
    (_options_as("options = 5\n"), "[options] is not a table"),
    (CURRENT + "\n[options.p3s]\n", "unknown options ['p3s'] (known: p2s, s2s, expressroute_exp, expressroute_nsp)"),
    (without(CURRENT, re.compile(r"\[options\.s2s\]")), "no [options.s2s] table"),
    (edited(CURRENT, P2S_TIERS, "tiers = []\n"), f"[options.p2s] {OPTION_SHAPE}"),
    (edited(CURRENT, P2S_TIERS, "tiers = 5\n"), f"[options.p2s] {OPTION_SHAPE}"),
    (edited(CURRENT, P2S_TIERS, "tiers = [5]\n"), f"[options.p2s] {OPTION_SHAPE}"),
    (edited(CURRENT, P2S_TIERS, "tiers = [{ name = 1, bits_per_second = 5 }]\n"), f"[options.p2s] {OPTION_SHAPE}"),
    (edited(CURRENT, P2S_TIERS, 'tiers = [{ name = "A", bits_per_second = "5" }]\n'), f"[options.p2s] {OPTION_SHAPE}"),
    (edited(CURRENT, P2S_TIERS, 'tiers = [{ name = "A", bits_per_second = true }]\n'), f"[options.p2s] {OPTION_SHAPE}"),
    (edited(CURRENT, P2S_TIERS, 'tiers = [{ name = "A" }]\n'), f"[options.p2s] {OPTION_SHAPE}"),
    (edited(CURRENT, 'title = "Point-to-Site', 'titel = "Point-to-Site'), f"[options.p2s] {OPTION_SHAPE}"),
    ("limits = 5\n" + without(CURRENT, re.compile(r"\[limits\]")), "[limits] is not a table"),
    (edited(CURRENT, '[limits]\nsource = "vpn-devices"', '[limits]\nsource = "nowhere"'),
     "[limits] needs a source from [sources], not 'nowhere'"),
    (edited(CURRENT, '[ike]\nsource = "vpn-devices"\n', "[ike]\n"), "[ike] needs a source from [sources], not None"),
    (edited(CURRENT, "max_packet_bytes = 1400", 'max_packet_bytes = "1400"'),
     "[limits] max_packet_bytes = '1400' is not a number"),
    (edited(CURRENT, "mss_bytes = 1350", "mss_bytes = true"), "[limits] mss_bytes = True is not a number"),
    ("rules = 5\n" + BARE, "rules are [[rules]] tables"),
    ('rules = ["x"]\n' + BARE, f"rule number 1: a rule has exactly the keys {RULE_KEYS}"),
    (BARE + rule("{}") + '\n[[rules]]\noption = "p2s"\n', f"rule number 2: a rule has exactly the keys {RULE_KEYS}"),
    (BARE + rule("{}").replace('text = "t"\n', 'text = "t"\nweight = 2\n'),
     f"rule test.rule: a rule has exactly the keys {RULE_KEYS}"),
    (BARE + rule("{}").replace('source = "vpn-faq"\n', ""), f"rule test.rule: a rule has exactly the keys {RULE_KEYS}"),
    (BARE + rule("{}") + rule("{}"), "rule test.rule: a second rule with this id"),
    (BARE + rule("{}", option="p3s"), "rule test.rule: unknown option 'p3s'"),
    (BARE + rule("{}", "maybe"), "rule test.rule: unknown verdict 'maybe'"),
    (BARE + rule("{}").replace('"vpn-faq"', '"nowhere"'), "rule test.rule: unknown source 'nowhere'"),
    (BARE + rule("{}").replace('text = "t"', "text = 5"), "rule test.rule: text is not a string"),
    (BARE + rule("5"), "rule test.rule: `when` is not a table"),
    (BARE + rule('{ "facts.nat.detected" = { missing = 1 } }'),
     "rule test.rule: facts.nat.detected: `missing` is true or false"),
    (BARE + rule('{ "facts.nat.detected" = { approx = 1, eq = true } }'),
     "rule test.rule: facts.nat.detected: unknown operators ['approx']"),
    (BARE + rule('{ "facts.nat.detected" = {} }'), "rule test.rule: facts.nat.detected: unknown operators []"),
    (BARE + rule('{ any = [{ "facts.nat.cgnat" = true }] }'),
     "rule test.rule: `any` takes a list of at least two condition tables, none empty"),
    (BARE + rule('{ any = [{ "facts.nat.cgnat" = true }, { "facts.nat.cgnat" = { missing = 2 } }] }'),
     "rule test.rule: facts.nat.cgnat: `missing` is true or false"),
    (BARE + rule("{}", text="{facts.nat.Detected}"),
     "rule test.rule: a brace in the text that is no placeholder ({facts.a.b}, {option.x|rate}: lower case, digits, "
     "_ and .)"),
    (BARE + rule('{ "weather.x" = 1 }'),
     "rule test.rule: unknown path 'weather.x': a path starts with facts, requirements, limits, option"),
    (BARE + rule('{ "requirements.vpn_device.brand" = "x" }'),
     "rule test.rule: unknown path 'requirements.vpn_device.brand': "
     "requirements.vpn_device is a value, it has no 'brand'"),
    (BARE + rule('{ "limits.mss_bytes.x" = 1 }'),
     "rule test.rule: unknown path 'limits.mss_bytes.x': limits.mss_bytes is a value, it has no 'x'"),
    (BARE + rule('{ "option.title.x" = 1 }'),
     "rule test.rule: unknown path 'option.title.x': option.title is a value, it has no 'x'"),
    (BARE + rule('{ "facts.nat.detected" = { eq = "$option.fitting_tier.name" } }'),
     "rule test.rule: unknown path 'option.fitting_tier.name': option.fitting_tier is a value, it has no 'name'"),
    (BARE + rule("{}", text="{limits.max_packet_bytes.x}"),
     "rule test.rule: unknown path 'limits.max_packet_bytes.x': limits.max_packet_bytes is a value, it has no 'x'"),
    (BARE + rule('{ "limits" = 1 }'),
     "rule test.rule: unknown path 'limits': limits is a table, not a value: name one of max_packet_bytes, mss_bytes"),
    ("recommendation = 5\n" + LOOSE_ENDS, "recommendations are [[recommendation]] tables"),
    ("recommendation = []\n" + LOOSE_ENDS, "recommendations are [[recommendation]] tables"),
    ("recommendation = [5]\n" + LOOSE_ENDS, "recommendation 1: an entry has exactly the keys when, order"),
    (LOOSE_ENDS + RECOMMENDATION.replace("when = {}\n", "when = {}\nweight = 1\n"),
     "recommendation 3: an entry has exactly the keys when, order"),
    (LOOSE_ENDS + RECOMMENDATION.replace('["s2s", "p2s", "expressroute_exp", "expressroute_nsp"]', '["s2s", "p2s"]'),
     "recommendation 1: the order must name each option once"),
    (LOOSE_ENDS + RECOMMENDATION.replace('["p2s", "expressroute_nsp", "s2s", "expressroute_exp"]', '"p2s"'),
     "recommendation 3: the order must name each option once"),
    (LOOSE_ENDS + RECOMMENDATION.replace("when = {}\n", 'when = { "requirements.clients" = 1 }\n'),
     "the last recommendation entry must hold always (when = {})"),
    (LOOSE_ENDS + RECOMMENDATION.replace('when = { "limits.max_packet_bytes" = 1400 }', "when = {}"),
     None),  # entries 2 and 3 hold always: entry 3 is the last, so this loads
    (LOOSE_ENDS + RECOMMENDATION.replace('when = { "limits.max_packet_bytes" = 1400 }', "when = 5"),
     "recommendation 2: `when` is not a table"),
    (LOOSE_ENDS + RECOMMENDATION.replace('"limits.max_packet_bytes"', '"limits.max_packet_byte"'),
     "recommendation 2: unknown path 'limits.max_packet_byte': limits has no 'max_packet_byte' "
     "(it has max_packet_bytes, mss_bytes)"),
])
def test_each_refusal_word_for_word(text, message):
    if text == "schema = = 1":
        assert refusal(text).startswith("azure-current: not TOML: Invalid value (at line 1, column ")
    elif message is None:
        parse_ruleset(text, "azure-current")
    else:
        assert refusal(text) == f"azure-current: {message}"


@pytest.mark.parametrize("path, table, known", [("facts.nat.cgnta", "facts.nat", "cgnat"),
                                               ("requirements.client", "requirements", "clients")])
def test_a_refusal_lists_what_the_table_has(path, table, known):
    """The keys come from the report schema and the requirements: listed one by one, in their order."""
    message = refusal(BARE + rule(f'{{ "{path}" = 1 }}'))
    head = f"azure-current: rule test.rule: unknown path '{path}': {table} has no '{path.rsplit('.', 1)[1]}' (it has "
    assert message.startswith(head) and message.endswith(")"), message
    keys = message[len(head):-1].split(", ")
    assert known in keys and all(
        re.fullmatch(r"[a-z0-9_]+", key) for key in keys), message


@pytest.mark.parametrize("path", ["facts.nat", "requirements"])
def test_a_path_to_a_table_names_its_values(path):
    message = refusal(BARE + rule(f'{{ "{path}" = {{ missing = true }} }}'))
    head = f"azure-current: rule test.rule: unknown path '{path}': {path} is a table, not a value: name one of "
    assert message.startswith(head), message
    keys = message[len(head):].split(", ")
    assert ("detected" if path == "facts.nat" else "clients") in keys and all(
        re.fullmatch(r"[a-z0-9_]+", key) for key in keys), message


class _Latin1Host:
    """agent/'s files as a host whose locale is Latin-1 reads them when no encoding is named."""

    def __init__(self, real):
        self._real = real

    def __truediv__(self, part):
        return _Latin1Host(self._real / part)

    def iterdir(self):
        return self._real.iterdir()

    def read_text(self, encoding=None):
        return self._real.read_bytes().decode(encoding or "latin-1")


def test_rule_files_read_the_same_whatever_the_locale(monkeypatch):
    """A citation carries a "§": a rule file is UTF-8 on every host, not in the locale's encoding."""
    from importlib import resources

    real = resources.files
    monkeypatch.setattr(resources, "files", lambda package: _Latin1Host(real(package)))
    for name in ("azure-2015", "azure-current"):
        assert "(RFC 7296, 2014-10), §2.23 (an IKE endpoint" in load_ruleset(name).sources["reading-silence"]
