"""The test suite's own layout rules, checked on its source (no imports run).

* Test modules and conftest files share code only through ``tests/helpers/``: none
  imports another test module, another directory's conftest, or anything in ``tests``
  outside ``tests.helpers`` (relative imports included).
* Every directory holding tests is a package, so pytest imports each test module under
  its full dotted name (``tests.storage.test_storage_cases``), from the repository root.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
HELPERS = TESTS / "helpers"


def _imported(path: Path) -> list[str]:
    """The modules ``path`` imports, relative ones resolved to ``tests.…`` names."""
    package = ".".join(path.relative_to(TESTS.parent).parent.parts)
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.append(".".join([*base, *([node.module] if node.module else [])]))
            else:
                names.append(node.module or "")
    return names


def test_test_modules_share_code_only_through_helpers() -> None:
    offences = [
        f"{path.relative_to(TESTS.parent)} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        if HELPERS not in path.parents
        for name in _imported(path)
        if (name == "tests" or name.startswith("tests."))
        and name != "tests.helpers"
        and not name.startswith("tests.helpers.")
    ]
    assert not offences, "share it through tests/helpers/ instead:\n" + "\n".join(offences)


def test_helpers_import_no_test_module() -> None:
    offences = [
        f"{path.relative_to(TESTS.parent)} imports {name}"
        for path in sorted(HELPERS.rglob("*.py"))
        for name in _imported(path)
        if name.startswith("tests.") and not name.startswith("tests.helpers")
    ]
    assert not offences, "\n".join(offences)


def test_every_test_directory_is_a_package() -> None:
    directories = {p.parent for p in TESTS.rglob("test_*.py")} | {HELPERS}
    missing = sorted(
        str(d.relative_to(TESTS.parent)) for d in directories if not (d / "__init__.py").is_file()
    )
    assert not missing, f"add __init__.py to: {missing}"
