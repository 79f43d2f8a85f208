"""Just enough PromQL reading for tests: which metric names does an expression use?"""

from __future__ import annotations

import re
from typing import Final

_STRING: Final = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_MATCHERS: Final = re.compile(r"\{[^{}]*\}")
_RANGE: Final = re.compile(r"\[[^\[\]]*\]")
_GROUPING: Final = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS: Final = frozenset(
    (
        *("and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"),
        *("offset", "bool", "inf", "nan", "atan2"),
    )
)


def metric_names(expression: str) -> set[str]:
    """Metric names in ``expression``: identifiers that are not functions, keywords,
    label names, label values, durations or numbers."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end() :].lstrip()
        if before.isalnum() or before in "._$" or after.startswith("("):
            continue
        if match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def rule_expressions(rules_text: str) -> dict[str, str]:
    """``{alert or record name: expr}`` of a Prometheus rules file (block or inline exprs)."""
    expressions: dict[str, str] = {}
    lines = rules_text.splitlines()
    name = ""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(("- alert:", "- record:")):
            name = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("expr:"):
            value = stripped.split(":", 1)[1].strip()
            if value in ("|", ">", "|-", ">-"):
                indent = len(line) - len(line.lstrip())
                body = []
                for following in lines[index + 1 :]:
                    if following.strip() and len(following) - len(following.lstrip()) <= indent:
                        break
                    body.append(following.strip())
                value = " ".join(body).strip()
            expressions[name] = value
    return expressions
