"""Fleet's one licence, Apache-2.0, is the same in every artifact: the LICENSE file at the root
(and the copy each distribution ships in its wheel and sdist), the SPDX expression of every
pyproject.toml, the Debian package's machine-readable copyright file and the OCI label of every
container image."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.dockerfile import REPO

SPDX = "Apache-2.0"
PYPROJECTS = sorted(
    [REPO / "pyproject.toml", *REPO.glob("packages/*/pyproject.toml"),
     *REPO.glob("services/*/pyproject.toml")]
)  # fmt: skip


def test_license_file_is_the_apache_2_0_text() -> None:
    """LICENSE at the root is the Apache License 2.0, whole (its title and its last section)."""
    text = (REPO / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply" in text


def test_every_pyproject_declares_the_same_spdx_expression() -> None:
    """Each pyproject.toml (the workspace root and every member) says `license = "Apache-2.0"`,
    and each member ships a LICENSE identical to the root's (hatchling puts it in the wheel)."""
    assert len(PYPROJECTS) == 6
    root_text = (REPO / "LICENSE").read_bytes()
    for path in PYPROJECTS:
        project = tomllib.loads(path.read_text())["project"]
        assert project.get("license") == SPDX, path
        assert (path.parent / "LICENSE").read_bytes() == root_text, path


def test_debian_copyright_is_machine_readable_and_says_apache() -> None:
    """The .deb's copyright file (DEP-5) gives Apache-2.0 for Files: * and for Fleet's own
    packages, with a stand-alone paragraph for every licence it names."""
    text = (REPO / "deploy/debian/copyright").read_text()
    assert text.startswith(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    )
    paragraphs = [dict(re.findall(r"^([\w-]+):\s*(.*)$", p, re.M)) for p in text.split("\n\n")]
    files = {p["Files"]: p["License"] for p in paragraphs if "Files" in p}
    assert files["*"] == SPDX
    assert files["opt/fleet-pusher/lib/python3.11/site-packages/pusher/*"] == SPDX
    standalone = {p["License"] for p in paragraphs if "Files" not in p and "License" in p}
    assert set(files.values()) <= standalone


def test_every_image_is_labelled_with_the_licence() -> None:
    """Every deploy/*.Dockerfile labels its final stage org.opencontainers.image.licenses=Apache-2.0."""
    dockerfiles = sorted(REPO.glob("deploy/*.Dockerfile"))
    assert dockerfiles
    for path in dockerfiles:
        final_stage = path.read_text().rsplit("\nFROM ", 1)[-1]
        assert f'org.opencontainers.image.licenses="{SPDX}"' in final_stage, path
