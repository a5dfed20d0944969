"""The README's first ping, followed as written: ``telemhq-server serve`` on its first start,
the ping key it gives, the exported environment, the script and the commands; and the docs'
promises about their own blocks: every quick-start block is run by some test, and every
``pip install`` they show can work today (no install from a package index the project is
not on)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docs_snippets import ROOT, Block, blocks, exports, run_bash, snippet, venv_env
from tests.kit import free_port, wait_until
from tests.live_server import dies_with_parent

README = ROOT / "README.md"
ADAPTER_PAGES = [
    ROOT / "docs" / f"{name}.md" for name in ("airflow", "prefect", "dagster", "celery")
]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


class FirstStart:
    """``telemhq-server serve`` as the README starts it, on a fresh folder (its first start)."""

    def __init__(self, command: list[str], folder: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                dies_with_parent([*command, "--host", "127.0.0.1", "--port", str(self.port)]),
                env=venv_env(env),
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"the server exited:\n{self.output}"
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the server did not start:\n{self.output}"
            time.sleep(0.1)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ping_key(self) -> str:
        """The ping key the banner shows; a server that prints none yet gets one made through
        the management API with the admin key it printed."""
        shown = re.search(r"TELEMHQ_PING_KEY=(\S+)", self.output)
        if shown is not None:
            return shown[1]
        response = httpx.post(
            f"{self.base_url}/api/v1/ping-keys",
            headers={"Authorization": f"Bearer {self.admin_key()}"},
            json={"name": "readme", "auto_create": True},
        )
        assert response.status_code == 201, response.text
        key: str = response.json()["key"]
        return key

    def runs(self, slug: str, api_key: str) -> list[dict[str, object]]:
        response = httpx.get(
            f"{self.base_url}/api/v1/trackers/{slug}/runs",
            headers={"Authorization": f"Bearer {api_key}"},
        )
        if response.status_code == 404:
            return []
        assert response.status_code == 200, response.text
        items: list[dict[str, object]] = response.json()["items"]
        return items

    def admin_key(self) -> str:
        """The admin API key the banner shows at the first start."""
        admin = re.search(r"admin API key[^:\n]*:\s*(\S+)", self.output)
        assert admin is not None, f"no admin key in the banner:\n{self.output}"
        return admin[1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def first_start(tmp_path: Path) -> Iterator[FirstStart]:
    block = snippet(README, "readme-serve")
    (line,) = [w for w in block.code.splitlines() if w.startswith("telemhq-server serve")]
    server = FirstStart(shlex.split(line, comments=True), tmp_path)
    try:
        yield server
    finally:
        server.stop()


def _wait_runs(server: FirstStart, slug: str, count: int) -> list[dict[str, object]]:
    runs: list[dict[str, object]] = []

    def enough() -> bool:
        runs[:] = server.runs(slug, server.admin_key())
        return len(runs) >= count

    wait_until(enough, lambda: f"{slug}: {runs}", interval=0.1)
    return runs


@pytest.mark.slow
def test_the_readme_first_ping_works_as_written(first_start: FirstStart, tmp_path: Path) -> None:
    variables = exports(
        snippet(README, "readme-env"),
        base_url=first_start.base_url,
        ping_key=first_start.ping_key(),
    )
    assert set(variables) == {"TELEMHQ_BASE_URL", "TELEMHQ_PING_KEY"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMHQ_")} | variables
    script = snippet(README, "readme-script")
    (tmp_path / script.code.splitlines()[0].removeprefix("# ")).write_text(script.code)

    ran = run_bash(snippet(README, "readme-run"), env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (run,) = _wait_runs(first_start, "nightly-sync", 1)
    assert run["status"] == "success"
    payload = run["payload"]
    assert isinstance(payload, dict)
    assert payload["records_processed"] == 3
    assert payload["cost_usd"] == 0.12

    # "Open the dashboard and sign in with the admin key": the tracker is there.
    with httpx.Client(base_url=first_start.base_url, follow_redirects=True) as browser:
        signed_in = browser.post("/dashboard/login", data={"api_key": first_start.admin_key()})
        assert signed_in.status_code == 200, signed_in.text
        page = browser.get("/dashboard/")
        assert page.status_code == 200
        assert "nightly-sync" in page.text or "nightly_sync" in page.text

    cli = run_bash(snippet(README, "readme-cli"), env=env, cwd=tmp_path)
    assert cli.returncode == 1, cli.stderr  # the last line's assertion fails, as its comment says
    assert "records_processed" in cli.stdout
    runs = _wait_runs(first_start, "nightly-backup", 2)
    assert sorted(str(r["status"]) for r in runs) == ["success", "success"]
    assert any(isinstance(p := r["payload"], dict) and p.get("files") == 1 for r in runs)


def _quick_start_blocks() -> list[Block]:
    """The blocks a reader runs to get going: the README up to its reference server section,
    and each adapter page's Quick start."""
    readme = blocks(README)
    first = next(i for i, b in enumerate(readme) if b.name == "readme-serve")
    last = next(i for i, b in enumerate(readme) if b.section == "The reference server")
    found = readme[first:last]
    for page in ADAPTER_PAGES:
        found += [b for b in blocks(page) if b.section == "Quick start"]
    return found


def test_every_quick_start_block_is_run_by_a_test() -> None:
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py"))
    unmarked = [f"{b.doc.name}:{b.line}" for b in _quick_start_blocks() if b.name is None]
    assert not unmarked, f"quick-start blocks without a snippet marker: {unmarked}"
    untested = [b.name for b in _quick_start_blocks() if f'"{b.name}"' not in tests]
    assert not untested, f"quick-start blocks no test runs: {untested}"


_WHEEL = re.compile(r"(?:\./dist/|/\S*/)?telemhq_plugins-(?P<version>[^-]+)-py3-none-any\.whl")
_CHECKOUT = re.compile(r"\.(?:\[(?P<extras>[\w,]+)\])?")


def _pip_installs() -> list[tuple[str, str]]:
    """(where, command) of every ``pip install`` in the README, the docs, the Makefile and the
    package's own messages."""
    files = [README, ROOT / "Makefile", *(ROOT / "docs").glob("*.md")]
    files += (ROOT / "telemhq_plugins").rglob("*.py")
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(r"pip install[^`\n]*", line):
                command = match[0].split(" #")[0]  # not the comment after it
                found.append((f"{path.relative_to(ROOT)}:{number}", command))
    return found


def test_no_pip_install_needs_a_package_index_the_project_is_not_on() -> None:
    version = PYPROJECT["project"]["version"]
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    wrong = []
    for where, command in _pip_installs():
        for word in re.findall(r"""[^\s"'\\]+""", command.removeprefix("pip install")):
            if "telemhq" not in word.lower() and not word.startswith(".["):
                continue
            if "{" in word:  # a message template: its values are the adapters' real extras
                continue
            name, _, rest = word.partition("[")
            asked = set(rest.rstrip("]").split(",")) - {""} if rest else set()
            wheel = _WHEEL.fullmatch(name)
            if wheel is not None and wheel["version"] != version:
                wrong.append(f"{where}: {word} (the wheel of {version} is named otherwise)")
            elif wheel is None and name not in (".", "./dist/<wheel>"):
                wrong.append(f"{where}: {word} (not on a package index; a checkout or the wheel)")
            elif asked - extras:
                wrong.append(f"{where}: {word} (no such extra: {sorted(asked - extras)})")
    assert not wrong, "\n".join(wrong)
    assert any("./dist/telemhq_plugins-" in c for _, c in _pip_installs())


@pytest.mark.slow
def test_the_wheel_make_dist_builds_is_the_one_the_docs_install(tmp_path: Path) -> None:
    uv = shutil.which("uv") or str(ROOT / ".venvs" / "bootstrap" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("no uv to build with (make dist bootstraps it)")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^dist:.*\n(?:\t.*\n)*\t\$\(UV\) build --out-dir dist$", makefile, re.M)
    built = subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("*.whl")
    documented = {
        m["wheel"] for m in re.finditer(r"\./dist/(?P<wheel>\S+\.whl)", README.read_text())
    }
    assert documented == {wheel.name}
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert "telemhq_server/migrations/env.py" in names
    provided = set(re.findall(r"^Provides-Extra: (\S+)$", metadata.decode(), re.M))
    assert provided >= {"server", "airflow", "prefect", "dagster", "celery"}
