"""Where the Debian corpora packages live, and the error for one that is not installed.

Usage::

    paths = DebianPaths(pydoc_dir="/opt/doc/_sources")     # override a non-standard location
    raise missing_package(str(path), "wordnet-base")         # a WorldError naming the apt-get fix

Shared by every extractor (`corpora`, `pydoc_corpus`), so that they import this small module
instead of each other: `corpora.extract_all` calls `pydoc_corpus.extract_pydoc`, and the pydoc
extractor needs only the paths and the error, not the other corpora.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.world.errors import WorldError


@dataclass(frozen=True)
class DebianPaths:
    """Where the Debian packages put their files; override for a non-standard root."""

    bible_program: str = "bible"
    wordnet_dir: str = "/usr/share/wordnet"
    fortunes_dir: str = "/usr/share/games/fortunes"
    dictd_dir: str = "/usr/share/dictd"
    pydoc_dir: str = "/usr/share/doc/python3.11/html/_sources"
    # The .deb of r-cran-janeaustenr (apt-get download); None = look in cwd and /tmp.
    austen_deb: str | None = None


def missing_package(what: str, package: str) -> WorldError:
    """The error for `what` (a file, a directory, a program) that Debian `package` installs."""
    return WorldError(
        f"{what} not found: install the Debian package with "
        f"`apt-get install -y --no-install-recommends {package}` (root), or use the committed "
        "data (`load_world()` needs no packages)."
    )
