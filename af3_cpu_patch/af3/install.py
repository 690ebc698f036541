"""Find the importable ``alphafold3`` and tell which AF3 it is, without importing it.

AF3 is not on PyPI: users install DeepMind's GitHub source, whose package
metadata (and ``alphafold3/version.py``) says "3.0.2" for v3.0.2, v3.0.3 and
v3.0.4 alike.  So the version comes first from a fingerprint of one source
file that changed in every release, then from metadata.  PyPI's
``alphafold3`` is an unrelated placeholder: it has no diffusion head.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import pathlib
import re

# sha256 of src/alphafold3/common/folding_input.py at each DeepMind release tag
# (the file differs in every release).  Only digests, no AF3 code.
FINGERPRINTS = {
    "2f92defd476bb744bb49999278711f0e9e0825f042e9b7de04124a0593371d8d": "3.0.0",
    "3f432cc5a258228a36d312e07e8130a26c12083e5bc18e52dc103e01ae60dd18": "3.0.1",
    "5422eeda658f9d768ce1fa13102d47cb889d0f255b750e5c734bdea360d4032f": "3.0.2",
    "e0579c1ec0aa10f4e6750faf694c1fb3fcfe4c44f91e9255b3ae526a4edbe8d4": "3.0.3",
    "4ba4ec4c0518794015bfe4da4f7399a00921ee3af3c96e2c04b4957f195a6f3f": "3.0.4",
}
FINGERPRINT_FILE = "common/folding_input.py"
CCD_SETS_PICKLE = "constants/converters/chemical_component_sets.pickle"
CCD_PICKLE = "constants/converters/ccd.pickle"
# run_alphafold.py copies this file from the package directory into every
# output directory, after inference (v3.0.0-v3.0.4). ``pip install`` of the
# checkout puts it there; a bare ``src/alphafold3`` on the path lacks it.
OUTPUT_TERMS = "OUTPUT_TERMS_OF_USE.md"
DIFFUSION_HEAD_FILES = ("model/network/diffusion_head.py", "model/diffusion/diffusion_head.py")

INSTALL_HINT = (
    "install DeepMind's AlphaFold 3 from its GitHub source (git clone "
    "https://github.com/google-deepmind/alphafold3, then pip install that checkout), "
    "or set AF3_DIR to such a checkout"
)


@dataclasses.dataclass(frozen=True)
class AF3Install:
    package_dir: pathlib.Path | None  # .../alphafold3, None if not importable
    version: str | None
    version_source: str  # "source fingerprint", "package metadata", "alphafold3/version.py", "unknown"
    is_deepmind: bool
    # The source is no release's (a checkout of branch main, or edited): ``version`` is the
    # release it says it is, and it has later commits or changes; ``commit`` where git tells.
    past_release: bool = False
    commit: str | None = None

    @property
    def label(self) -> str:
        """The version as users should read it: "3.0.4", or "3.0.4 + later commits (c0f97ed)"."""
        if self.version is None:
            return "(version unknown)"
        if not self.past_release:
            return self.version
        return f"{self.version} + later commits" + (f" ({self.commit[:7]})" if self.commit else "")

    @property
    def found(self) -> bool:
        return self.package_dir is not None

    @property
    def data_built(self) -> bool:
        """AF3's ``build_data`` has written the CCD pickles it needs at import time."""
        return self.found and (self.package_dir / CCD_SETS_PICKLE).is_file()

    @property
    def output_terms_present(self) -> bool:
        """The file AF3 copies into every output is where it looks for it."""
        return self.found and (self.package_dir / OUTPUT_TERMS).is_file()

    def output_terms_problem(self, checkout: pathlib.Path | None) -> str | None:
        """One line for a package without :data:`OUTPUT_TERMS`, or None."""
        if self.output_terms_present:
            return None
        source = f"{checkout / OUTPUT_TERMS}" if checkout is not None else f"the root of AF3's checkout ({OUTPUT_TERMS})"
        return (
            f"{self.package_dir} has no {OUTPUT_TERMS}, which AF3's run_alphafold.py copies into every output "
            f"after inference, so the run would fail at its end: pip install the checkout, or copy {source} "
            f"into {self.package_dir}"
        )

    def describe(self) -> str:
        if not self.found:
            return "no importable alphafold3"
        if not self.is_deepmind:
            return f"alphafold3 at {self.package_dir} is not DeepMind's AlphaFold 3 (no diffusion head; PyPI's 'alphafold3' is an unrelated placeholder)"
        return f"AlphaFold 3 {self.label} [{self.version_source}] at {self.package_dir}"

    def problem(self) -> str | None:
        """One line naming what is wrong and how to fix it, or None."""
        if not self.found:
            return f"AlphaFold 3 is not importable: {INSTALL_HINT}."
        if not self.is_deepmind:
            return (
                f"the importable 'alphafold3' ({self.package_dir}) is not DeepMind's AlphaFold 3 "
                f"(PyPI's 'alphafold3' is an unrelated placeholder): pip uninstall alphafold3, then {INSTALL_HINT}."
            )
        return None


def fingerprint_version(package_dir: pathlib.Path) -> str | None:
    try:
        digest = hashlib.sha256((package_dir / FINGERPRINT_FILE).read_bytes()).hexdigest()
    except OSError:
        return None
    return FINGERPRINTS.get(digest)


def _metadata_version() -> str | None:
    try:
        return importlib.metadata.version("alphafold3")
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_py(package_dir: pathlib.Path) -> str | None:
    try:
        text = (package_dir / "version.py").read_text()
    except OSError:
        return None
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else None


def git_commit(package_dir: pathlib.Path) -> str | None:
    """The commit checked out in the git checkout holding ``package_dir`` (``<root>/src/alphafold3``), if any.

    Read from ``.git`` directly: no git binary needed, nothing run.
    """
    git = package_dir.parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head or None
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip() or None
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def inspect_package(package_dir: pathlib.Path | None) -> AF3Install:
    """Which AF3 ``package_dir`` is: a release by its fingerprint, else what it says it is, marked as past it."""
    if package_dir is None:
        return AF3Install(None, None, "unknown", False)
    is_deepmind = any((package_dir / f).is_file() for f in DIFFUSION_HEAD_FILES)
    version = fingerprint_version(package_dir)
    if version:
        return AF3Install(package_dir, version, "source fingerprint", is_deepmind)
    for source, finder in (("package metadata", _metadata_version), ("alphafold3/version.py", lambda: _version_py(package_dir))):
        version = finder()
        if version:
            past = (package_dir / FINGERPRINT_FILE).is_file()  # readable, and no release's
            detail = f"{source}; its {FINGERPRINT_FILE} matches no release" if past else source
            return AF3Install(package_dir, version, detail, is_deepmind, past, git_commit(package_dir) if past else None)
    return AF3Install(package_dir, None, "unknown", is_deepmind)


def find_package_dir() -> pathlib.Path | None:
    try:
        spec = importlib.util.find_spec("alphafold3")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return pathlib.Path(next(iter(spec.submodule_search_locations)))
    return pathlib.Path(spec.origin).parent if spec.origin else None


@functools.lru_cache(maxsize=None)
def _cached(package_dir: pathlib.Path | None) -> AF3Install:
    return inspect_package(package_dir)


def detect() -> AF3Install:
    """The AF3 that ``import alphafold3`` would load in this process."""
    return _cached(find_package_dir())
