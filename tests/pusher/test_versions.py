"""The pusher reads installed versions without importlib.metadata (pusher/versions.py), and
they are the ones importlib.metadata reports; what psycopg imports and `pusher run` never uses
is imported on first use (pusher/deferred.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version

from pusher.versions import dist_version, pusher_version


def test_versions_read_from_dist_info_folders_are_importlib_metadatas() -> None:
    """The pusher's own version and its dependencies' are the ones importlib.metadata reads; a
    distribution that is not installed has none."""
    for name in ("fleet-pusher", "psycopg", "psycopg-binary", "h11", "msgspec"):
        assert dist_version(name) == version(name), name
    assert pusher_version() == version("fleet-pusher")
    assert dist_version("no-such-distribution-here") is None


def test_pusher_run_imports_neither_importlib_metadata_nor_email() -> None:
    """Importing the command and the daemon loads neither importlib.metadata nor the email
    package (psycopg reads its version through them), and psycopg still knows its version."""
    code = (
        "import json, sys\n"
        "import pusher.cli, pusher.daemon\n"
        "loaded = [m for m in ('importlib.metadata', 'email', 'email.utils') if m in sys.modules]\n"
        "import psycopg, psycopg_binary\n"
        "from importlib.metadata import version\n"
        "print(json.dumps([loaded, psycopg.__version__ == version('psycopg'),\n"
        "                  psycopg_binary.__version__ == version('psycopg-binary')]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[], True, True]


def test_a_deferred_module_answers_as_the_module_once_used() -> None:
    """After the pusher is imported, ctypes.util is a stand-in; the first use of it (as psycopg
    would: an attribute of the ctypes package, or a from-import) imports the real module, which
    then takes its place."""
    code = (
        "import json, sys\n"
        "import pusher, ctypes\n"
        "deferred = type(sys.modules['ctypes.util']).__name__\n"
        "found = ctypes.util.find_library('c')\n"
        "from ctypes.util import find_library\n"
        "print(json.dumps([deferred, found is not None, find_library('c') == found,\n"
        "                  ctypes.util is sys.modules['ctypes.util'],\n"
        "                  type(ctypes.util).__name__, 'shutil' in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["_Deferred", True, True, True, "module", True]
