"""Where this process's cgroups are: the directories from its own cgroup up to its hierarchy's mount.

Why: a limit set on a SLURM job, a systemd slice or a container applies to a
nested cgroup (``/sys/fs/cgroup/memory/slurm/uid_1000/job_42``), not to the
root one, and any ancestor may set a tighter limit than the process's own
cgroup.  ``/proc/self/cgroup`` names the process's cgroup per hierarchy
(v2 ``0::/path``; v1 ``4:memory:/path``, ``3:cpu,cpuacct:/path``) and
``/proc/self/mountinfo`` says where each hierarchy is mounted and which of
its cgroups the mount shows as its root (inside a container, often the
container's own nested cgroup).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

STANDARD_ROOT = pathlib.PurePosixPath("/sys/fs/cgroup")


@dataclasses.dataclass(frozen=True)
class Chain:
    """One hierarchy's cgroups of this process: ``dirs[0]`` is its own, the last one the mount's root."""

    version: int  # 1 or 2
    dirs: tuple[pathlib.Path, ...]


@dataclasses.dataclass(frozen=True)
class _Mount:
    root: str  # the cgroup the mount shows at its mount point
    point: pathlib.Path
    version: int
    options: frozenset[str]  # v1: the controllers (and name=...) of the hierarchy


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _rebase(point: str, cgroup_root: pathlib.Path) -> pathlib.Path:
    """A mount point under /sys/fs/cgroup, moved under ``cgroup_root`` (the same path unless tests inject one)."""
    path = pathlib.PurePosixPath(point)
    if path == STANDARD_ROOT or STANDARD_ROOT in path.parents:
        return cgroup_root / path.relative_to(STANDARD_ROOT)
    return pathlib.Path(path)


def _mounts(proc_root: pathlib.Path, cgroup_root: pathlib.Path) -> list[_Mount]:
    try:
        lines = (proc_root / "self" / "mountinfo").read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        fields = line.split()
        if "-" not in fields or len(fields) < 5:
            continue
        dash = fields.index("-")
        fstype, super_options = fields[dash + 1], (fields[dash + 3] if len(fields) > dash + 3 else "")
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(_Mount(_unescape(fields[3]), _rebase(_unescape(fields[4]), cgroup_root),
                                 2 if fstype == "cgroup2" else 1, frozenset(super_options.split(","))))
    return mounts


def _standard_mounts(version: int, controllers: list[str], cgroup_root: pathlib.Path) -> list[_Mount]:
    """Without mountinfo: the usual layout (v2 at the root, or ``unified`` beside v1; v1 as ``cpu,cpuacct``, ``memory``)."""
    if version == 2:
        points = [p for p in (cgroup_root, cgroup_root / "unified") if (p / "cgroup.controllers").is_file()]
    else:
        points = [p for p in [cgroup_root / ",".join(controllers)] + [cgroup_root / c for c in controllers] if p.is_dir()]
    return [_Mount("/", p, version, frozenset(controllers)) for p in points[:1]]


def _inside(cgroup: str, root: str) -> str | None:
    """``cgroup`` relative to a mount's ``root``, or None when the mount does not show it."""
    if root == "/":
        return cgroup.lstrip("/")
    if cgroup == root or cgroup.startswith(root.rstrip("/") + "/"):
        return cgroup[len(root):].lstrip("/")
    return None


def _chain(mount: _Mount, cgroup: str) -> Chain:
    relative = _inside(cgroup, mount.root)
    own = mount.point / relative if relative and ".." not in relative.split("/") else mount.point
    while not own.is_dir() and mount.point in own.parents:  # e.g. a container that sees only its own part of the tree
        own = own.parent
    dirs = [own]
    while dirs[-1] != mount.point and mount.point in dirs[-1].parents:
        dirs.append(dirs[-1].parent)
    return Chain(mount.version, tuple(dirs))


def chains(controller: str, proc_root: pathlib.Path | str = "/proc", cgroup_root: pathlib.Path | str = STANDARD_ROOT) -> list[Chain]:
    """This process's cgroups that can hold ``controller``'s limits ("memory", "cpu"): v1's hierarchy and v2's, where present."""
    proc_root, cgroup_root = pathlib.Path(proc_root), pathlib.Path(cgroup_root)
    try:
        lines = (proc_root / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return []
    mounts = _mounts(proc_root, cgroup_root)
    found = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        names, _, cgroup = rest.partition(":")
        controllers = [c for c in names.split(",") if c]
        version = 2 if hierarchy == "0" and not controllers else 1
        if version == 1 and controller not in controllers:
            continue
        candidates = [m for m in mounts if m.version == version and (version == 2 or set(controllers) <= m.options)]
        candidates = candidates or _standard_mounts(version, controllers, cgroup_root)
        showing = [m for m in candidates if _inside(cgroup, m.root) is not None]
        if candidates:
            mount = max(showing, key=lambda m: len(m.root)) if showing else candidates[0]
            found.append(_chain(mount, cgroup))
    return found
