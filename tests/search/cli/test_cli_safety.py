"""The CLI loses nothing and never shows a traceback: destinations, the run lock, store repair, failed starts and
bad input (issue 11). Searches run on the toy benchmark table (TOY TEST DATA, see tests/toy_table.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from toy_table import TOY_SPACE, TOY_TASK, write_toy_table
from typer.testing import CliRunner

from distilsearch.kdlib.data.tasks import TASKS
from distilsearch.search.cli.main import app
from distilsearch.search.run_config import SearchConfig

runner = CliRunner()


@dataclasses.dataclass(frozen=True)
class Toy:
    """A toy table, its space and a finished evolution run over them."""

    folder: Path
    table: Path
    space: Path
    run: Path

    def search(
        self,
        run: Path | None = None,
        *extra: str,
        agent: str = "evolution",
        budget: int = 4,
        table: Path | None = None,
        space: Path | None = None,
    ) -> list[str]:
        return [
            *("search", "--backend", "table", "--table", str(table or self.table), "--space", str(space or self.space)),
            *("--agent", agent, "--budget", str(budget), "--out", str(run or self.run), "--task", TOY_TASK),
            *extra,
        ]


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Toy:
    monkeypatch.setitem(TASKS, TOY_TASK, dataclasses.replace(TASKS["rt-polarity"], name=TOY_TASK))
    table = write_toy_table(tmp_path / "toy.csv")
    space = tmp_path / "space.yaml"
    TOY_SPACE.to_yaml(space)
    toy = Toy(tmp_path, table, space, tmp_path / "run")
    finished = runner.invoke(app, toy.search())
    assert finished.exit_code == 0, finished.output
    return toy


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to prove a command changed nothing)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def refused(argv: list[str], *expected: str) -> str:
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for text in expected:
        assert text in result.output, result.output
    return result.output


def store_rows(run: Path) -> int:
    with sqlite3.connect(run / "store.sqlite") as connection:
        return connection.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]


# ---- 1. --out never deletes what is there ---------------------------------------------------------------------------


def test_distill_refuses_a_folder_with_user_files(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    refused(["distill", "--out", str(out), "--num-layers", "2"], "exists and is not empty", "--force")
    assert (out / "notes.txt").read_text() == "keep me"


def test_export_never_writes_over_the_run_or_a_folder_holding_it(toy: Toy) -> None:
    before = tree(toy.run)
    refused(["export", str(toy.run), "--out", str(toy.run)], str(toy.run))
    refused(["export", str(toy.run), "--out", str(toy.run), "--force"], str(toy.run))
    refused(["export", str(toy.run), "--out", str(toy.folder), "--force"], "contains")
    other = toy.folder / "other-run"
    assert runner.invoke(app, toy.search(other, agent="random")).exit_code == 0
    refused(["export", str(toy.run), "--out", str(other), "--force"], "holds a search run")
    assert tree(toy.run) == before


def test_export_refuses_a_file_and_an_occupied_folder(toy: Toy) -> None:
    afile = toy.folder / "student.txt"
    afile.write_text("x")
    refused(["export", str(toy.run), "--out", str(afile)], "is a file")
    occupied = toy.folder / "occupied"
    occupied.mkdir()
    (occupied / "a").write_text("a")
    refused(["export", str(toy.run), "--out", str(occupied)], "exists and is not empty")
    assert (occupied / "a").read_text() == "a"


def test_store_export_asks_before_replacing_a_file(toy: Toy) -> None:
    out = toy.folder / "rows.csv"
    out.write_text("mine")
    refused(["store", "export", str(toy.run / "store.sqlite"), str(out)], "exists", "--force")
    assert out.read_text() == "mine"
    replaced = runner.invoke(app, ["store", "export", str(toy.run / "store.sqlite"), str(out), "--force"])
    assert replaced.exit_code == 0 and out.read_text().startswith("key,")
    folder = toy.folder / "rows.jsonl"
    folder.mkdir()
    refused(["store", "export", str(toy.run / "store.sqlite"), str(folder)], "is a folder")


# ---- 2. one search per run folder ------------------------------------------------------------------------------------


def hold_lock(run: Path) -> subprocess.Popen[str]:
    """Another process holding the run folder's lock, as a second search would."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from distilsearch.search.run_lock import RunLock
        with RunLock(Path({str(run)!r})):
            print("held", flush=True)
            time.sleep(120)
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_search_on_a_run_folder_fails_at_once_naming_the_holder(toy: Toy) -> None:
    before = (toy.run / "evaluations.jsonl").read_text()
    holder = hold_lock(toy.run)
    try:
        refused(toy.search(budget=8), "in use by another search", f"pid {holder.pid}")
        assert (toy.run / "evaluations.jsonl").read_text() == before
        for command in (["pareto", str(toy.run)], ["store", "ls", str(toy.run / "store.sqlite")]):
            assert runner.invoke(app, command).exit_code == 0, command
    finally:
        holder.kill()
        holder.wait()
    resumed = runner.invoke(app, toy.search(budget=8))
    assert resumed.exit_code == 0, resumed.output
    assert len((toy.run / "evaluations.jsonl").read_text().splitlines()) == 9


def test_read_only_commands_create_no_store(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    refused(["store", "ls", str(empty)], "not an evaluation store")
    assert empty.stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite"]
    refused(["store", "ls", str(tmp_path / "missing.sqlite")], "no evaluation store")
    run = tmp_path / "run"
    run.mkdir()
    (run / "store.sqlite").touch()
    refused(["pareto", str(run)], "not an evaluation store")
    assert (run / "store.sqlite").stat().st_size == 0


# ---- 4. the store and the ledger agree -------------------------------------------------------------------------------


def test_resume_writes_store_rows_the_ledger_has(toy: Toy) -> None:
    with sqlite3.connect(toy.run / "store.sqlite") as connection:
        connection.execute("DELETE FROM evaluations WHERE rowid = (SELECT MAX(rowid) FROM evaluations)")
    assert store_rows(toy.run) == 3
    resumed = runner.invoke(app, toy.search())
    assert resumed.exit_code == 0 and "restored 1 evaluation" in resumed.output, resumed.output
    assert store_rows(toy.run) == 4
    for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):
        (toy.run / name).unlink(missing_ok=True)
    rebuilt = runner.invoke(app, toy.search())
    assert rebuilt.exit_code == 0 and "restored 4 evaluation" in rebuilt.output, rebuilt.output
    assert store_rows(toy.run) == 4
    frontier = (toy.run / "frontier.csv").read_text().splitlines()
    assert len(frontier) > 1


# ---- 5. a failed start leaves nothing that refuses the corrected command --------------------------------------------


def test_a_failed_start_leaves_no_folder(toy: Toy) -> None:
    broken = toy.folder / "broken.csv"
    broken.write_text("not,a\ntable,at all\n")
    run = toy.folder / "fresh"
    refused(toy.search(run, agent="random", table=broken), str(broken))
    assert not run.exists()
    assert runner.invoke(app, toy.search(run, agent="random")).exit_code == 0


def test_a_half_made_run_folder_takes_the_corrected_settings(toy: Toy) -> None:
    run = toy.folder / "half"
    run.mkdir()
    SearchConfig(task=TOY_TASK, agent="random", backend="table", table=toy.folder / "gone.csv").save(run)
    (run / "search.log").write_text("")
    result = runner.invoke(app, toy.search(run, agent="random"))
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["table"] == str(toy.table)


def test_config_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    SearchConfig(budget=3).save(tmp_path)
    before = (tmp_path / "config.yaml").read_text()

    def crash(source: object, target: object) -> None:
        raise OSError("disk pulled out")

    monkeypatch.setattr("os.replace", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        SearchConfig(budget=9).save(tmp_path)
    assert (tmp_path / "config.yaml").read_text() == before
    assert [path.name for path in tmp_path.iterdir()] == ["config.yaml"]


# ---- 6. bad input: a clear error naming it, exit 2, never a traceback -----------------------------------------------

Case = Callable[[Toy], tuple[list[str], str]]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _search_config(toy: Toy, text: str) -> tuple[list[str], str]:
    config = _write(toy.folder / "bad.yaml", text)
    return [*toy.search(toy.folder / "new"), "--config", str(config)], str(config)


def _corrupt_store(toy: Toy) -> Path:
    """The run's store overwritten with junk, its write-ahead log gone (as after the writer closed it)."""
    for suffix in ("-wal", "-shm"):
        (toy.run / f"store.sqlite{suffix}").unlink(missing_ok=True)
    return _write(toy.run / "store.sqlite", b"junk" * 500)


def _run_file(toy: Toy, name: str, text: str | bytes) -> tuple[list[str], str]:
    _write(toy.run / name, text)
    return toy.search(budget=6), name


def _torn_ledger(toy: Toy) -> tuple[list[str], str]:
    lines = (toy.run / "evaluations.jsonl").read_text().splitlines()
    return _run_file(toy, "evaluations.jsonl", "\n".join([*lines[:2], "{torn", *lines[2:]]) + "\n")


def _non_run_folder(toy: Toy) -> tuple[list[str], str]:
    _write(toy.folder / "photos" / "a.jpg", "x")
    return toy.search(toy.folder / "photos"), "photos"


def _broken_run(toy: Toy, name: str, text: str | bytes) -> tuple[list[str], str]:
    _write(toy.run / name, text)
    return ["export", str(toy.run)], name


BAD_INPUTS: dict[str, Case] = {
    "search --config with a YAML syntax error": lambda toy: _search_config(toy, "agent: [random\n"),
    "search --config that is a list": lambda toy: _search_config(toy, "- random\n"),
    "search --config with an unknown key": lambda toy: _search_config(toy, "colour: blue\n"),
    "search --config with a wrong type": lambda toy: _search_config(toy, "budget: lots\n"),
    "search --config that is binary": lambda toy: _search_config(toy, "\x00\xff\xfe"),
    "run config.yaml with a YAML syntax error": lambda toy: _run_file(toy, "config.yaml", "task: [\n"),
    "run config.yaml that is not a mapping": lambda toy: _run_file(toy, "config.yaml", "42\n"),
    "run store.sqlite that is not SQLite": lambda toy: (toy.search(budget=6), _corrupt_store(toy).name),
    "run evolution.json that is not JSON": lambda toy: _run_file(toy, "evolution.json", "{not json"),
    "run evolution.json of another shape": lambda toy: _run_file(toy, "evolution.json", '{"version": 1}'),
    "run evolution.json that is a list": lambda toy: _run_file(toy, "evolution.json", "[1, 2]"),
    "run ledger with a torn middle line": _torn_ledger,
    "search --out naming a file": lambda toy: (toy.search(_write(toy.folder / "afile", "x")), "afile"),
    "search --out of a non-run folder": _non_run_folder,
    "search --space that is not YAML": lambda toy: (
        toy.search(toy.folder / "new", space=_write(toy.folder / "s.yaml", "choices: [\n")),
        "s.yaml",
    ),
    "search --table that is binary": lambda toy: (
        toy.search(toy.folder / "new", table=_write(toy.folder / "t.csv", b"\x00\x01\xff")),
        "t.csv",
    ),
    "search --table that does not exist": lambda toy: (
        toy.search(toy.folder / "new", table=toy.folder / "nope.csv"),
        "nope.csv",
    ),
    "search --base that is a hub id": lambda toy: (
        ["search", "--base", "bert-base-uncased", "--out", str(toy.folder / "new")],
        "bert-base-uncased",
    ),
    "distill --config whose spec is not a mapping": lambda toy: (
        ["distill", "--config", str(_write(toy.folder / "d.yaml", "spec: 3\n"))],
        "d.yaml",
    ),
    "distill --config with a YAML syntax error": lambda toy: (
        ["distill", "--config", str(_write(toy.folder / "d.yaml", "spec: {\n"))],
        "d.yaml",
    ),
    "distill --base that is a hub id": lambda toy: (["distill", "--base", "bert-base-uncased"], "bert-base-uncased"),
    "teacher --base that is a file": lambda toy: (
        ["teacher", "--base", str(_write(toy.folder / "weights.bin", "x"))],
        "weights.bin",
    ),
    "teacher --max-length beyond any model": lambda toy: (["teacher", "--max-length", "100000"], "100000"),
    "export of a run with a corrupt store": lambda toy: (["export", str(toy.run)], _corrupt_store(toy).name),
    "export of a run whose config.yaml is broken": lambda toy: _broken_run(toy, "config.yaml", "task: [\n"),
    "store ls of a folder": lambda toy: (["store", "ls", str(toy.folder)], str(toy.folder)),
    "store show of an empty SQLite file": lambda toy: (
        ["store", "show", str(_write(toy.folder / "c.sqlite", b"")), "ab"],
        "c.sqlite",
    ),
    "pareto of a missing run": lambda toy: (["pareto", str(toy.folder / "nowhere")], "nowhere"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_a_clear_error(toy: Toy, name: str) -> None:
    argv, named = BAD_INPUTS[name](toy)
    refused(argv, named)


def test_an_internal_error_prints_one_line_and_the_log(toy: Toy, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("distilsearch.search.pareto.frontier_table", explode)
    result = runner.invoke(app, ["pareto", str(toy.run)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "internal error: ZeroDivisionError: a bug" in lines[-1] and "Traceback" not in result.output
    log = Path(lines[-1].split("full traceback in ")[1].rstrip(")"))
    assert "Traceback" in log.read_text() and "explode" in log.read_text()


def test_a_budget_beyond_the_space_says_what_stays_unspent(toy: Toy) -> None:
    result = runner.invoke(app, toy.search(toy.folder / "all", agent="random", budget=10_000))
    assert result.exit_code == 0, result.output
    assert "above the" in result.output and "left unspent" in result.output
    assert json.loads((toy.folder / "all" / "evaluations.jsonl").read_text().splitlines()[0])


# ---- 6. fuzz: malformed configs, spaces, tables and run folders -----------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
MALFORMED = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300),
    JSON_VALUES.map(lambda value: yaml.safe_dump(value)),
    JSON_VALUES.map(json.dumps),
)
FUZZ = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def clear_or_accepted(argv: list[str], bad_file: Path) -> None:
    """The command either accepts the file (exit 0) or refuses it with exit 2 naming it; never a traceback."""
    result = runner.invoke(app, argv)
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output
    if result.exit_code == 2:
        assert bad_file.name in result.output or str(bad_file.parent) in result.output, result.output


@pytest.mark.parametrize("name", ["config.yaml", "evolution.json", "evaluations.jsonl", "store.sqlite"])
def test_fuzzed_run_folder_files(toy: Toy, name: str) -> None:
    copies = iter(range(10_000))

    @FUZZ
    @given(content=MALFORMED)
    def resume(content: str | bytes) -> None:
        run = toy.folder / f"copy-{next(copies)}"
        shutil.copytree(toy.run, run, ignore=shutil.ignore_patterns("store.sqlite-*"))
        _write(run / name, content)
        clear_or_accepted(toy.search(run, budget=6), run / name)

    resume()


@pytest.mark.parametrize("flag", ["--config", "--space", "--table"])
def test_fuzzed_inputs_of_a_new_search(toy: Toy, flag: str) -> None:
    copies = iter(range(10_000))

    @FUZZ
    @given(content=MALFORMED)
    def start(content: str | bytes) -> None:
        number = next(copies)
        bad = _write(toy.folder / f"input-{number}{'.csv' if flag == '--table' else '.yaml'}", content)
        run = toy.folder / f"new-{number}"
        argv = {
            "--config": [*toy.search(run, agent="random"), "--config", str(bad)],
            "--space": toy.search(run, agent="random", space=bad),
            "--table": toy.search(run, agent="random", table=bad),
        }[flag]
        clear_or_accepted(argv, bad)
        if run.exists():
            assert (run / "config.yaml").is_file(), "a refused start left a half-made run folder"

    start()
