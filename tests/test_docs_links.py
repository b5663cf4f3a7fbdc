"""Every citation in the repository leads somewhere inside it.

Code, tests, benches and docs cite ``docs/<file>.md#<anchor>`` (or a paper's equation/figure). This checks
that each cited file exists and each anchor is a heading of that file (GitHub's anchor rules), that the
relative links between documents resolve the same way, and that nothing cites a text the reader does not
have: a bare section sign, a specification file, or one of our own issue numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()
SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".cfg", ".yaml", ".yml", ".html", ".js", ".css"}
SKIP_PARTS = {"vendor", "__pycache__", ".venv", "node_modules"}

# "docs/methods/segearth_ov.md#global-bias-alleviation" anywhere in text
DOC_REF = re.compile(r"(?<![\w./-])(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
# [text](target) in Markdown
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
FORBIDDEN = {
    "a section sign (cite docs/...md#anchor instead)": re.compile("\u00a7"),
    "a specification file": re.compile(r"\bspec/[\w-]+\.md"),
    "a specification by name": re.compile(r"(?:SegEarth-OV3?|CoIDO) spec\b|\bthe spec\b|\bspec's\b"),
    "an issue number of ours": re.compile(r"\bissues? \d+"),
}


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link keeps its text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    """Every anchor of a Markdown file, with GitHub's -1, -2 ... suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if in_fence or not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def text_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for top in ("src", "bench", "tests", "docs", "examples", "qgis"):
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and p.suffix in SUFFIXES and not SKIP_PARTS & set(p.parts) and p.resolve() != THIS:
                files.append(p)
    return [p for p in files if p.exists()]


def _check(target: Path, anchor: str | None, where: str, problems: list[str]) -> None:
    if not target.is_file():
        problems.append(f"{where}: no file {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
    elif anchor and anchor not in anchors_of(target):
        problems.append(f"{where}: no heading #{anchor} in {target.relative_to(ROOT)}")


def test_github_anchor_rules_on_hand_computed_headings():
    assert github_anchor("Global bias alleviation") == "global-bias-alleviation"
    assert github_anchor("`frugalvl select report WORK`") == "frugalvl-select-report-work"
    assert github_anchor("5. Benches and the GPU check") == "5-benches-and-the-gpu-check"
    assert github_anchor("Synonyms, argmax and background") == "synonyms-argmax-and-background"
    assert github_anchor("Streaming and work-folder size at 665K") == "streaming-and-work-folder-size-at-665k"
    assert github_anchor("`frugalvl select finetune SUBSET.json`") == "frugalvl-select-finetune-subsetjson"


def test_repeated_headings_get_numbered_anchors(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("# Title\n## Notes\n```\n## not a heading\n```\n## Notes\n")
    assert anchors_of(doc) == {"title", "notes", "notes-1"}


def test_every_cited_docs_anchor_exists():
    problems: list[str] = []
    count = 0
    for path in text_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for m in DOC_REF.finditer(line):
                count += 1
                _check(ROOT / m.group(1), m.group(2), f"{path.relative_to(ROOT)}:{lineno}", problems)
    assert count > 50, "the scan found almost no citations: is the pattern broken?"
    assert not problems, "\n".join(problems)


def test_relative_links_between_documents_resolve():
    problems: list[str] = []
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in docs:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in MD_LINK.finditer(line):
                target = m.group(1)
                if re.match(r"^[a-z][\w+.-]*:", target):  # http:, mailto:, ...
                    continue
                file_part, _, anchor = target.partition("#")
                resolved = (path.parent / file_part).resolve() if file_part else path
                if resolved.suffix == ".md" or not file_part:
                    _check(resolved, anchor or None, f"{path.relative_to(ROOT)}:{lineno}", problems)
                elif not resolved.exists():
                    problems.append(f"{path.relative_to(ROOT)}:{lineno}: no file {file_part}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("kind", sorted(FORBIDDEN))
def test_nothing_cites_a_text_the_reader_does_not_have(kind):
    pattern = FORBIDDEN[kind]
    hits = [
        f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:120]}"
        for path in text_files()
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, f"{kind}:\n" + "\n".join(hits)
