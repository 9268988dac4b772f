"""Keep docs/architecture.md true: its layer diagram and module list are generated from the code.

    python tools/architecture.py --write   # regenerate the generated part of docs/architecture.md
    python tools/architecture.py --check   # exit 1 when the document no longer matches the code (a test runs this)

The layers come from the import-linter contract in pyproject.toml (the one `make lint` enforces), the modules from
the package-dir mapping, and each module's line from the first line of its docstring. Nothing is imported.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- generated: tools/architecture.py --write -->", "<!-- end of generated part -->"


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    return (doc or "").strip().splitlines()[0].strip() if doc else "(no docstring)"


def generated() -> str:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    layers = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")["layers"]
    mapping = config["tool"]["setuptools"]["package-dir"]
    lines = ["### Layers (import-linter enforces them: an arrow may only point down)", "", "```"]
    for n, layer in enumerate(layers):
        lines.append(f"  {layer.replace('llmrec.', '')}")
        if n < len(layers) - 1:
            lines.append("      │")
            lines.append("      ▼")
    lines += ["```", "", "### Modules", ""]
    for package, folder in sorted(mapping.items(), key=lambda kv: (kv[0] != "llmrec", kv[0])):
        lines += [f"**`{package}`** (`{folder}/`)", ""]
        for path in sorted((ROOT / folder).glob("*.py")):
            if path.name == "__init__.py":
                continue
            count = len(path.read_text().splitlines())
            lines.append(f"- `{path.stem}` ({count} lines): {_summary(path)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _split(text: str) -> tuple[str, str, str]:
    if START not in text or END not in text:
        raise SystemExit(f"{DOC} has no generated part ({START} ... {END})")
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    return head, body, tail


def _without_counts(text: str) -> str:
    """Line counts change with every edit; the check is about which modules exist and what they say they are."""
    import re

    return re.sub(r" \(\d+ lines\)", "", text)


def main(argv: list[str]) -> int:
    head, body, tail = _split(DOC.read_text())
    fresh = generated()
    if "--write" in argv:
        DOC.write_text(f"{head}{START}\n{fresh}{END}{tail}")
        return 0
    if _without_counts(body.strip()) != _without_counts(fresh.strip()):
        print(f"{DOC.relative_to(ROOT)} is out of date with the code: run `python tools/architecture.py --write`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
