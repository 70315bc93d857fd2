"""fsa's modules form layers, and no module imports one above its own: the algorithm core knows
nothing of configs, files or loggers, and the command line loads no ML stack before it needs it."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fsa"
# Lowest first. A module may import its own layer and those below.
LAYERS = (
    ("fsa", "fsa.errors", "fsa.hub", "fsa.weights"),
    # the networks, how images reach an extractor, and what is measured on images (pure: the slant
    # normaliser of a digits CNN reads the same moments as the slant attribute)
    ("fsa.diffusion", "fsa.extractors", "fsa.attributes"),
    # targets; Algorithm 1; an image's seeds; phi
    ("fsa.data", "fsa.guidance", "fsa.embedding", "fsa.representation"),
    # run folder, checkpoints, W&B; speed options; judging images; pictures; the task registry (torch-free)
    ("fsa.tracking", "fsa.speed", "fsa.evaluation", "fsa.pictures", "fsa.tasks"),
    ("fsa.config",),
    ("fsa.job",),  # what every task's job does around its work
    ("fsa.tasks.guide", "fsa.tasks.embed", "fsa.tasks.represent"),  # the tasks: found by the registry at run time
    ("fsa.cli", "fsa.report", "fsa.download", "fsa.__main__"),
)


def layer(module: str) -> int:
    """The layer of the longest matching prefix."""
    matches = [
        (len(prefix), i)
        for i, names in enumerate(LAYERS)
        for prefix in names
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def imports(path: Path) -> set[str]:
    """Every fsa module a file imports, at the top, in functions or under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "fsa"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fsa":
            found.add(node.module)
    return found


def test_no_module_imports_upward():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        upward += [f"{module} -> {name}" for name in imports(path) if layer(name) > layer(module)]
    assert not upward


def test_the_command_line_loads_no_ml_stack():
    """`fsa --help` and a rejected override answer at once: the config and the CLI import no torch."""
    heavy = ("torch", "diffusers", "transformers", "open_clip", "timm")
    code = f"import sys, fsa.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
