#!/usr/bin/env python3
"""Checks that bindgen will find a working libclang, the way bindgen itself looks for one.

mlx-sys generates its bindings with bindgen, which loads libclang at run time through
clang-sys (the version in Cargo.lock: 1.9.1, `runtime` feature). A file-name check such as
`ls /usr/lib/llvm-*/lib/libclang*` is not enough: LLVM's C++ library `libclang-cpp.so.N`
matches it but is skipped by clang-sys, and a bare `libclang.so.1` without clang's builtin
headers loads but cannot parse `<stddef.h>`. So this probe
  1. searches the directories clang-sys searches, in its order, for the file names it
     accepts (LIBCLANG_PATH, `llvm-config --prefix`, LD_LIBRARY_PATH, LIBRARY_PATH, then
     the fixed Linux globs), and picks the one clang-sys would pick (the highest version);
  2. loads it and parses a header that includes the standard C headers mlx-c's headers use,
     as bindgen will.
Exit status 0 and the library's path on stdout when both work; 1 and the reason on stderr
otherwise. Run by setup.sh; `python3 libclang_probe.py` by hand to see what bindgen will load.
"""

import ctypes
import glob
import os
import subprocess
import sys
import tempfile

# clang-sys's `build/dynamic.rs` (runtime linking): the file names it accepts on Linux.
FILE_PATTERNS = ["libclang.so", "libclang-*.so", "libclang.so.*", "libclang-*.so.*"]
# clang-sys's `build/common.rs`, DIRECTORIES_LINUX.
DIRECTORY_GLOBS = [
    "/usr/local/llvm*/lib*",
    "/usr/local/lib*/*/*",
    "/usr/local/lib*/*",
    "/usr/local/lib*",
    "/usr/lib*/*/*",
    "/usr/lib*/*",
    "/usr/lib*",
]
HEADER = b"#include <stddef.h>\n#include <stdint.h>\n#include <stdbool.h>\n"


# LLVM's C++ library (`libclang-cpp.so.N`, no C API) seen and skipped, for the message.
SKIPPED = []


def search_directory(directory):
    """The accepted files in one directory, in clang-sys's order (pattern, then glob order)."""
    found = []
    escaped = glob.escape(directory)
    for pattern in FILE_PATTERNS:
        for path in sorted(glob.glob(os.path.join(escaped, pattern))):
            name = os.path.basename(path)
            # clang-sys skips LLVM's C++ library (`libclang-cpp.so.N`), which has no C API.
            if "-cpp." in name:
                SKIPPED.append(path)
                continue
            found.append((directory, name))
    return found


def llvm_config_prefix():
    exe = os.environ.get("LLVM_CONFIG_PATH", "llvm-config")
    try:
        out = subprocess.run([exe, "--prefix"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    lines = out.stdout.splitlines()
    return lines[0] if lines else None


def candidates():
    """clang-sys's `search_libclang_directories`."""
    explicit = os.environ.get("LIBCLANG_PATH")
    if explicit is not None:
        parent, name = os.path.split(explicit)
        if parent and any(f == name for _, f in search_directory(parent)):
            return [(parent, name)]
        return search_directory(explicit)
    found = []
    prefix = llvm_config_prefix()
    if prefix:
        for sub in ("bin", "lib", "lib64"):
            found += search_directory(os.path.join(prefix, sub))
    for var in ("LD_LIBRARY_PATH", "LIBRARY_PATH"):
        for directory in filter(None, os.environ.get(var, "").split(os.pathsep)):
            found += search_directory(directory)
    for pattern in DIRECTORY_GLOBS:
        for directory in sorted(glob.glob(pattern)):
            if os.path.isdir(directory):
                found += search_directory(directory)
    return found


def is_elf64(path):
    try:
        with open(path, "rb") as f:
            head = f.read(5)
    except OSError:
        return False
    return head[:4] == b"\x7fELF" and head[4:5] == b"\x02"


def parse_version(name):
    """clang-sys's `parse_version`, including its slicing of `libclang-*` names."""
    if name.startswith("libclang.so."):
        version = name[len("libclang.so."):]
    elif name.startswith("libclang-"):
        version = name[9 : len(name) - 3]
    else:
        return []
    out = []
    for part in version.split("."):
        try:
            out.append(int(part))
        except ValueError:
            out.append(0)
    return out


def pick(found):
    """The library clang-sys loads: the highest version, the earliest found among equals."""
    valid = [(d, f) for d, f in found if is_elf64(os.path.join(d, f))]
    if not valid:
        return None
    best = None
    for directory, name in valid:
        version = parse_version(name)
        if best is None or version > best[0]:
            best = (version, os.path.join(directory, name))
    return best[1]


def parses_header(path):
    """Loads libclang and parses HEADER with it; None when that works, else the reason."""
    try:
        lib = ctypes.CDLL(path)
        create_index = lib.clang_createIndex
    except (OSError, AttributeError) as e:
        return f"cannot load {path} as libclang: {e}"
    create_index.restype = ctypes.c_void_p
    lib.clang_parseTranslationUnit.restype = ctypes.c_void_p
    lib.clang_parseTranslationUnit.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int,
        ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint,
    ]
    lib.clang_getNumDiagnostics.argtypes = [ctypes.c_void_p]
    lib.clang_getDiagnostic.restype = ctypes.c_void_p
    lib.clang_getDiagnostic.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.clang_getDiagnosticSeverity.argtypes = [ctypes.c_void_p]
    with tempfile.TemporaryDirectory() as tmp:
        header = os.path.join(tmp, "probe.h")
        with open(header, "wb") as f:
            f.write(HEADER)
        index = create_index(0, 0)
        args = (ctypes.c_char_p * 2)(b"-x", b"c")
        unit = lib.clang_parseTranslationUnit(index, header.encode(), args, 2, None, 0, 0)
        if not unit:
            return f"{path} loads but could not parse a header"
        for i in range(lib.clang_getNumDiagnostics(unit)):
            # CXDiagnostic_Error = 3, CXDiagnostic_Fatal = 4
            if lib.clang_getDiagnosticSeverity(lib.clang_getDiagnostic(unit, i)) >= 3:
                return (
                    f"{path} loads but cannot find the C standard headers "
                    "(<stddef.h> and others: clang's builtin headers are missing)"
                )
    return None


def main():
    found = candidates()
    path = pick(found)
    if path is None:
        skipped = sorted(set(SKIPPED))
        print(
            "no libclang that bindgen accepts (libclang.so, libclang-N.so, libclang.so.N; "
            "LLVM's libclang-cpp does not count)"
            + (f"; found only {', '.join(skipped)}, which bindgen skips" if skipped else ""),
            file=sys.stderr,
        )
        return 1
    reason = parses_header(path)
    if reason:
        print(reason, file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
