"""Build of the Cython extensions; everything else is in pyproject.toml.

Knobs (environment variables, read at build time):
  DATACOMMS_NO_EXTENSIONS=1       skip compiling: a pure-Python install
  DATACOMMS_REQUIRE_EXTENSIONS=1  a failed compile fails the install (CI sets it)
  DATACOMMS_DEBUG=1               -O0 -g and Cython's internal assertions
  DATACOMMS_SANITIZE=address,undefined   compile and link with -fsanitize=...
"""

import os
import sys
import traceback

from setuptools import setup
from setuptools.command.build_ext import build_ext

MODULES = ["framing", "stats", "ring", "ringreader", "sendloop", "streamreader", "columns", "zenohq"]


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


def extensions():
    from Cython.Build import cythonize
    from setuptools import Extension

    debug = _flag("DATACOMMS_DEBUG")
    sanitize = os.environ.get("DATACOMMS_SANITIZE", "")
    cflags = ["-std=c11", "-O0" if debug else "-O3", "-g" if debug else "-g0", "-Wall",
              "-Wno-unused-function", "-Wno-unreachable-code"]
    ldflags = []
    if sanitize:
        cflags += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer"]
        ldflags += [f"-fsanitize={sanitize}"]
    macros = [] if debug else [("NDEBUG", None)]
    exts = [
        Extension(f"datacomms.backend.cython.{m}", [f"datacomms/backend/cython/{m}.pyx"],
                  include_dirs=["csrc"], extra_compile_args=cflags, extra_link_args=ldflags,
                  define_macros=macros)
        for m in MODULES
    ] + [Extension("datacomms._message", ["datacomms/_message.pyx"], extra_compile_args=cflags,
                   extra_link_args=ldflags, define_macros=macros)]
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": True, "wraparound": False, "cdivision": True, "embedsignature": True,
    }, force=debug or bool(sanitize), nthreads=os.cpu_count() or 1)


BANNER = """
************************************************************************
datacomms: the Cython extensions could not be built ({why}).
Installing the pure-Python backend only; it works, but it is slower.
Set DATACOMMS_REQUIRE_EXTENSIONS=1 to make this an error.
************************************************************************
"""


class optional_build_ext(build_ext):
    """Falls back to pure Python when compiling fails, unless extensions are required.

    Modules compile side by side, one per core, unless ``--parallel`` says otherwise.
    """

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self):
        try:
            super().run()
        except Exception as exc:
            self._fallback(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fallback(exc)

    def _fallback(self, exc):
        if _flag("DATACOMMS_REQUIRE_EXTENSIONS"):
            raise
        traceback.print_exc()
        sys.stderr.write(BANNER.format(why=exc))


def ext_modules():
    if _flag("DATACOMMS_NO_EXTENSIONS"):
        sys.stderr.write("datacomms: DATACOMMS_NO_EXTENSIONS is set; building the pure-Python package.\n")
        return []
    try:
        return extensions()
    except Exception as exc:
        if _flag("DATACOMMS_REQUIRE_EXTENSIONS"):
            raise
        sys.stderr.write(BANNER.format(why=f"Cython step failed: {exc}"))
        return []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": optional_build_ext})
