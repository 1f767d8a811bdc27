"""How scripts/setup.sh finds Python 3.10, without the network.

find_python310 runs in bash with a PATH of fake executables only: fake interpreters (which answer
setup's version check by their exit status), a fake pyenv, and a fake uv that logs its arguments and
either "installs" a managed Python or fails as offline. The fixed candidates (/usr/bin/python3.10,
/usr/local/bin/python3.10) are replaced, so this machine's Pythons cannot decide any outcome.
"""

import os
import pathlib
import shutil
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
SETUP = REPO / "scripts" / "setup.sh"
BASH = shutil.which("bash") or "/bin/bash"
INSTALL_LINE = "installing one with 'uv python install 3.10'"
NOT_FOUND = "setup: Python 3.10 not found (TFX 1.16 needs Python 3.9 or 3.10)"

# Sources setup.sh (which must not run the setup then) and calls find_python310 as main does.
HARNESS = """
source "$SETUP"
IFS=: read -r -a python310_fixed_candidates <<<"$FIXED"
python310=$(find_python310 "$UV")
printf '%s\\n' "$python310"
"""


def _script(path: pathlib.Path, body: str) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def fake_python(path: pathlib.Path, kind: str = "3.10") -> pathlib.Path:
    """A fake interpreter: "3.10" passes setup's version check, "3.12" fails it, "shim" is a
    pyenv shim for a version that is installed but not selected."""
    if kind == "shim":
        return _script(path, 'echo "pyenv: python3.10: command not found" >&2\nexit 127\n')
    status = 0 if kind == "3.10" else 1
    return _script(path, f'[ "$1" = -c ] || exit 3\nexit {status}\n')


class Sandbox:
    def __init__(self, root: pathlib.Path):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.tools = root / "tools"
        self.tools.mkdir()
        for tool in ("timeout", "true"):
            found = shutil.which(tool)
            if found:
                (self.tools / tool).symlink_to(found)
        self.home = root / "home"
        self.home.mkdir()
        self.uv_log = root / "uv.log"
        self.managed_mark = root / "managed-installed"
        self.managed_python = fake_python(root / "uv-python" / "cpython-3.10.99" / "bin" / "python3.10")
        self.uv = root / "uv"
        self.fixed: list[pathlib.Path] = []
        self.set_uv("offline")

    def set_uv(self, mode: str) -> None:
        """mode: "ok" (install works), "offline" (install fails), "hang" (install never ends)."""
        sleep = shutil.which("sleep") or "/bin/sleep"
        self.uv.write_text(
            f"""#!/bin/sh
printf '%s|%s\\n' "${{UV_PYTHON_DOWNLOADS-unset}}" "$*" >> '{self.uv_log}'
case "$1 $2" in
  "python find")
    if [ -e '{self.managed_mark}' ]; then echo '{self.managed_python}'; exit 0; fi
    echo "error: No interpreter found for Python 3.10 in managed installations or search path" >&2
    exit 2;;
  "python install")
    case '{mode}' in
      ok) : > '{self.managed_mark}'; echo "Installed Python 3.10.99 in 0.01s" >&2; exit 0;;
      offline) echo "error: Failed to install cpython-3.10.99-linux-x86_64-gnu" >&2
               echo "  cause: dns error: failed to lookup address information" >&2; exit 1;;
      hang) exec '{sleep}' 30;;
    esac;;
esac
echo "fake uv: unexpected arguments: $*" >&2
exit 99
"""
        )
        self.uv.chmod(0o755)

    def uv_calls(self) -> list[str]:
        return self.uv_log.read_text().splitlines() if self.uv_log.exists() else []

    def run(self, **extra_env: str) -> subprocess.CompletedProcess:
        env = {
            "PATH": f"{self.bin}:{self.tools}",
            "HOME": str(self.home),
            "PYENV_ROOT": str(self.root / "no-pyenv"),
            "SETUP": str(SETUP),
            "UV": str(self.uv),
            "FIXED": ":".join(str(p) for p in self.fixed),
            **extra_env,
        }
        return subprocess.run([BASH, "-c", HARNESS], cwd=self.root, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def box(tmp_path: pathlib.Path) -> Sandbox:
    return Sandbox(tmp_path)


def test_local_python310_on_path_is_chosen_and_uv_installs_nothing(box):
    local = fake_python(box.bin / "python3.10")
    box.fixed = [fake_python(box.root / "usr" / "bin" / "python3.10")]  # later in the order
    box.set_uv("ok")
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(local)
    assert box.uv_calls() == []  # a local 3.10 wins before uv is even asked
    assert INSTALL_LINE not in result.stderr


@pytest.mark.parametrize("kind", ["shim", "3.12"])
def test_python310_on_path_that_is_not_3_10_is_skipped_for_pyenvs(box, kind):
    fake_python(box.bin / "python3.10", kind)
    pyenv_root = box.root / "pyenv"
    pyenvs = fake_python(pyenv_root / "versions" / "3.10.13" / "bin" / "python3.10")
    _script(box.bin / "pyenv", f"[ \"$1\" = root ] && echo '{pyenv_root}'\n")
    box.fixed = [fake_python(box.root / "usr" / "bin" / "python3.10")]  # after pyenv's
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(pyenvs)
    assert box.uv_calls() == []


def test_fixed_candidates_come_after_path_and_before_uv(box):
    fake_python(box.bin / "python3.10", "3.12")
    wrong = fake_python(box.root / "usr" / "bin" / "python3.10", "3.12")
    right = fake_python(box.root / "usr" / "local" / "bin" / "python3.10")
    box.fixed = [wrong, right]
    box.set_uv("ok")
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(right)
    assert box.uv_calls() == []


def test_a_managed_python_installed_earlier_is_found_without_installing(box):
    box.managed_mark.touch()
    box.set_uv("ok")
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(box.managed_python)
    assert box.uv_calls() == ["never|python find 3.10"]
    assert INSTALL_LINE not in result.stderr


def test_without_a_local_python310_uv_installs_a_managed_one(box):
    fake_python(box.bin / "python3.10", "shim")  # present, but not a working 3.10
    box.set_uv("ok")
    result = box.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(box.managed_python)
    assert f"setup: no local Python 3.10; {INSTALL_LINE} (uv's managed Pythons)" in result.stderr
    # Downloads are allowed for the install only; both finds run with downloads off.
    assert box.uv_calls() == [
        "never|python find 3.10",
        "automatic|python install 3.10",
        "never|python find 3.10",
    ]


def test_offline_install_failure_keeps_the_not_found_message(box):
    box.set_uv("offline")
    result = box.run()
    assert result.returncode == 1
    assert result.stdout == ""
    assert INSTALL_LINE in result.stderr
    assert "dns error" in result.stderr  # uv's own error is shown
    assert "'uv python install 3.10' failed (exit status 1" in result.stderr
    assert NOT_FOUND in result.stderr
    assert "automatic|python install 3.10" in box.uv_calls()


def test_install_that_leaves_no_working_python310_is_not_used(box):
    box.managed_python.write_text("#!/bin/sh\nexit 1\n")  # e.g. a broken download
    box.set_uv("ok")
    result = box.run()
    assert result.returncode == 1
    assert result.stdout == ""
    assert "succeeded, but 'uv python find 3.10' gives no working Python 3.10" in result.stderr
    assert NOT_FOUND in result.stderr


@pytest.mark.skipif(not shutil.which("timeout"), reason="needs coreutils' timeout")
def test_an_install_that_hangs_is_stopped_by_the_time_limit(box):
    box.set_uv("hang")
    start = time.monotonic()
    result = box.run(BERTQA_PYTHON_DOWNLOAD_TIMEOUT="1")
    assert time.monotonic() - start < 20
    assert result.returncode == 1
    assert "did not finish within 1s" in result.stderr
    assert NOT_FOUND in result.stderr


def test_skip_variable_prevents_any_install(box):
    box.set_uv("ok")
    result = box.run(BERTQA_NO_PYTHON_DOWNLOAD="1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "BERTQA_NO_PYTHON_DOWNLOAD is set" in result.stderr
    assert NOT_FOUND in result.stderr
    assert INSTALL_LINE not in result.stderr
    assert not any("install" in call for call in box.uv_calls())


@pytest.mark.parametrize("value", ["0", ""])
def test_skip_variable_set_to_0_or_empty_still_installs(box, value):
    box.set_uv("ok")
    result = box.run(BERTQA_NO_PYTHON_DOWNLOAD=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(box.managed_python)


def test_sourcing_setup_defines_functions_and_runs_nothing(tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "SETUP": str(SETUP)}
    result = subprocess.run(
        [BASH, "-c", 'source "$SETUP"; pwd; declare -F main find_python310 install_python310'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.split() == [str(tmp_path), "main", "find_python310", "install_python310"]
