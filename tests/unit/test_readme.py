"""The README's configuration reference lists every field of every section with its real default.

The reference is the "## Configuration" section of README.md: Markdown table rows whose first cell
is a dotted key in backticks (`` `train.steps` ``) and whose second is the default as YAML in
backticks (`` `3000` ``, `` `null` ``, `` `[0.9, 0.98]` ``). A field added to, renamed in or
removed from a config dataclass, or a default changed there, fails this test until the README
says the same.
"""
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from transduce.config import Config

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\s*\|\s*`(?P<section>\w+)\.(?P<key>\w+)`\s*\|\s*`(?P<default>[^`]*)`\s*\|")
SECTIONS = [f.name for f in dataclasses.fields(Config)]


def configuration_section(text: str) -> str:
    """The text from the "## Configuration" heading to the next second-level heading."""
    start = re.search(r"^## Configuration\s*$", text, re.MULTILINE)
    assert start, "README.md has no '## Configuration' section"
    end = re.search(r"^## ", text[start.end():], re.MULTILINE)
    return text[start.end(): start.end() + end.start() if end else len(text)]


def documented() -> dict[str, dict[str, str]]:
    """{section: {key: default as written}} from the reference tables."""
    rows: dict[str, dict[str, str]] = {}
    for line in configuration_section(README.read_text(encoding="utf-8")).splitlines():
        match = ROW.match(line)
        if match:
            keys = rows.setdefault(match["section"], {})
            assert match["key"] not in keys, f"{match['section']}.{match['key']} is listed twice"
            keys[match["key"]] = match["default"]
    return rows


def declared(section: str) -> dict[str, object]:
    """{key: default} of one section's dataclass."""
    cls = type(getattr(Config(), section))
    return {f.name: f.default for f in dataclasses.fields(cls)}


def same_default(written: str, default: object) -> bool:
    value = yaml.safe_load(written)
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default) and value == default
    if isinstance(default, float):  # 1.0 may be written 1
        return isinstance(value, (int, float)) and float(value) == default
    return type(value) is type(default) and value == default


def test_the_reference_covers_every_section():
    assert list(documented()) == SECTIONS


@pytest.mark.parametrize("section", SECTIONS)
def test_the_reference_lists_each_field_once(section):
    readme, code = set(documented().get(section, {})), set(declared(section))
    assert not code - readme, f"missing from README.md's {section} table: {sorted(code - readme)}"
    assert not readme - code, f"in README.md's {section} table but not in the config: {sorted(readme - code)}"


@pytest.mark.parametrize("section", SECTIONS)
def test_the_reference_gives_the_real_defaults(section):
    readme, code = documented().get(section, {}), declared(section)
    wrong = {f"{section}.{key}": (readme[key], code[key])
             for key in readme.keys() & code.keys() if not same_default(readme[key], code[key])}
    assert not wrong, f"README.md's defaults (written, real) differ: {wrong}"


def test_the_reference_speaks_of_the_sections_it_has():
    text = configuration_section(README.read_text(encoding="utf-8"))
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}
    assert f"{words[len(SECTIONS)]} sections" in text
