"""The lock (constraints.txt) agrees with pyproject.toml, and the test environment holds it.

A dependency added to pyproject.toml without regenerating the lock, or a test environment
missing one of the dev extra's packages, fails here, not on a new user's machine.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not a pin (name==version)"
            pins[canonicalize_name(name)] = Version(pinned.strip())
    return pins


def _requirements(extras: set[str]) -> list[Requirement]:
    """The core requirements and those of ``extras``, following modelyard[...] references."""
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in PROJECT["optional-dependencies"][extra]:
            req = Requirement(spec)
            if req.name == PROJECT["name"]:
                todo.extend(req.extras)
            else:
                found.append(req)
    return found


def test_the_lock_pins_every_requirement_of_every_extra_within_its_range() -> None:
    pins = _lock()
    for req in _requirements(set(PROJECT["optional-dependencies"])):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in constraints.txt: regenerate the lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {req}: "
            "regenerate the lock"
        )


@pytest.mark.parametrize("req", _requirements({"dev"}), ids=str)
def test_the_dev_environment_holds_what_it_requires(req: Requirement) -> None:
    if req.marker is not None and not req.marker.evaluate():
        pytest.skip(f"not for this platform: {req.marker}")
    try:
        installed = Version(version(req.name))
    except PackageNotFoundError:
        pytest.fail(f"{req.name} is not installed: pip install -c constraints.txt -e '.[dev]'")
    assert req.specifier.contains(installed, prereleases=True), (
        f"{req.name} {installed} is installed, pyproject wants {req}: "
        "pip install -c constraints.txt -e '.[dev]'"
    )
