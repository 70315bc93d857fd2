"""The README and docs/ say what works: every `fsa` command they show composes into a valid config,
every file they name exists, and nothing points outside the repository."""

import re
import shlex
from pathlib import Path

import pytest
from helpers import compose_config

from fsa.config import validate

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUNS = ("--help", "--hydra-help", "--cfg")
TO_CREATE = ("fsa/conf/local/default.yaml",)  # a user's own file: the documents say how to make it


def commands(text: str) -> list[str]:
    """`fsa ...` commands: lines of fenced code blocks (continuations joined) and inline code spans."""
    found = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("fsa ") or line == "fsa":
                found.append(line)
    found += [span for span in re.findall(r"`(fsa(?: [^`]*)?)`", text) if not span.startswith("fsa-")]
    return [c for c in dict.fromkeys(found) if "..." not in c and "<" not in c and not any(f in c for f in NOT_RUNS)]


# A search space (Optuna's sweeper): `interval(a,b)`, `range(a,b,...)`, `choice(a,...)`, tagged or not.
SEARCH = re.compile(r"^(?:tag\(\w+,\s*)?(?:interval|range|choice)\(([^,)]+)")


def first_of_each_sweep(argument: str) -> str:
    """`key=a,b` of a multirun as its first value: `key=a` (commas inside brackets are a list); a
    search space as its first bound or choice."""
    key, sep, value = argument.partition("=")
    searched = SEARCH.match(value)
    if searched:
        return f"{key}{sep}{searched.group(1).strip()}"
    depth = 0
    for i, char in enumerate(value):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            return f"{key}{sep}{value[:i]}"
    return argument


CASES = [(doc.name, command) for doc in DOCUMENTS for command in commands(doc.read_text())]


def test_the_documents_show_commands():
    assert len(CASES) >= 20  # the parser did find them


@pytest.mark.parametrize("document,command", CASES, ids=[f"{d}: {c}" for d, c in CASES])
def test_every_command_shown_composes_into_a_valid_config(document, command):
    arguments = shlex.split(command)[1:]
    if "-m" in arguments:
        arguments = [first_of_each_sweep(a) for a in arguments if a != "-m"]
    hydra_own = ("hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper")
    arguments = [a for a in arguments if not a.startswith(hydra_own)]
    arguments = [f"~{a.split('=')[0]}" if a.endswith("=null") and "." not in a.split("=")[0] else a for a in arguments]
    validate(compose_config(arguments))


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda d: d.name)
def test_every_file_named_exists_and_nothing_outside_the_repository_is_cited(document):
    text = document.read_text()
    assert "shared/" not in text and "../" not in text
    names = re.findall(r"`((?:docs|fsa|scripts|tests)/[\w./-]+\.(?:md|py|yaml|sh|png|json))`", text)
    missing = [name for name in names if not (ROOT / name).exists() and name not in TO_CREATE]
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)  # relative to the document, as Markdown reads them
    missing += [name for name in pictures if not (document.parent / name).is_file()]
    assert not missing


def test_the_readme_is_for_a_newcomer():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


# A section cited by name: `docs/x.md, 'Section'`, `README, "Section"` (a comment may break the line).
CITED_SECTION = re.compile(r"(README(?:\.md)?|docs/[\w-]+\.md),\s*(?:#\s*)?[\"']([^\"'\n]+)[\"']")
CITING = [
    *DOCUMENTS,
    ROOT / "Makefile",
    *sorted((ROOT / "fsa").rglob("*.py")),
    *sorted((ROOT / "fsa" / "conf").rglob("*.yaml")),
    *sorted((ROOT / "scripts").glob("*.*")),
]


def headings(document: Path) -> list[str]:
    return [line.lstrip("#").strip().lower() for line in document.read_text().splitlines() if line.startswith("#")]


def test_every_section_cited_by_name_exists():
    """ "see README, 'Speed and memory'" must lead somewhere: the named heading exists in that file."""
    cited = [(file, *match) for file in CITING for match in CITED_SECTION.findall(file.read_text())]
    assert len(cited) >= 3  # the pattern does find them
    broken = []
    for file, document, section in cited:
        target = ROOT / ("README.md" if document.startswith("README") else document)
        if not target.is_file() or not any(h.startswith(section.lower()) for h in headings(target)):
            broken.append(f"{file.relative_to(ROOT)} cites {document}, '{section}'")
    assert not broken


def test_help_lists_every_group_the_configuration_page_documents():
    """docs/configuration.md's group table and `fsa --help` (what the README says it prints) agree."""
    from fsa.cli import groups

    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page.split("## Groups", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    listed = [line.split()[0] for line in groups().splitlines()]
    assert documented and sorted(documented) == sorted(listed)
