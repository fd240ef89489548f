"""Every verdict cites a document a user can open, and the facts behind the rules live in the
project (agent/rules/README.md), not in a folder only the developers have.

A rule naming an unknown source key is refused by the loader itself (agent/verdicts.py, tested in
tests/test_verdicts.py::test_broken_rule_files_are_refused); this checks what the loader does not.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from agent.verdicts import available_rulesets, load_ruleset

ROOT = Path(__file__).parent.parent
FACTS = (ROOT / "agent" / "rules" / "README.md").read_text(encoding="utf-8")
# "Title (date), what the rules take from it: https://address", as the rule files' header says;
# the date and the middle part are optional, the address comes last.
CITATION = re.compile(r"(?P<title>[^(,]+?)(?: \((?P<date>[^()]+)\))?(?:, (?P<what>.+))?: (?P<url>https://\S+)")
RULE_ID = re.compile(r"`((?:2015|current)\.[a-z0-9.-]+)`")


@pytest.fixture(params=available_rulesets())
def ruleset(request):
    return load_ruleset(request.param)


def test_every_source_names_a_document_with_an_https_address(ruleset):
    for key, citation in ruleset.sources.items():
        match = CITATION.fullmatch(citation)
        assert match, f"{ruleset.name} source {key}: not 'Title (date), what: https://address': {citation!r}"
        url = urlsplit(match["url"])
        assert url.scheme == "https" and url.hostname and "." in url.hostname, f"{ruleset.name} source {key}: {url}"
        assert len(match["title"]) >= 10, f"{ruleset.name} source {key}: no title"


def test_every_source_is_in_the_facts_document(ruleset):
    for key, citation in ruleset.sources.items():
        match = CITATION.fullmatch(citation)
        assert match, key
        # Anchors (#site-to-site-connections) point into one document: the document is what must be listed.
        for needle in (match["title"], match["url"].split("#")[0], f"`{key}`"):
            assert needle in FACTS, f"{ruleset.name} source {key}: {needle!r} missing from agent/rules/README.md"


def _audit_citations() -> set[str]:
    """Every string literal of the audit's code: its findings name their source keys in it."""
    import ast

    return {node.value for path in (ROOT / "agent" / "audit").rglob("*.py")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_every_source_is_cited_by_a_rule_or_a_table(ruleset):
    cited = {rule.source for rule in ruleset.rules} | set(ruleset.table_sources.values()) | ruleset.audit.source_keys
    assert set(ruleset.sources) - cited - _audit_citations() == set()


def test_every_rule_is_in_the_facts_document_and_every_id_there_is_a_rule():
    rules = {rule.id for name in available_rulesets() for rule in load_ruleset(name).rules}
    mentioned = set(RULE_ID.findall(FACTS))
    assert rules - mentioned == set(), "rules missing from agent/rules/README.md"
    assert mentioned - rules == set(), "agent/rules/README.md names rules that do not exist"


def test_nothing_the_user_gets_points_outside_the_repository():
    shipped = [ROOT / "README.md", ROOT / "pyproject.toml"] + [
        path for folder in ("agent", "checks") for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts]
    assert len(shipped) > 10
    for path in shipped:
        text = path.read_text(encoding="utf-8")
        for needle in ("../shared", "shared/"):
            assert needle not in text, f"{path.relative_to(ROOT)} mentions {needle!r}"
