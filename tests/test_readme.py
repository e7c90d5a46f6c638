"""The README and docs/ say what the code does: short README, the Quickstart as CI runs it, a real manifest row,
links that lead somewhere, and no mention of the numba version outside the page that measures against it."""

import json
import re

import pytest
from conftest import REPO_ROOT, read_jsonl

README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
QUICKSTART = ["pip install -e . && python generate.py",
              "pip install -e '.[test,dask]' && python -m pytest -q"]
# The numba version is gone; only docs/performance.md names it, as the measured baseline.
GONE = re.compile(r"numba|LOWLIGHT_NO_NUMBA|FAST_MATH", re.IGNORECASE)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def text(path):
    """A file's text."""
    return path.read_text(encoding="utf-8")


def section(doc, title):
    """The body of the '## title' section of a markdown text, up to the next '## ' heading."""
    start = doc.index(f"\n## {title}\n") + len(title) + 5
    end = doc.find("\n## ", start)
    return doc[start:] if end < 0 else doc[start:end]


def code_blocks(doc):
    """[(info string, body)] of the fenced code blocks of a markdown text."""
    return FENCE.findall(doc)


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    """The anchors of a markdown file's headings (outside code blocks)."""
    doc = FENCE.sub("", text(path))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", doc, re.MULTILINE)}


def relative_links(path):
    """(target path, anchor or '') of every relative link of a markdown file, code blocks left out."""
    doc = FENCE.sub("", text(path))
    for target in LINK.findall(doc):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        yield file, anchor


def test_the_readme_is_short():
    assert len(text(README).splitlines()) <= 260


def test_the_quickstart_is_one_block_of_the_two_commands():
    blocks = code_blocks(section(text(README), "Quickstart"))
    assert len(blocks) == 1
    assert blocks[0][1].splitlines() == QUICKSTART


def test_the_readme_row_is_the_row_a_quickstart_run_writes(run_cli, tmp_path):
    rows = [json.loads(body) for info, body in code_blocks(text(README)) if info.strip() == "json"]
    assert len(rows) == 1, "the README shows one manifest row"
    shown = rows[0]
    out = tmp_path / "out"
    # The Quickstart: the repository's config.yaml on the bundled samples; the CPU backend, as the README's row says.
    res = run_cli("--config", REPO_ROOT / "config.yaml", "--set", f"input={REPO_ROOT / 'samples'}",
                  "--set", f"output={out}", "--set", "backend=numpy", "--set", "workers=2", "--quiet", defaults=False)
    assert res.code == 0, res.err
    written = {row["source"]: row for row in read_jsonl(out / "manifest.jsonl")}
    assert shown["source"] in written
    assert shown == written[shown["source"]]


def test_every_relative_link_leads_to_a_file_and_heading():
    broken = []
    for path in [README, *DOCS]:
        for file, anchor in relative_links(path):
            target = (path.parent / file).resolve() if file else path
            if not target.exists():
                broken.append(f"{path.name}: {file}")
            elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                broken.append(f"{path.name}: {file}#{anchor}")
    assert not broken


def test_the_link_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nowhere) [d](https://example.com/x.md)\n"
                    "```\n[e](in-code.md)\n```\n", encoding="utf-8")
    links = list(relative_links(page))
    assert links == [("missing.md", ""), ("", "title"), ("", "nowhere")]
    assert anchors(page) == {"title"}
    assert slug("Resume and `--repair`") == "resume-and---repair"


@pytest.mark.parametrize("path", [README, *(p for p in DOCS if p.name != "performance.md")], ids=lambda p: p.name)
def test_no_mention_of_the_numba_version(path):
    found = sorted({m.group(0) for m in GONE.finditer(text(path))})
    assert not found, f"{path.name} mentions {found}"


def test_performance_keeps_the_benchmark_markers():
    doc = text(REPO_ROOT / "docs" / "performance.md")
    part = section(doc, "The model's C library against the numba version")
    start, end = part.index("<!-- bench_one_model -->"), part.index("<!-- /bench_one_model -->")
    assert start < end and doc.count("<!-- bench_one_model -->") == 1
    assert "python benchmarks/bench_one_model.py --baseline ../baseline --write docs/performance.md" in part
