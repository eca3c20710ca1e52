"""How long each page's script run takes with many runs stored (budget: under a second),
and what the app costs a training run (``--overhead``).

Pages: seeds a fresh data directory (a temporary ``DISTILLERY_HOME``) with a small demo
shop and N finished runs: four real tiny runs trained through the job manager (popularity,
a SASRec teacher, a distilled student and its no-teacher twin), then copies of the teacher,
student and twin written straight into the store with their epochs, results and a copy of
the real checkpoint, so pages that load models have real files to load. Then every page is
run with Streamlit's AppTest through ``app.py`` (the sidebar included, as a browser gets it):

- ``seconds``: a new session's first script run (a new browser tab), median of ``--repeat``;
- ``warm_seconds``: a rerun of that session (a click), median of ``--repeat``;
- ``cold_seconds``: the first run after every cache was emptied (st.cache_data, loaded
  models and datasets), as the first visitor of a restarted server waits; imports are warm.

Every page is timed with ``--runs`` runs stored (50) and Compare again with
``--compare-runs`` (200). Prints a table and writes ``bench/results/pages.json``: a list of
``{page, runs, seconds, warm_seconds, cold_seconds}``.

Overhead: first the CPU that the server and a browser tab spend per second while the Train
page polls a running run with nothing training (``polling``: the app's own cost, free of
the noise of a training run), then the demo's teacher (demo shop at ``--scale``,
``--epochs`` epochs; ``--rounds 0`` skips it) trained three ways per round: on the main
thread of a plain process, as ``python -m core run`` trains (headless), by the app's job
manager with no browser open (the app trains each run in a process of its own,
core.process_backend), and with a headless Chromium tab on the Train page's live panel.
Writes ``bench/results/app_overhead.json``: ``polling``; each run's epoch seconds, the CPU
seconds of the headless process (including its start-up imports) or of the app's server
process (the training process excluded), and of the browser; per mode the mean epoch time
and its overhead over headless.

    python bench/pages.py
    python bench/pages.py --runs 50 --compare-runs 200 --repeat 5
    python bench/pages.py --profile runs   # cProfile of that page's warm rerun
    python bench/pages.py --overhead --scale 0.3 --epochs 2 --rounds 2
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import os
import pstats
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file is named pages.py: its own folder (sys.path[0]) would shadow the app's pages/.
sys.path[0] = str(ROOT)

from core import paths  # noqa: E402
from core.enums import Role, Status  # noqa: E402
from core.files import file_sha256  # noqa: E402
from core.ingestion.registry import _cached_dataset  # noqa: E402
from core.models import ModelConfig  # noqa: E402
from core.pipeline import RunSpec, load_demo_dataset, popularity_spec, student_specs  # noqa: E402
from core.runner import forget_run  # noqa: E402
from core.settings import DB_URL_ENV, HOME_ENV, SYNC_JOBS_ENV  # noqa: E402
from core.store import Store  # noqa: E402
from core.train import TrainConfig  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "pages.json"
OVERHEAD = ROOT / "bench" / "results" / "app_overhead.json"
APP = str(ROOT / "app.py")
PAGES = ("home", "data", "train", "runs", "compare", "handoff")
BUDGET_S = 1.0
SCALE = 0.05  # the demo shop of the tests: real products, seconds to train
TEACHER = RunSpec(
    name="teacher",
    role="teacher",
    model=ModelConfig(family="sasrec", dim=32, layers=1, heads=2, max_len=20, dropout=0.1),
    train=TrainConfig(epochs=2, batch_size=64, lr=3e-3, patience=2),
)
STUDENT = ModelConfig(family="sasrec", dim=8, layers=1, heads=1, max_len=20, dropout=0.1)


# --------------------------------------------------------------------------- seeding
def train_templates(store: Store, dataset_id: int) -> dict[str, int]:
    """Four real runs through the job manager; their rows are the templates of the copies."""
    from core.jobs import JobManager
    from core.runner import submit_run, training_runner

    ids: dict[str, int] = {}
    with JobManager(store, training_runner, workers=1) as jobs:
        ids["popularity"] = submit_run(jobs, dataset_id, popularity_spec())
        ids["teacher"] = submit_run(jobs, dataset_id, TEACHER)
        if jobs.wait(ids["teacher"]) != Status.SUCCEEDED:
            raise SystemExit(f"the template teacher failed: {store.get_run(ids['teacher']).error}")
        for spec in student_specs(STUDENT, replace(TEACHER.train, epochs=2), ("combined",)):
            ids[spec.role] = submit_run(jobs, dataset_id, spec, teacher_run_id=ids["teacher"])
        for run_id in ids.values():
            jobs.wait(run_id)
    for name, run_id in ids.items():
        run = store.get_run(run_id)
        if run.status != Status.SUCCEEDED:
            raise SystemExit(f"the template {name} run failed: {run.error}")
    return ids


def copy_run(store: Store, template_id: int, teacher_run_id: int | None, number: int) -> int:
    """A finished copy of a run: row, epochs, results and its own copy of the checkpoint."""
    template = store.get_run(template_id)
    name = f"{template.name or template.role} copy {number}"
    run = store.create_run(
        template.dataset_id,
        template.role,
        template.model,
        template.config,
        teacher_run_id=teacher_run_id,
        status=Status.SUCCEEDED,
        name=name,
    )
    checkpoint = None
    if template.checkpoint_path is not None:
        checkpoint = paths.run_dir(run.id) / template.checkpoint_path.name
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template.checkpoint_path, checkpoint)
        store.add_artifact(
            run.id, "checkpoint", checkpoint, checkpoint.stat().st_size, file_sha256(checkpoint)
        )
    store.update_run(run.id, num_params=template.num_params, checkpoint_path=checkpoint)
    for epoch in store.epochs(template_id):
        store.add_epoch(run.id, epoch.epoch, epoch.loss, epoch.terms, epoch.val, epoch.seconds)
    for split in ("valid", "test"):
        rows = [(r.metric, r.k, r.value) for r in store.result_records(template_id, split)]
        store.set_results(run.id, split, rows)
    return run.id


def seed(n_runs: int) -> dict[str, int]:
    """Fill the store of the current ``DISTILLERY_HOME`` with ``n_runs`` finished runs."""
    from core.ingestion.registry import register_dataset

    store = Store()
    try:
        dataset = register_dataset(store, load_demo_dataset(scale=SCALE), source="demo shop")
        ids = train_templates(store, dataset.id)
        number = 0
        while len(store.list_runs()) < n_runs:
            number += 1
            teacher = copy_run(store, ids["teacher"], None, number)
            for role in (Role.STUDENT, Role.BASELINE):
                if len(store.list_runs()) < n_runs:
                    copy_run(store, ids[role], teacher, number)
        return {"dataset": dataset.id, **ids}
    finally:
        store.close()


# --------------------------------------------------------------------------- timing
def _keep_navigation_mode() -> None:
    """AppTest resets Streamlit's pages/-folder mode before each run; a real server leaves it
    for good once app.py has called st.navigation (see pages/common.py). Do the same here."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def navigation_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = navigation_init


_COMPONENTS: list = []


def _session(page: str):
    """A new AppTest session on ``page`` (a new browser tab on the same server)."""
    from streamlit.components.v2.component_manager import BidiComponentManager
    from streamlit.testing.v1 import AppTest

    if not _COMPONENTS:
        # A server scans the installed packages for components once, at start-up; AppTest
        # does it for every new session (about 0.3 s here), which no user ever waits for.
        manager = BidiComponentManager()
        manager.discover_and_register_components(start_file_watching=False)
        _COMPONENTS.append(manager)
    at = AppTest.from_file(APP, default_timeout=120)
    at._bidi_component_manager = _COMPONENTS[0]
    at.switch_page(f"pages/{page}.py")
    return at


def _timed_run(at) -> float:
    from streamlit import config

    start = time.perf_counter()
    at.run()
    if config.get_option("runner.postScriptGC"):
        gc.collect(2)  # a server collects after every script run (unless configured off)
    seconds = time.perf_counter() - start
    if at.exception:
        raise SystemExit(f"{at} raised: {[e.value for e in at.exception]}")
    return seconds


def time_page(page: str, repeat: int) -> dict[str, float]:
    """Cold, first-run and rerun seconds of one page (see the module doc)."""
    import streamlit as st

    st.cache_data.clear()
    forget_run(0)  # empties the loaded-model caches
    _cached_dataset.cache_clear()
    # The store and the job manager (st.cache_resource) stay open: a restarted server
    # opens them once, on its first page of any kind.
    cold = _timed_run(_session(page))
    firsts, reruns = [], []
    for _ in range(repeat):
        at = _session(page)
        firsts.append(_timed_run(at))
        reruns.append(_timed_run(at))
    return {
        "seconds": round(statistics.median(firsts), 3),
        "warm_seconds": round(statistics.median(reruns), 3),
        "cold_seconds": round(cold, 3),
    }


def profile_page(page: str, top: int = 40) -> None:
    """Print a cProfile of one warm rerun of ``page`` (the script runs on its own thread)."""
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    profiler = cProfile.Profile()
    original = ScriptRunner._run_script

    def profiled(self, rerun_data):
        profiler.enable()
        try:
            return original(self, rerun_data)
        finally:
            profiler.disable()

    at = _session(page)
    _timed_run(at)
    ScriptRunner._run_script = profiled
    try:
        _timed_run(at)
    finally:
        ScriptRunner._run_script = original
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def measure(n_runs: int, pages: tuple[str, ...], repeat: int, profile: str | None) -> list[dict]:
    home = Path(tempfile.mkdtemp(prefix="distillery-pages-"))
    os.environ[HOME_ENV] = str(home)
    try:
        started = time.perf_counter()
        seed(n_runs)
        print(f"seeded {n_runs} runs in {time.perf_counter() - started:.1f} s", flush=True)
        import streamlit as st

        # Each store size gets its own store and job manager, as a server started on it.
        st.cache_resource.clear()
        _timed_run(_session("home"))  # imports and the store's first connection
        if profile:
            profile_page(profile)
        rows = []
        for page in pages:
            row = {"page": page, "runs": n_runs, **time_page(page, repeat)}
            print(
                f"{page:8} {n_runs:4d} runs  first {row['seconds']:6.3f} s  "
                f"rerun {row['warm_seconds']:6.3f} s  cold {row['cold_seconds']:6.3f} s",
                flush=True,
            )
            rows.append(row)
        st.cache_resource.clear()  # shuts nothing down: see _stop_managers
        return rows
    finally:
        _stop_managers()
        shutil.rmtree(home, ignore_errors=True)


_MANAGERS: list = []


def _track_managers() -> None:
    """Remember every job manager the pages create, to stop its threads between stores."""
    from core.jobs import JobManager

    init = JobManager.__init__

    def tracked(self, *args, **kwargs):
        init(self, *args, **kwargs)
        _MANAGERS.append(self)

    JobManager.__init__ = tracked


def _stop_managers() -> None:
    while _MANAGERS:
        _MANAGERS.pop().shutdown(wait=True, cancel_pending=True)


# --------------------------------------------------------------------------- app overhead
# The baseline: the run trained on the main thread of a plain process, as
# ``python -m core run`` trains (a job manager claims it and serves it right there).
HEADLESS_CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]);"
    "from core.jobs import JobManager; from core.runner import training_runner;"
    "from core.store import Store;"
    "m = JobManager(Store(), training_runner, workers=0);"
    "m._serve(m.store.claim_run(m.owner, m.lease_s)); m.shutdown()"
)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (from /proc; 0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> list[int]:
    """Every live process below ``root`` (the browser's processes, under this one)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def _wait_status(store: Store, run_id: int, statuses: set[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while (status := store.get_run(run_id).status) not in statuses:
        if time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} still {status} after {timeout:.0f} s")
        time.sleep(0.2)
    return status


def _submit_teacher(store: Store, dataset_id: int, epochs: int) -> int:
    from core.jobs import JobManager
    from core.runner import submit_run, training_runner
    from core.views.forms import demo_plan

    # No `with`: leaving it would cancel the submission; a plain shutdown leaves the run
    # queued for the process under test.
    jobs = JobManager(store, training_runner, workers=0, recover=False)
    run_id = submit_run(jobs, dataset_id, demo_plan(epochs).teacher)
    jobs.shutdown(wait=True)
    return run_id


def _epoch_seconds(store: Store, run_id: int) -> list[float]:
    run = store.get_run(run_id)
    if run.status != Status.SUCCEEDED:
        raise SystemExit(f"run {run_id} ended {run.status}: {run.error}")
    return [round(e.seconds, 2) for e in store.epochs(run_id)]


def _headless(store: Store, dataset_id: int, epochs: int) -> dict:
    """The teacher trained by a job manager in a plain process (no server, no browser)."""
    import subprocess

    run_id = _submit_teacher(store, dataset_id, epochs)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", HEADLESS_CHILD, str(ROOT)], check=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {
        "mode": "headless",
        "epoch_seconds": _epoch_seconds(store, run_id),
        "wall_seconds": round(wall, 1),
        "process_cpu_seconds": round(cpu, 1),
    }


def _browser_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each process under this one except the server ``pid`` and its
    training processes: the browser."""
    server = {pid, *_descendants(pid)}
    return {p: _cpu_seconds(p) for p in _descendants(os.getpid()) if p not in server}


def _in_app(store: Store, dataset_id: int, epochs: int, url: str, pid: int, tab) -> dict:
    """The teacher trained by the app's job manager, with ``tab`` (or no browser) open on
    the Train page's live panel while it trains. CPU is counted from the submission on."""
    server_cpu, browser_cpu = _cpu_seconds(pid), _browser_cpu(pid)
    started = time.monotonic()
    run_id = _submit_teacher(store, dataset_id, epochs)
    _wait_status(store, run_id, {Status.RUNNING}, 60)
    if tab is not None:
        _open(tab, url + "/train")  # the live panel polls while a run is active
    _wait_status(store, run_id, {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}, 3600)
    wall = time.monotonic() - started
    browser = sum(cpu - browser_cpu.get(p, 0.0) for p, cpu in _browser_cpu(pid).items())
    return {
        "mode": "app, Train page open" if tab is not None else "app, no browser",
        "epoch_seconds": _epoch_seconds(store, run_id),
        "wall_seconds": round(wall, 1),
        "process_cpu_seconds": round(_cpu_seconds(pid) - server_cpu, 1),
        "browser_cpu_seconds": round(browser, 1),
    }


def _open(tab, url: str) -> None:
    """Load ``url`` and wait until its script run has finished."""
    tab.goto(url)
    tab.wait_for_selector(
        "[data-testid='stApp'][data-test-script-state='notRunning']", timeout=180_000
    )


def _start_server(home: Path) -> tuple[object, str]:
    """``streamlit run app.py`` as a user starts it (the product's .streamlit/config.toml)."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, HOME_ENV: str(home), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.port", str(port), "--server.address", "127.0.0.1",
    ]  # fmt: skip
    log = (home / "streamlit.log").open("w")
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"streamlit did not start; see {home / 'streamlit.log'}")
        time.sleep(0.25)


def _launch(playwright):
    """Headless Debian Chromium, as the browser tests drive it."""
    return playwright.chromium.launch(
        executable_path=shutil.which("chromium"),
        headless=True,
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


def _stop_server(proc) -> None:
    import signal

    os.killpg(proc.pid, signal.SIGTERM)  # its own session: streamlit and nothing else
    proc.wait(timeout=30)


def measure_polling(seconds: float) -> dict:
    """CPU that the server and a browser tab spend while the Train page's live panel (and
    the sidebar) poll one running run, with nothing training: the app's own cost per second.

    The run is held by a stand-in owner that reported three epochs, then stays silent.
    """
    from playwright.sync_api import sync_playwright

    from core.ingestion.registry import register_dataset

    home = Path(tempfile.mkdtemp(prefix="distillery-polling-"))
    os.environ[HOME_ENV] = str(home)
    store = Store()
    try:
        dataset = register_dataset(store, load_demo_dataset(scale=SCALE), source="demo shop")
        run_id = _submit_teacher(store, dataset.id, 12)
        store.claim_run("bench-polling", 3600)
        for epoch in (1, 2, 3):
            snapshot = {"epoch": epoch, "total_epochs": 12, "fraction": epoch / 12}
            val = {"ndcg@10": 0.1 * epoch}
            store.add_epoch(
                run_id, epoch, 1 / epoch, {"task": 1 / epoch}, val, 10.0,
                owner="bench-polling", progress={**snapshot, "message": f"epoch {epoch}"},
            )  # fmt: skip
        proc, url = _start_server(home)
        try:
            with sync_playwright() as playwright:
                browser = _launch(playwright)
                tab = browser.new_page(viewport={"width": 1440, "height": 1000})
                _open(tab, url + "/train")
                time.sleep(5)  # the first render has settled
                server, before = _cpu_seconds(proc.pid), _browser_cpu(proc.pid)
                time.sleep(seconds)
                server = _cpu_seconds(proc.pid) - server
                shown = sum(c - before.get(p, 0.0) for p, c in _browser_cpu(proc.pid).items())
                browser.close()
        finally:
            _stop_server(proc)
    finally:
        store.close()
        shutil.rmtree(home, ignore_errors=True)
    return {
        "seconds": seconds,
        "server_cpu_seconds": round(server, 2),
        "browser_cpu_seconds": round(shown, 2),
        "share_of_one_core": round((server + shown) / seconds, 3),
    }


def measure_overhead(scale: float, epochs: int, rounds: int) -> dict:
    """Epoch seconds of the demo teacher: headless vs in the app with the Train page open.

    Rounds alternate the modes, so a neighbour's load on a shared machine hits each alike.
    """
    from playwright.sync_api import sync_playwright

    from core.ingestion.registry import register_dataset

    home = Path(tempfile.mkdtemp(prefix="distillery-overhead-"))
    os.environ[HOME_ENV] = str(home)
    store = Store()
    dataset = register_dataset(store, load_demo_dataset(scale=scale), source="demo shop")
    rows: list[dict] = []
    try:
        with sync_playwright() as playwright:
            browser = _launch(playwright)
            tab = browser.new_page(viewport={"width": 1440, "height": 1000})
            for number in range(rounds):
                # No server while the headless process trains: its job manager would claim
                # the run.
                rows.append({**_headless(store, dataset.id, epochs), "round": number + 1})
                print(json.dumps(rows[-1]), flush=True)
                proc, url = _start_server(home)
                try:
                    # The app's job manager starts with the first page's script run.
                    _open(tab, url + "/train")
                    tab.goto("about:blank")
                    for page in (None, tab):
                        row = _in_app(store, dataset.id, epochs, url, proc.pid, page)
                        rows.append({**row, "round": number + 1})
                        print(json.dumps(rows[-1]), flush=True)
                        tab.goto("about:blank")
                finally:
                    _stop_server(proc)
            browser.close()
    finally:
        store.close()
        shutil.rmtree(home, ignore_errors=True)

    def mean_epoch(mode: str) -> float:
        seconds = [s for r in rows if r["mode"] == mode for s in r["epoch_seconds"]]
        return round(statistics.mean(seconds), 2)

    def mean_of(mode: str, key: str) -> float:
        return round(statistics.mean(r.get(key, 0.0) for r in rows if r["mode"] == mode), 1)

    base = mean_epoch("headless")
    summary = {
        mode: {
            "mean_epoch_seconds": mean_epoch(mode),
            "overhead": round(mean_epoch(mode) / base - 1, 3),
            "process_cpu_seconds": mean_of(mode, "process_cpu_seconds"),
            "browser_cpu_seconds": mean_of(mode, "browser_cpu_seconds"),
        }
        for mode in ("headless", "app, no browser", "app, Train page open")
    }
    return {"scale": scale, "epochs": epochs, "summary": summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="runs stored for every page")
    parser.add_argument("--compare-runs", type=int, default=200, help="runs stored for Compare")
    parser.add_argument("--repeat", type=int, default=3, help="sessions timed per page")
    parser.add_argument("--pages", nargs="*", default=list(PAGES), choices=PAGES)
    parser.add_argument("--profile", choices=PAGES, help="print a cProfile of this page")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--overhead",
        action="store_true",
        help="instead: the demo teacher's epoch time headless vs in the app (Train page open)",
    )
    parser.add_argument("--scale", type=float, default=0.3, help="demo shop size (--overhead)")
    parser.add_argument("--epochs", type=int, default=2, help="teacher epochs (--overhead)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of modes (--overhead)")
    parser.add_argument(
        "--poll-seconds", type=float, default=60, help="polling measured this long (--overhead)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for name in (DB_URL_ENV, SYNC_JOBS_ENV):
        os.environ.pop(name, None)
    if args.overhead:
        polling = measure_polling(args.poll_seconds)
        print("polling, nothing training:", json.dumps(polling), flush=True)
        result = measure_overhead(args.scale, args.epochs, args.rounds) if args.rounds else {}
        result = {"polling": polling, **result}
        print(json.dumps(result.get("summary", {}), indent=2))
        OVERHEAD.parent.mkdir(parents=True, exist_ok=True)
        OVERHEAD.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {OVERHEAD}")
        return
    _keep_navigation_mode()
    _track_managers()

    rows = measure(args.runs, tuple(args.pages), args.repeat, args.profile)
    if args.compare_runs and "compare" in args.pages:
        rows += measure(args.compare_runs, ("compare",), args.repeat, None)

    print(f"\n{'page':8} {'runs':>5} {'first s':>8} {'rerun s':>8} {'cold s':>8}")
    for row in rows:
        flag = "" if row["seconds"] < BUDGET_S else "  over budget"
        print(
            f"{row['page']:8} {row['runs']:5d} {row['seconds']:8.3f} "
            f"{row['warm_seconds']:8.3f} {row['cold_seconds']:8.3f}{flag}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
