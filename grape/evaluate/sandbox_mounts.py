"""What the sandbox (grape/evaluate/sandbox.py) sees, read-only, and nothing more: the Python installation of the
running process (its venv, its interpreter's prefix, or for an interpreter under /usr only its stdlib and site
folders) and the system library folders that interpreter loads (the folders of every shared object this process
has mapped: libc, libm, the loader, ...), with the symlinks that lead to them (/lib64 -> usr/lib64, the loader's own
link). Found from the process itself, not from a list of distribution paths, so a conda env, a pyenv build, a venv
in a CI checkout under /tmp and Debian's python3 all work; no /etc, no /bin, no shell.
"""

from __future__ import annotations

import os
import struct
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path


def _interp(exe: str) -> str | None:
    """The dynamic loader an ELF executable asks for (PT_INTERP), e.g. /lib64/ld-linux-x86-64.so.2; None if static
    or not a 64-bit little-endian ELF (then the library folders are bound whole)."""
    try:
        with open(exe, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            (phoff,) = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            for i in range(phnum):
                fh.seek(phoff + i * phentsize)
                p_type, _, p_offset, _, _, p_filesz = struct.unpack("<IIQQQQ", fh.read(40))
                if p_type == 3:  # PT_INTERP
                    fh.seek(p_offset)
                    return fh.read(p_filesz).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def _links_to(path: str, out: list[tuple[str, str, str]], seen: set[str]) -> str:
    """Recreate inside the sandbox every symlink on the way to `path` (e.g. /lib64 -> usr/lib64, then the loader's
    own link), as ("--symlink", target, link) entries; the real path the chain ends at."""
    parts = Path(path).parts
    current = Path(parts[0])
    for part in parts[1:]:
        current = current / part
        if current.is_symlink():
            target = os.readlink(current)
            if str(current) not in seen:
                seen.add(str(current))
                out.append(("--symlink", target, str(current)))
            resolved = (current.parent / target) if not os.path.isabs(target) else Path(target)
            return _links_to(str(resolved / Path(*parts[len(current.parts):])) if len(parts) > len(current.parts)
                             else str(resolved), out, seen)  # fmt: skip
    return str(current)


@lru_cache(maxsize=1)
def mounts() -> tuple[tuple[str, ...], ...]:
    """What the sandbox sees, read-only: the Python installation of this process and the system library folders its
    interpreter loads, with the symlinks that lead to them. Computed once per process."""
    ro: set[str] = set()
    links: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    system = {"/", "/usr", "/usr/local"}
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        if os.path.realpath(prefix) not in system:
            ro.add(os.path.realpath(prefix))
            if os.path.realpath(prefix) != os.path.abspath(prefix):
                _links_to(os.path.abspath(prefix), links, seen)
    # an interpreter under /usr (Debian's python3): its stdlib and site folders, not /usr whole (no /usr/bin)
    import site

    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        ro.add(os.path.realpath(sysconfig.get_paths()[key]))
    for d in site.getsitepackages():
        if os.path.isdir(d):
            ro.add(os.path.realpath(d))
    exe = os.path.realpath(sys.executable)
    ro.add(exe)
    _links_to(os.path.abspath(sys.executable), links, seen)
    # the system libraries: the folders of every shared object this process has mapped (libc, libm, libstdc++, the
    # loader, ...), outside the Python trees; a module's own libraries beside those are found there too
    libdirs: set[str] = set()
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            f = line.split(maxsplit=5)[-1] if len(line.split()) >= 6 else ""
            if f.startswith("/") and ".so" in os.path.basename(f) and os.path.exists(f):
                libdirs.add(os.path.dirname(os.path.realpath(f)))
    except OSError:
        pass
    loader = _interp(exe)
    if loader:
        libdirs.add(os.path.dirname(_links_to(loader, links, seen)))
    if not libdirs:  # no /proc, or a static interpreter: the usual folders whole
        libdirs = {
            d for d in ("/lib", "/lib64", "/usr/lib", "/usr/lib64") if os.path.isdir(d) and not os.path.islink(d)
        }

    def under(p: str, q: str) -> bool:
        return p == q or p.startswith(q.rstrip("/") + "/")

    # never a library folder of the user's home or of the working directory (the checkout, results/) outside the
    # Python trees: `python -I` reads no user site-packages, so a ~/.local library this process mapped is not needed
    private = [os.path.realpath(os.path.expanduser("~")), os.path.realpath(os.getcwd())]
    for d in libdirs:
        if not any(under(d, r) for r in ro) and not any(under(d, h) for h in private if h != "/"):
            ro.add(d)

    # a bind under another bind is redundant; keep the outermost

    outer = sorted(p for p in ro if not any(p != q and under(p, q) for q in ro))
    links = [e for e in links if not any(under(e[2], q) for q in outer)]  # a bound folder brings its own links
    return tuple(("--ro-bind", p, p) for p in outer) + tuple(links)
