"""The package's papers: LICENSE, CITATION.cff and CHANGELOG.md exist, say what setup.cfg says, and agree on the
version."""

from __future__ import annotations

import configparser
import datetime
import importlib
import re

import yaml

import bench
from tests.conftest import REPO

CFF_REQUIRED = ("cff-version", "message", "title", "authors")  # CFF 1.2.0's required keys


def metadata(key: str) -> str:
    """A key of setup.cfg's [metadata]."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config["metadata"][key].strip()


def package_version() -> str:
    """setup.cfg's `version`: a literal, or ``attr: module.name`` read from the module."""
    value = metadata("version")
    if value.startswith("attr:"):
        module, _, name = value.removeprefix("attr:").strip().rpartition(".")
        return str(getattr(importlib.import_module(module), name))
    return value


def citation() -> dict:
    return yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))


def test_the_version_is_one_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", package_version())
    assert bench.__version__ == package_version()


def test_license_is_the_apache_license_setup_cfg_names():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole text, not a stub
    assert metadata("license") == "Apache-2.0"


def test_citation_cff():
    cff = citation()
    for key in CFF_REQUIRED:
        assert cff.get(key), f"CITATION.cff: {key} missing"
    assert cff["cff-version"] == "1.2.0"
    assert cff["title"] == "ntm-bench" and cff["type"] == "software"
    assert all(author.get("name") or author.get("family-names") for author in cff["authors"])
    assert str(cff["version"]) == package_version()
    assert cff["license"] == metadata("license")
    assert datetime.date.fromisoformat(str(cff["date-released"]))


def test_citation_references_the_reproduced_papers():
    references = {ref["title"]: ref for ref in citation()["references"]}
    assert set(references) == {"Neural Turing Machines",
                               "Hybrid computing using a neural network with dynamic external memory",
                               "Implementing Neural Turing Machines"}
    for ref in references.values():
        assert ref["type"] and ref["authors"] and isinstance(ref["year"], int)
    assert references["Neural Turing Machines"]["year"] == 2014
    assert "1410.5401" in references["Neural Turing Machines"]["url"]
    nature = references["Hybrid computing using a neural network with dynamic external memory"]
    assert (nature["journal"], nature["volume"], nature["year"]) == ("Nature", 538, 2016)
    icann = references["Implementing Neural Turing Machines"]
    assert icann["year"] == 2018 and "1807.08518" in icann["url"] and "ICANN 2018" in icann["conference"]["name"]
    assert [a["family-names"] for a in icann["authors"]] == ["Collier", "Beel"]


def test_changelog_has_the_current_version_released_when_the_citation_says():
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## Unreleased" in text
    found = re.search(rf"^## \[?{re.escape(package_version())}\]? - (\d{{4}}-\d{{2}}-\d{{2}})$", text, flags=re.M)
    assert found, f"CHANGELOG.md has no section for version {package_version()}"
    assert found.group(1) == str(citation()["date-released"])
