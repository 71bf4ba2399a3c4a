"""Reports people read in the morning: one target x scenario grid from any number of JUnit files, and the grid a
pytest run prints at its end.

A nightly matrix runs as one CI job per target (or target x image); each writes
plain JUnit XML whose test cases carry the plugin's properties (target, image,
profile, readiness times). This module reads those files back, joins them into
one grid, and writes it as Markdown (for ``$GITHUB_STEP_SUMMARY`` or a GitLab
page), as a self-contained HTML page, and as one merged JUnit file; ``compare``
says what changed from one night to the next.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from .errors import CernvmError

TARGET = "cernvm_target"
"""The test case property naming the target (the plugin sets it on every test that used an instance)."""
SCREENSHOT_PROPERTY = "cernvm_screenshot"
"""A failing test case's property naming the PNG of its instance's screen (one per instance)."""
SCREEN_TEXT_PROPERTY = "cernvm_screen_text"
"""A failing test case's property holding the text of its instance's first virtual console."""
EMBED_LIMIT = 512 * 1024
"""Screenshots up to this size go into the HTML page itself (data: URI); larger ones are linked."""
OUTCOMES = ("failed", "error", "passed", "skipped")
MARK = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "skipped": "skip"}


@dataclass(frozen=True)
class Cell:
    """One scenario on one column (target, or target x image): its outcome and why."""

    scenario: str
    column: str
    outcome: str
    message: str = ""
    detail: str = ""
    properties: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    source: str = ""
    screenshots: tuple[Path, ...] = field(default=(), compare=False, hash=False)
    """PNGs of the instances' screens when the test failed (relative paths resolved against the JUnit file's)."""
    screen_texts: tuple[str, ...] = field(default=(), compare=False, hash=False)

    @property
    def reason(self) -> str:
        """What went wrong (or why it was skipped): the first paragraph that says it, whole (a message's advice
        comes after its finding and must not be cut off), not the test code pytest quotes around it."""
        kept: list[str] = []
        for line in (self.message or self.detail).splitlines():
            line = line.strip()
            if not line:
                if kept:
                    break
                continue
            if line.startswith(("def ", "@", ">", "Traceback ", 'File "')):
                if kept:
                    break
                continue
            kept.append(line.removeprefix("E ").strip())
        text = " ".join(kept)
        return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


REASON_LIMIT = 2000
"""Characters of a reason shown in a report (a runaway message is cut here, with an ellipsis)."""
COLUMN_FACTS = (("image", "cernvm_image"), ("profile", "cernvm_profile"), ("verified on", "cernvm_verification"))
"""What each grid column names under its title: the image, the profile and the verification level."""


def column_facts(cells: Sequence[Cell]) -> dict[str, dict[str, str]]:
    """Per column: its image, profile and verification level as its cells' properties give them (the first cell
    that has each; a skipped cell that booted nothing may have none)."""
    found: dict[str, dict[str, str]] = {}
    for cell in cells:
        facts = found.setdefault(cell.column, {})
        for label, key in COLUMN_FACTS:
            if cell.properties.get(key) and label not in facts:
                facts[label] = cell.properties[key]
    return found


def column_of(properties: dict[str, str]) -> str | None:
    """The grid column of a test case: its target, or "target / image" for a target with several images."""
    target = properties.get(TARGET)
    if not target:
        return None
    image = properties.get("cernvm_image_label")
    return f"{target} / {image}" if image else target


def read(paths: Iterable[Path]) -> list[Cell]:
    """Every target test case of the JUnit files; an unreadable file is one clear error naming it."""
    cells = []
    for path in paths:
        try:
            root = ElementTree.parse(path).getroot()
        except (OSError, ElementTree.ParseError) as e:
            raise CernvmError(f"{path}: not a readable JUnit XML file: {e}") from None
        for case in root.iter("testcase"):
            pairs = [(p.get("name", ""), p.get("value", "")) for p in case.iterfind("properties/property")]
            properties = dict(pairs)
            shots = tuple(Path(path).parent / v for k, v in pairs if k == SCREENSHOT_PROPERTY and v)
            texts = tuple(v for k, v in pairs if k == SCREEN_TEXT_PROPERTY)
            column = column_of(properties)
            if column is None:
                continue
            outcome, message, detail = "passed", "", ""
            for tag in ("failure", "error", "skipped"):
                found = case.find(tag)
                if found is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    message, detail = found.get("message", ""), found.text or ""
                    break
            name = re.sub(r"\[.*\]$", "", case.get("name", ""))
            module = (case.get("classname") or "").rsplit(".", 1)[-1]
            scenario = f"{module}::{name}" if module else name
            cells.append(Cell(scenario, column, outcome, message, detail, properties, str(path), shots, texts))
    return cells


def grid(cells: Sequence[Cell]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    """Columns in first-seen order, scenarios with failures first, and the cell at each (scenario, column)."""
    columns = list(dict.fromkeys(c.column for c in cells))
    at = {(c.scenario, c.column): c for c in cells}
    failing = {c.scenario for c in cells if c.outcome in ("failed", "error")}
    scenarios = sorted({c.scenario for c in cells}, key=lambda s: (s not in failing, s))
    return columns, scenarios, at


def failures(cells: Sequence[Cell]) -> list[Cell]:
    return [c for c in cells if c.outcome in ("failed", "error")]


def summary_line(cells: Sequence[Cell]) -> str:
    counts = {o: sum(c.outcome == o for c in cells) for o in OUTCOMES}
    return ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "no target tests"


def cells_of(stats: Mapping[str, Sequence[Any]]) -> list[Cell]:
    """The target tests of a pytest run as cells, from its terminal reporter's reports by outcome (``stats``); a
    test reported twice (passed, then an error in teardown) has a cell for each, the error last."""
    cells = []
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in stats.get(outcome, []):
            column = column_of(dict(getattr(report, "user_properties", [])))
            if column is not None:
                cells.append(Cell(report.nodeid.split("[", 1)[0], column, outcome))
    return cells


def text_grid(cells: Sequence[Cell]) -> list[str]:
    """The target x scenario grid as lines for the terminal: scenarios by name, columns as first seen, each cell's
    last outcome (``-``: the scenario did not run there)."""
    if not cells:
        return []
    columns = list(dict.fromkeys(c.column for c in cells))
    outcome = {(c.scenario, c.column): c.outcome.upper() for c in cells}
    scenarios = sorted({c.scenario for c in cells})
    width = max(len(s) for s in scenarios)
    sizes = [max(len(column), len("SKIPPED")) for column in columns]
    lines = [" " * width + "  " + "  ".join(f"{t:<{size}}" for t, size in zip(columns, sizes, strict=True))]
    for scenario in scenarios:
        row = "  ".join(f"{outcome.get((scenario, t), '-'):<{size}}" for t, size in zip(columns, sizes, strict=True))
        lines.append(f"{scenario:<{width}}  {row}".rstrip())
    return lines


def kept_lines(kept: Iterable[Mapping[str, str]]) -> list[str]:
    """How to log in to and remove each instance a run kept (``name``, ``target``, ``login``)."""
    lines = []
    for entry in kept:
        lines += [
            f"{entry['name']} ({entry['target']}):",
            f"  log in:  {entry['login']}",
            f"  remove:  cernvm-fixtures down {entry['name']}",
        ]
    return lines


MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$&!])")
"""Characters that start Markdown or HTML markup inline (emphasis, code, links and images, raw HTML and entities,
table cells, strikethrough, GitHub's math); any ASCII punctuation may be backslash-escaped in CommonMark."""


def md_text(text: str) -> str:
    """``text`` (a test's reason, a target name: anything a JUnit file holds) as literal Markdown on one line:
    the step summary shows it as written, never as a link, an image, HTML or a broken table row."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def md_code(text: str, cell: bool = False) -> str:
    """``text`` as an inline code span on one line: a fence longer than any run of backticks in it (nothing ends
    the span early); in a table ``cell``, ``|`` escaped (GFM splits cells before it parses code spans)."""
    text = " ".join(text.splitlines())
    if cell:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown(cells: Sequence[Cell]) -> str:
    """The grid as a Markdown page: failures first, each with its one-line reason (every name and reason escaped:
    a JUnit file's text must not become markup in ``$GITHUB_STEP_SUMMARY``)."""
    columns, scenarios, at = grid(cells)
    lines = [f"# cernvm-fixtures: {summary_line(cells)}", ""]
    failed = failures(cells)
    if failed:
        lines += ["## Failures", ""]
        lines += [
            f"- **{md_text(c.column)}** {md_code(c.scenario)}: {md_text(c.reason or c.outcome)}"
            + "".join(f" (screenshot: {md_code(str(shot))})" for shot in c.screenshots)
            for c in failed
        ]
        lines.append("")
    header = "| scenario | " + " | ".join(md_text(c) for c in columns) + " |"
    lines += ["## Target x scenario", "", header, "|---|" + "---|" * len(columns)]
    for scenario in scenarios:
        row = [MARK[at[scenario, col].outcome] if (scenario, col) in at else "-" for col in columns]
        lines.append(f"| {md_code(scenario, cell=True)} | " + " | ".join(row) + " |")
    facts = column_facts(cells)
    lines += ["", "## Columns", "", "| column | " + " | ".join(label for label, _ in COLUMN_FACTS) + " |"]
    lines.append("|---|" + "---|" * len(COLUMN_FACTS))
    for column in columns:
        known = facts.get(column, {})
        lines.append(
            f"| {md_text(column)} | " + " | ".join(md_text(known.get(label, "?")) for label, _ in COLUMN_FACTS) + " |"
        )
    skipped: dict[tuple[str, str], list[str]] = {}
    for cell in cells:
        if cell.outcome == "skipped":
            skipped.setdefault((cell.column, cell.reason or "no reason given"), []).append(cell.scenario)
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [
            f"- **{md_text(column)}** {', '.join(md_code(s) for s in names)}: {md_text(reason)}"
            for (column, reason), names in skipped.items()
        ]
    return "\n".join(lines) + "\n"


STYLE = """
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em}
td.passed{background:#d7f5d7}td.failed,td.error{background:#f8d0d0}td.skipped{background:#eee;color:#666}
details pre{white-space:pre-wrap;max-width:60em;font-size:.85em}svg text{font-size:11px}
img.screen{max-width:48em;border:1px solid #999;display:block;margin:.3em 0}
"""


def _timings(cells: Sequence[Cell]) -> str:
    """Readiness seconds per column as a small bar chart (inline SVG: the page needs nothing else)."""
    per: dict[str, float] = {}
    for cell in cells:
        value = cell.properties.get("cernvm_ready_s")
        if value:
            try:
                per.setdefault(cell.column, float(value))
            except ValueError:
                continue
    if not per:
        return ""
    most = max(per.values()) or 1.0
    rows = []
    for i, (column, seconds) in enumerate(per.items()):
        width = 300 * seconds / most
        rows.append(
            f'<text x="0" y="{i * 20 + 14}">{html.escape(column)}</text>'
            f'<rect x="160" y="{i * 20 + 3}" width="{width:.1f}" height="14" fill="#4a7"/>'
            f'<text x="{165 + width:.1f}" y="{i * 20 + 14}">{seconds:.1f} s</text>'
        )
    return (
        f'<h2>Boot to ready</h2><svg id="timings" width="560" height="{len(per) * 20 + 6}">' + "".join(rows) + "</svg>"
    )


def _screens(cell: Cell, base: Path | None, embed_limit: int) -> str:
    """A failing cell's screenshots inline (small ones as data: URIs, so the page stays self-contained; larger
    ones linked, relative to ``base``, where the page is written) and the screen text under them."""
    parts = []
    for shot in cell.screenshots:
        try:
            size = shot.stat().st_size
        except OSError:
            parts.append(f"<p>screenshot {html.escape(str(shot))}: not found</p>")
            continue
        if size <= embed_limit:
            source = "data:image/png;base64," + base64.b64encode(shot.read_bytes()).decode()
        elif base is not None:
            source = html.escape(os.path.relpath(shot.resolve(), base.resolve()))
        else:
            source = html.escape(shot.resolve().as_uri())
        title = html.escape(str(shot))
        parts.append(f'<img class="screen" src="{source}" alt="screen of the instance: {title}" title="{title}">')
    parts += [f'<pre class="screen-text">{html.escape(text)}</pre>' for text in cell.screen_texts]
    return "".join(parts)


def to_html(
    cells: Sequence[Cell], comparison: str = "", base: Path | None = None, embed_limit: int = EMBED_LIMIT
) -> str:
    """A self-contained page: the grid, every failing cell opening its message, screenshot, console tail and login.

    ``base``: the directory the page is written to, for links to screenshots too large to embed.
    """
    columns, scenarios, at = grid(cells)
    facts = column_facts(cells)

    def heading(column: str) -> str:
        known = facts.get(column, {})
        lines = "".join(
            f"<br><small>{label}: {html.escape(known.get(label, '?'))}</small>" for label, _ in COLUMN_FACTS
        )
        return f"<th>{html.escape(column)}{lines}</th>"

    head = "".join(heading(c) for c in columns)
    body = []
    for scenario in scenarios:
        tds = []
        for column in columns:
            cell = at.get((scenario, column))
            if cell is None:
                tds.append("<td>-</td>")
            elif cell.outcome in ("failed", "error"):
                tds.append(
                    f'<td class="{cell.outcome}"><details><summary>{MARK[cell.outcome]}</summary>'
                    f"<p>{html.escape(cell.reason)}</p>{_screens(cell, base, embed_limit)}"
                    f"<pre>{html.escape(cell.detail or cell.message)}</pre></details></td>"
                )
            elif cell.outcome == "skipped":
                reason = html.escape(cell.reason or "no reason given")
                tds.append(f'<td class="skipped">{MARK["skipped"]}<br><small>{reason}</small></td>')
            else:
                tds.append(f'<td class="{cell.outcome}">{MARK[cell.outcome]}</td>')
        body.append(f"<tr><th><code>{html.escape(scenario)}</code></th>{''.join(tds)}</tr>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cernvm-fixtures report</title>"
        f"<style>{STYLE}</style></head><body><h1>cernvm-fixtures: {html.escape(summary_line(cells))}</h1>"
        f"{comparison}<table id='grid'><tr><th>scenario</th>{head}</tr>{''.join(body)}</table>"
        f"{_timings(cells)}</body></html>\n"
    )


def merge_junit(paths: Sequence[Path], out: Path) -> None:
    """One JUnit file holding every job's test suites, unchanged (so each cell keeps its properties)."""
    root = ElementTree.Element("testsuites")
    for path in paths:
        top = ElementTree.parse(path).getroot()
        root.extend(top.iter("testsuite") if top.tag == "testsuites" else [top])
    ElementTree.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)


@dataclass(frozen=True)
class Comparison:
    """What changed between two runs of the same matrix."""

    new_failures: list[Cell]
    fixed: list[Cell]
    still_failing: list[Cell]
    appeared: list[Cell]
    vanished: list[tuple[str, str]]

    def text(self) -> str:
        parts = []
        for title, items in (
            ("new failures", self.new_failures),
            ("fixed", self.fixed),
            ("still failing", self.still_failing),
            ("new cells", self.appeared),
        ):
            parts.append(f"{title}: {len(items)}")
            parts += [f"  {c.column}  {c.scenario}" + (f": {c.reason}" if c.outcome != "passed" else "") for c in items]
        parts.append(f"gone: {len(self.vanished)}")
        parts += [f"  {column}  {scenario}" for scenario, column in self.vanished]
        return "\n".join(parts) + "\n"

    def html(self) -> str:
        def items(cells: list[Cell]) -> str:
            return "".join(f"<li>{html.escape(c.column)} <code>{html.escape(c.scenario)}</code></li>" for c in cells)

        return (
            f"<h2>Since the previous run</h2><ul id='comparison'><li>new failures: {len(self.new_failures)}"
            f"<ul>{items(self.new_failures)}</ul></li><li>fixed: {len(self.fixed)}<ul>{items(self.fixed)}</ul></li>"
            f"<li>still failing: {len(self.still_failing)}</li></ul>"
        )


def compare(old: Sequence[Cell], new: Sequence[Cell]) -> Comparison:
    bad = ("failed", "error")
    before = {(c.scenario, c.column): c for c in old}
    after = {(c.scenario, c.column): c for c in new}
    return Comparison(
        new_failures=[c for k, c in after.items() if c.outcome in bad and k in before and before[k].outcome not in bad]
        + [c for k, c in after.items() if c.outcome in bad and k not in before],
        fixed=[c for k, c in after.items() if c.outcome == "passed" and k in before and before[k].outcome in bad],
        still_failing=[c for k, c in after.items() if c.outcome in bad and k in before and before[k].outcome in bad],
        appeared=[c for k, c in after.items() if k not in before],
        vanished=[k for k in before if k not in after],
    )
