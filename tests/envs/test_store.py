import csv
import json
import multiprocessing
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from distilsearch.envs.store import (
    SCHEMA_VERSION,
    EvaluationStore,
    StoreError,
    StoreTimeoutError,
    evaluation_key,
)
from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.search.cli import store as store_cli
from distilsearch.search.cli.store import store_app

REPO = Path(__file__).resolve().parents[2]
SPEC = StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64)
META = {"task": "toy", "teacher_key": "teacher0", "fidelity": "low"}
LATENCY = LatencyPoint(
    batch=1,
    seq_len=64,
    median_ms=2.5,
    p10_ms=2.4,
    p90_ms=2.7,
    teacher_median_ms=10.0,
    speedup=4.0,
    theoretical_speedup=5,
)

WORKER = """
import sys, time
from pathlib import Path
from distilsearch.envs.store import EvaluationStore, evaluation_key
from distilsearch.kdlib.students.candidate import Candidate, EvalResult
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec

mode, store_path, go, worker, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
spec = StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64)
meta = {"task": "toy", "teacher_key": "teacher0", "fidelity": "low"}
while not go.exists():
    time.sleep(0.005)
store = EvaluationStore(store_path)
if mode == "claim":
    store.claim(evaluation_key(Candidate(spec=spec), **meta), 1.0)
    print("claimed", flush=True)
    time.sleep(600)
elif mode == "evaluate":
    candidate = Candidate(spec=spec)
    def evaluate():
        with open(sys.argv[6], "a") as calls:
            calls.write(f"{worker}\\n")
        time.sleep(0.5)
        return EvalResult(candidate=candidate, status="ok", accuracy=0.5 + worker / 100)
    key = evaluation_key(candidate, **meta)
    print(store.get_or_evaluate(key, evaluate, poll_seconds=0.05, wait_seconds=30, **meta).accuracy, flush=True)
else:
    for i in range(count):
        candidate = Candidate(spec=spec, kd=KDConfig(seed=worker * 100_000 + i))
        key = evaluation_key(candidate, **meta)
        store.put(key, EvalResult(candidate=candidate, status="ok", accuracy=i / count), **meta)
        print(key, flush=True)
"""


def result_for(seed: int = 0, status: str = "ok", **fields: object) -> EvalResult:
    return EvalResult(candidate=Candidate(spec=SPEC, kd=KDConfig(seed=seed)), status=status, **fields)


def put(store: EvaluationStore, result: EvalResult, **meta: str) -> str:
    meta = META | meta
    key = evaluation_key(result.candidate, **meta)
    store.put(key, result, **meta)
    return key


def start_worker(tmp_path: Path, mode: str, worker: int, count: int = 0, *extra: str) -> subprocess.Popen[str]:
    arguments = [mode, str(tmp_path / "store.db"), str(tmp_path / "go"), str(worker), str(count), *extra]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *arguments], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def store(tmp_path: Path) -> EvaluationStore:
    return EvaluationStore(tmp_path / "nested" / "store.db")


def test_round_trip_of_ok_failed_and_invalid_results(store: EvaluationStore) -> None:
    ok = result_for(
        0,
        accuracy=0.8,
        ood_accuracy={"a": 0.6, "b": 0.7},
        latency=[LATENCY],
        params_total=1234,
        train_seconds=12.5,
        student_path="/tmp/student",
        provenance={"git": "abc"},
    )
    failed = result_for(1, "failed", error="loss diverged at step 7")
    invalid = result_for(2, "invalid", error="num_layers=9 must be in 1..4")
    keys = [put(store, result) for result in (ok, failed, invalid)]
    assert store.path.is_file() and len(store) == 3
    assert [store.get(key) for key in keys] == [ok, failed, invalid]
    assert all(key in store for key in keys) and "0" * 64 not in store and store.get("0" * 64) is None
    with pytest.raises(KeyError, match="0000"):
        store["0" * 64]
    rows = {row.status: row for row in store.rows()}
    assert rows["ok"].accuracy == 0.8 and rows["ok"].mean_ood_accuracy == pytest.approx(0.65)
    assert rows["ok"].latency_ms == 2.5 and rows["ok"].params_total == 1234 and rows["ok"].train_seconds == 12.5
    assert rows["ok"].student_path == "/tmp/student" and rows["ok"].pid == os.getpid() and rows["ok"].created
    assert rows["failed"].error == "loss diverged at step 7" and rows["failed"].accuracy is None
    assert rows["invalid"].latency_ms is None and rows["invalid"].candidate == invalid.candidate
    assert rows["ok"].candidate_hash == ok.candidate.content_hash()


def test_evaluation_key_depends_on_every_part() -> None:
    candidate = Candidate(spec=SPEC)
    key = evaluation_key(candidate, **META)
    assert len(key) == 64 and key == evaluation_key(Candidate(spec=SPEC), **META)
    others = [META | {name: "other"} for name in META]
    assert len({key, *(evaluation_key(candidate, **meta) for meta in others)}) == 4
    assert key != evaluation_key(Candidate(spec=SPEC, kd=KDConfig(seed=1)), **META)
    with pytest.raises(ValueError, match="fidelity=''"):
        evaluation_key(candidate, "toy", "teacher0", "")


def test_put_is_idempotent_and_checks_the_key(store: EvaluationStore) -> None:
    first = result_for(accuracy=0.7)
    key = evaluation_key(first.candidate, **META)
    assert store.put(key, first, **META) is True
    assert store.put(key, result_for(accuracy=0.1), **META) is False
    assert store.get(key) == first and len(store) == 1
    with pytest.raises(ValueError, match="does not match"):
        store.put(key, first, **(META | {"fidelity": "high"}))


def test_a_failed_row_is_replaced_only_when_asked(store: EvaluationStore) -> None:
    failed, ok = result_for(status="failed", error="CUDA out of memory"), result_for(accuracy=0.8)
    key = put(store, failed)
    assert store.put(key, ok, **META) is False and store[key] == failed
    assert store.put(key, ok, **META, replace_failed=True) is True and store[key] == ok
    assert store.put(key, failed, **META, replace_failed=True) is False and store[key] == ok


def test_get_or_evaluate_retries_a_stored_failure_only_with_retry_failed(store: EvaluationStore) -> None:
    failed, ok = result_for(status="failed", error="loss became NaN"), result_for(accuracy=0.8)
    key = put(store, failed)
    calls: list[int] = []

    def evaluate() -> EvalResult:
        calls.append(1)
        return ok

    assert store.get_or_evaluate(key, evaluate, **META) == failed and calls == []
    assert store.get_or_evaluate(key, evaluate, **META, retry_failed=True) == ok and len(calls) == 1
    assert store[key] == ok and store.get_or_evaluate(key, evaluate, **META, retry_failed=True) == ok
    assert len(calls) == 1


def test_rows_filter_and_export(store: EvaluationStore, tmp_path: Path) -> None:
    put(store, result_for(0, accuracy=0.8))
    put(store, result_for(1, "failed", error="boom"))
    put(store, result_for(2, accuracy=0.6), task="other")
    assert [r.task for r in store.rows(status="ok")] == ["toy", "other"]
    assert [r.status for r in store.rows(task="toy")] == ["ok", "failed"]
    assert store.rows(task="toy", status="invalid") == []
    with pytest.raises(ValueError, match="status='done'"):
        store.rows(status="done")
    assert store.export(tmp_path / "out" / "all.csv") == 3
    with open(tmp_path / "out" / "all.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row["accuracy"] for row in table] == ["0.8", "", "0.6"] and table[1]["error"] == "boom"
    assert Candidate.model_validate_json(table[0]["candidate"]) == result_for(0).candidate
    assert store.export(tmp_path / "all.jsonl") == 3
    records = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert EvalResult.model_validate(records[2]["result"]) == result_for(2, accuracy=0.6)
    with pytest.raises(ValueError, match=r"all\.txt"):
        store.export(tmp_path / "all.txt")


def test_eight_concurrent_writers_lose_no_rows(tmp_path: Path) -> None:
    workers = [start_worker(tmp_path, "write", worker, 25) for worker in range(8)]
    (tmp_path / "go").touch()
    printed = set()
    for process in workers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        printed |= set(out.split())
    store = EvaluationStore(tmp_path / "store.db")
    assert len(printed) == 200 and len(store) == 200
    assert {row.key for row in store.rows()} == printed


def test_sigkilled_writer_leaves_every_committed_row(tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    process = start_worker(tmp_path, "write", 0, 1_000_000)
    printed = [process.stdout.readline().strip() for _ in range(30)]
    os.kill(process.pid, signal.SIGKILL)
    out, _ = process.communicate(timeout=30)
    printed += out.split()
    assert process.returncode == -signal.SIGKILL and "" not in printed
    store = EvaluationStore(tmp_path / "store.db", create=False)
    assert all(key in store for key in printed) and len(store) >= len(printed)
    with sqlite3.connect(tmp_path / "store.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_claims_refuse_a_second_claimer_until_release_or_expiry(tmp_path: Path) -> None:
    first, second = EvaluationStore(tmp_path / "s.db"), EvaluationStore(tmp_path / "s.db")
    assert first.claim("k", 60) and first.claim("k", 60)
    assert not second.claim("k", 60) and not second.release("k")
    assert first.holder("k") is not None and first.holder("k").split(":")[1] == str(os.getpid())
    assert first.release("k") and first.holder("k") is None
    assert second.claim("k", 0.2) and not first.claim("k", 60)
    time.sleep(0.3)
    assert first.claim("k", 60) and not second.claim("k", 60)
    with pytest.raises(ValueError, match="ttl_seconds=0"):
        first.claim("j", 0)


def test_get_or_evaluate_trains_once_and_stores(store: EvaluationStore) -> None:
    calls = []

    def evaluate() -> EvalResult:
        calls.append(1)
        return result_for(accuracy=0.9)

    key = evaluation_key(result_for().candidate, **META)
    first = store.get_or_evaluate(key, evaluate, **META)
    second = store.get_or_evaluate(key, evaluate, **META)
    assert first == second == store[key] and len(calls) == 1 and store.holder(key) is None


def test_get_or_evaluate_renews_its_lease_and_releases_on_error(tmp_path: Path) -> None:
    store, other = EvaluationStore(tmp_path / "s.db"), EvaluationStore(tmp_path / "s.db")
    key = evaluation_key(result_for().candidate, **META)

    def slow() -> EvalResult:
        time.sleep(0.5)
        assert not other.claim(key, 60), "the lease expired while evaluate was running"
        return result_for(accuracy=0.9)

    def broken() -> EvalResult:
        raise RuntimeError("training crashed")

    with pytest.raises(RuntimeError, match="training crashed"):
        store.get_or_evaluate(key, broken, **META)
    assert key not in store and store.holder(key) is None
    assert store.get_or_evaluate(key, slow, lease_seconds=0.2, **META).accuracy == 0.9


def test_get_or_evaluate_waits_for_a_live_claim_then_times_out(tmp_path: Path) -> None:
    holder, waiter = EvaluationStore(tmp_path / "s.db"), EvaluationStore(tmp_path / "s.db")

    def unreachable() -> EvalResult:
        raise AssertionError("evaluated a key another worker holds")

    key = evaluation_key(result_for().candidate, **META)
    assert holder.claim(key, 60)
    with pytest.raises(StoreTimeoutError, match=f"{key}.*still claimed by .*:{os.getpid()}:"):
        waiter.get_or_evaluate(
            key, lambda: pytest.fail("evaluated a claimed key"), wait_seconds=0.2, poll_seconds=0.05, **META
        )
    holder.release(key)
    assert waiter.get_or_evaluate(key, lambda: result_for(accuracy=0.3), **META).accuracy == 0.3


def test_lease_of_a_killed_worker_expires(tmp_path: Path) -> None:
    (tmp_path / "go").touch()
    process = start_worker(tmp_path, "claim", 0)
    assert process.stdout.readline().strip() == "claimed"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    store = EvaluationStore(tmp_path / "store.db")
    key = evaluation_key(result_for().candidate, **META)
    assert store.holder(key).split(":")[1] == str(process.pid) and not store.claim(key, 60)
    result = store.get_or_evaluate(key, lambda: result_for(accuracy=0.6), wait_seconds=10, poll_seconds=0.05, **META)
    assert result.accuracy == 0.6 and store.holder(key) is None


def test_concurrent_get_or_evaluate_in_two_processes_evaluates_once(tmp_path: Path) -> None:
    calls = tmp_path / "calls.txt"
    workers = [start_worker(tmp_path, "evaluate", worker, 0, str(calls)) for worker in range(2)]
    (tmp_path / "go").touch()
    answers = []
    for process in workers:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        answers.append(out.strip())
    evaluated = calls.read_text().split()
    assert len(evaluated) == 1 and answers[0] == answers[1] == str(0.5 + int(evaluated[0]) / 100)


def test_forked_child_opens_its_own_connection(store: EvaluationStore) -> None:
    before = put(store, result_for(0))
    child = multiprocessing.get_context("fork").Process(target=put, args=(store, result_for(1)))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    after = put(store, result_for(2))
    assert len(store) == 3 and before in store and after in store
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_store_pickles_as_its_path(store: EvaluationStore) -> None:
    copy = pickle.loads(pickle.dumps(store))
    key = put(copy, result_for(accuracy=0.4))
    assert copy.path == store.path and copy.timeout_seconds == store.timeout_seconds and key in store


def test_newer_schema_version_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    EvaluationStore(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade distilsearch"):
        EvaluationStore(path)


def test_missing_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no evaluation store at .*missing\.db"):
        EvaluationStore(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    (tmp_path / "text.db").write_text("not a database, just text that is long enough to have a header" * 4)
    with pytest.raises(StoreError, match=r"text\.db"):
        EvaluationStore(tmp_path / "text.db")
    with sqlite3.connect(tmp_path / "other.db") as connection:
        connection.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(StoreError, match=r"not an evaluation store \(tables: people\)"):
        EvaluationStore(tmp_path / "other.db")
    with sqlite3.connect(tmp_path / "other.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)


runner = CliRunner()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.setattr(store_cli, "console", Console(width=200))
    app = typer.Typer()
    app.add_typer(store_app, name="store")
    return app


@pytest.fixture
def filled(store: EvaluationStore) -> tuple[EvaluationStore, list[str]]:
    keys = [
        put(store, result_for(0, accuracy=0.81, ood_accuracy={"a": 0.5}, latency=[LATENCY], params_total=2_500_000)),
        put(store, result_for(1, "failed", error="loss diverged")),
        put(store, result_for(2, accuracy=0.7), task="other"),
    ]
    return store, keys


def test_cli_ls_table_and_json(cli: typer.Typer, filled: tuple[EvaluationStore, list[str]]) -> None:
    store, keys = filled
    result = runner.invoke(cli, ["store", "ls", str(store.path)])
    assert result.exit_code == 0, result.output
    assert keys[0][:12] in result.stdout and "0.8100" in result.stdout and "2.50" in result.stdout
    assert "L2 H32 A4 F64 a0.5 T2" in result.stdout and "3 evaluation(s)" in result.stdout
    listed = json.loads(runner.invoke(cli, ["store", "ls", str(store.path), "--status", "ok", "--json"]).stdout)
    assert [row["key"] for row in listed] == [keys[0], keys[2]] and listed[0]["params_total"] == 2_500_000
    only = json.loads(runner.invoke(cli, ["store", "ls", str(store.path), "--task", "other", "--json"]).stdout)
    assert [row["key"] for row in only] == [keys[2]]
    bad = runner.invoke(cli, ["store", "ls", str(store.path), "--status", "done"])
    assert bad.exit_code == 2 and "unknown status 'done'" in bad.stderr


def test_cli_show_by_prefix(cli: typer.Typer, filled: tuple[EvaluationStore, list[str]]) -> None:
    store, keys = filled
    result = runner.invoke(cli, ["store", "show", str(store.path), keys[1][:10]])
    assert result.exit_code == 0, result.output
    assert "loss diverged" in result.stdout and "failed" in result.stdout
    record = json.loads(runner.invoke(cli, ["store", "show", str(store.path), keys[0][:10], "--json"]).stdout)
    assert record["key"] == keys[0] and EvalResult.model_validate(record["result"]).accuracy == 0.81
    unknown = next(p for p in ("0", "1", "2", "3") if not any(key.startswith(p) for key in keys))
    missing = runner.invoke(cli, ["store", "show", str(store.path), unknown])
    assert missing.exit_code == 2 and f"no evaluation with key prefix '{unknown}'" in missing.stderr
    bad = runner.invoke(cli, ["store", "show", str(store.path), "xyz"])
    assert bad.exit_code == 2 and "'xyz'" in bad.stderr


def test_cli_show_ambiguous_prefix(cli: typer.Typer, store: EvaluationStore) -> None:
    keys = [put(store, result_for(seed)) for seed in range(17)]
    prefix = next(key[0] for key in keys if sum(other.startswith(key[0]) for other in keys) > 1)
    result = runner.invoke(cli, ["store", "show", str(store.path), prefix])
    assert result.exit_code == 2 and f"key prefix '{prefix}' is ambiguous" in result.stderr


def test_cli_export_and_errors(cli: typer.Typer, filled: tuple[EvaluationStore, list[str]], tmp_path: Path) -> None:
    store, keys = filled
    result = runner.invoke(cli, ["store", "export", str(store.path), str(tmp_path / "rows.jsonl")])
    assert result.exit_code == 0, result.output
    assert "exported 3" in result.stdout
    assert [json.loads(line)["key"] for line in (tmp_path / "rows.jsonl").read_text().splitlines()] == keys
    assert runner.invoke(cli, ["store", "export", str(store.path), str(tmp_path / "rows.csv")]).exit_code == 0
    assert (tmp_path / "rows.csv").read_text().startswith("key,")
    bad = runner.invoke(cli, ["store", "export", str(store.path), str(tmp_path / "rows.txt")])
    assert bad.exit_code == 2 and "rows.txt" in bad.stderr and not (tmp_path / "rows.txt").exists()
    for command in (["ls"], ["show", "ab"], ["export", str(tmp_path / "x.csv")]):
        missing = runner.invoke(cli, ["store", command[0], str(tmp_path / "none.db"), *command[1:]])
        assert missing.exit_code == 2 and "no evaluation store at" in missing.stderr
    assert not (tmp_path / "none.db").exists()
