import hashlib
import json
from typing import Any, ClassVar

import pytest

from distilsearch.kdlib.students.candidate import Candidate, EvalResult, LatencyPoint
from distilsearch.kdlib.students.specs import HashedModel, KDConfig, StudentSpec

SPEC = StudentSpec(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64)


def test_candidate_json_round_trip_and_stable_hash() -> None:
    candidate = Candidate(spec=SPEC, kd=KDConfig(alpha=0.7, temperature=3.0))
    again = Candidate.model_validate_json(candidate.model_dump_json())
    assert again == candidate and again.content_hash() == candidate.content_hash()
    assert Candidate(spec=SPEC, kd=KDConfig(alpha=0.6)).content_hash() != candidate.content_hash()
    assert hash(candidate) == hash(again)


def test_hashes_of_stored_candidates_never_change() -> None:
    # Published in KD-Bench's table, run ledgers and evaluation stores: a change here orphans all of them.
    candidate = Candidate(spec=StudentSpec(num_layers=2, hidden_size=192, num_heads=6, ffn_size=768))
    assert (candidate.content_hash(), candidate.spec.content_hash(), candidate.kd.content_hash()) == (
        "d5c161422f033841",
        "78550adb291533e2",
        "acccd4c2cc603cab",
    )


class Recipe(HashedModel):
    """A model that gained ``ratio`` (0 behaves as before) and ``corpus`` (read only when ``ratio`` > 0; ``"task"``
    behaves as before, the new default does not) after its hashes were stored."""

    LATER_FIELDS: ClassVar[dict[str, Any]] = {"ratio": 0.0, "corpus": "task"}
    alpha: float = 0.5
    ratio: float = 0.0
    corpus: str = "general"

    def inert_fields(self) -> set[str]:
        return {"corpus"} if self.ratio == 0 else set()


def test_a_later_field_at_its_default_leaves_the_hash_unchanged() -> None:
    now, changed = Recipe(alpha=0.7), Recipe(alpha=0.7, ratio=0.2)
    assert now.hashed_fields() == {"alpha": 0.7}
    assert changed.hashed_fields() == {"alpha": 0.7, "ratio": 0.2, "corpus": "general"}
    assert Recipe(alpha=0.7, ratio=0.2, corpus="task").hashed_fields() == {"alpha": 0.7, "ratio": 0.2}
    # the hash a Recipe had before it gained ``ratio``
    before = json.dumps({"kind": "Recipe", "fields": {"alpha": 0.7}}, sort_keys=True, separators=(",", ":"))
    assert now.content_hash() == hashlib.sha256(before.encode("utf-8")).hexdigest()[:16] != changed.content_hash()


def test_candidate_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="surprise"):
        Candidate.model_validate({"spec": SPEC.model_dump(), "surprise": 1})


def test_eval_result_derived_metrics() -> None:
    point = LatencyPoint(
        batch=1,
        seq_len=64,
        median_ms=2.0,
        p10_ms=1.9,
        p90_ms=2.2,
        teacher_median_ms=10.0,
        speedup=5.0,
        theoretical_speedup=6.0,
    )
    result = EvalResult(
        candidate=Candidate(spec=SPEC),
        status="ok",
        accuracy=0.76,
        teacher_accuracy=0.8,
        ood_accuracy={"a": 0.6, "b": 0.7},
        teacher_ood_accuracy={"a": 0.7, "b": 0.8},
        latency=[point],
    )
    assert result.retention == pytest.approx(0.95)
    assert result.mean_ood_accuracy == pytest.approx(0.65)
    assert result.ood_retention == pytest.approx(0.65 / 0.75)
    assert result.speedup(1, 64) == 5.0 and result.speedup(32, 128) is None
    assert EvalResult.model_validate_json(result.model_dump_json()) == result


def test_failed_result_has_no_metrics() -> None:
    result = EvalResult(candidate=Candidate(spec=SPEC), status="failed", error="loss became nan at step 3")
    assert result.retention is None and result.ood_retention is None and result.mean_ood_accuracy is None
    with pytest.raises(ValueError, match="status"):
        EvalResult(candidate=Candidate(spec=SPEC), status="weird")
