"""Candidate -> EvalResult on a tiny teacher and the toy task."""

import dataclasses
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilsearch.kdlib import student_evaluator as student_eval
from distilsearch.kdlib.core.paths import cache_dir
from distilsearch.kdlib.data.general_corpus import CORPUS_FILE, CORPUS_NAME, CORPUS_VERSION, build_general_corpus
from distilsearch.kdlib.data.tasks import load_task
from distilsearch.kdlib.data.transfer_sets import TRANSFER_SOURCES
from distilsearch.kdlib.measure.latency import LatencyProtocol
from distilsearch.kdlib.student_evaluator import StudentEvaluator
from distilsearch.kdlib.students.candidate import Candidate
from distilsearch.kdlib.students.specs import KDConfig, StudentSpec
from distilsearch.kdlib.training.distiller import DistillationOutcome
from distilsearch.kdlib.training.finetune import FineTuneRecipe
from distilsearch.kdlib.training.teacher import get_teacher

FAST_LATENCY = LatencyProtocol(points=((1, 16), (4, 16)), warmup=1, repeats=3, num_threads=1)
KD = KDConfig(max_steps=12, batch_size=16, max_length=16, lr=1e-3)


@pytest.fixture
def evaluator(toy_task: str, tiny_bert_dir: Path) -> StudentEvaluator:
    recipe = FineTuneRecipe(epochs=2, batch_size=16, max_length=16, learning_rate=3e-3)
    teacher = get_teacher(toy_task, recipe, base_dir=tiny_bert_dir, device="cpu", progress=False)
    return StudentEvaluator(
        teacher, load_task(toy_task, progress=False), device="cpu", latency=FAST_LATENCY, progress=False
    )


def candidate(kd: KDConfig = KD, **spec: object) -> Candidate:
    sizes = {"num_layers": 2, "hidden_size": 32, "num_heads": 4, "ffn_size": 32} | spec
    return Candidate(spec=StudentSpec(**sizes), kd=kd)


def test_fp32_student_gets_every_metric(evaluator: StudentEvaluator) -> None:
    result = evaluator.evaluate(candidate())
    assert result.status == "ok", result.error
    assert 0 <= result.accuracy <= 1 and 0 <= result.validation_accuracy <= 1
    assert set(result.ood_accuracy) == {"echo"} == set(result.teacher_ood_accuracy)
    # selection metrics beside the test ones: validation and the OOD dev half, for the student and the teacher
    assert set(result.ood_dev_accuracy) == {"echo"} == set(result.teacher_ood_dev_accuracy)
    assert 0 <= result.teacher_validation_accuracy <= 1 and result.validation_retention is not None
    assert result.train_steps == 12 and [point.step for point in result.learning_curve] == [12]
    assert [(p.batch, p.seq_len) for p in result.latency] == [(1, 16), (4, 16)]
    assert all(p.speedup > 0 and p.theoretical_speedup > 1 for p in result.latency)
    assert result.params_total > result.params_non_embedding > 0
    assert result.size_bytes > 0 and result.flops > 0 and result.train_seconds > 0
    distillation = result.provenance["distillation"]
    assert distillation["steps"] == 12 and distillation["teacher_forward_batches"] == 0
    assert result.provenance["teacher_key"] == evaluator.teacher.key


def test_the_general_stage_distils_on_the_general_corpus_by_default(evaluator: StudentEvaluator) -> None:
    # The corpus cache as the builder leaves it, from a few sentences instead of the embedded assets.
    sentences = ["a man rides a horse on the beach", "shares fell sharply on monday", "two dogs play in the snow"]
    corpus = build_general_corpus({"snli-premises": sentences[:1], "bbc-news": sentences[1:]})
    folder = cache_dir("corpora") / f"{CORPUS_NAME}-v{CORPUS_VERSION}"
    folder.mkdir(parents=True)
    corpus.to_parquet(folder / CORPUS_FILE, index=False)

    general = KD.model_copy(update={"general_distillation_steps": 4, "hidden_weight": 1.0})
    result = evaluator.evaluate(candidate(general))
    assert result.status == "ok", result.error
    assert result.provenance["general_corpus"] == {"name": CORPUS_NAME, "version": CORPUS_VERSION, "rows": 3}
    assert result.provenance["distillation"]["stage_steps"]["general"] == 4
    on_task = general.model_copy(update={"general_corpus": "task"})
    assert evaluator.general_set(on_task) is None and evaluator.general_set(KD) is None
    assert "general_corpus" not in evaluator.evaluate(candidate(on_task)).provenance
    assert candidate(on_task).content_hash() != candidate(general).content_hash()
    assert KD.model_copy(update={"general_corpus": "task"}).content_hash() == KD.content_hash()


def test_transfer_set_rows_are_mixed_in_with_cached_teacher_logits(
    evaluator: StudentEvaluator, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixing = KD.model_copy(update={"transfer_ratio": 0.25})
    missing = evaluator.evaluate(candidate(mixing))
    assert missing.status == "invalid" and "task 'toy-sentiment' has no transfer set" in missing.error
    texts = ["the film follows two brothers across a cold country", "a young cook opens a restaurant in the city"]
    monkeypatch.setitem(TRANSFER_SOURCES, "toy-sentiment", lambda progress: texts)
    result = evaluator.evaluate(candidate(mixing))
    assert result.status == "ok", result.error
    assert result.provenance["transfer_set"] == {"rows": 2, "rows_per_batch": 4}
    assert result.provenance["distillation"]["teacher_forward_batches"] == 0
    assert candidate(mixing).content_hash() != candidate().content_hash()


def test_substitution_augments_with_the_teachers_word_neighbours(evaluator: StudentEvaluator) -> None:
    substituting = KD.model_copy(update={"augmentation": "substitute"})
    result = evaluator.evaluate(candidate(substituting))
    assert result.status == "ok", result.error
    assert result.provenance["distillation"]["teacher_forward_batches"] > 0, "augmented rows need the teacher"
    neighbours = evaluator.substitutions(substituting).neighbours
    assert neighbours.shape == (evaluator.teacher_config.vocab_size, 15)
    assert evaluator.substitutions(KD) is None


def test_invalid_spec_is_reported_not_raised(evaluator: StudentEvaluator) -> None:
    result = evaluator.evaluate(candidate(num_layers=9))
    assert result.status == "invalid" and "num_layers=9" in result.error


def test_low_bit_and_trimmed_students(evaluator: StudentEvaluator) -> None:
    fp32 = evaluator.evaluate(candidate())
    ternary = evaluator.evaluate(candidate(weight_bits=2))
    int8 = evaluator.evaluate(candidate(weight_bits=8, trim_vocab=True))
    assert ternary.status == "ok" and int8.status == "ok", (ternary.error, int8.error)
    assert ternary.size_bytes < fp32.size_bytes and int8.size_bytes < fp32.size_bytes
    assert int8.params_total < fp32.params_total


def test_export_loads_with_stock_transformers(evaluator: StudentEvaluator, tmp_path: Path) -> None:
    result = evaluator.evaluate(candidate(trim_vocab=True), out_dir=tmp_path / "student")
    assert result.student_path == str(tmp_path / "student")
    model = AutoModelForSequenceClassification.from_pretrained(result.student_path)
    tokenizer = AutoTokenizer.from_pretrained(result.student_path)
    assert model.config.vocab_size == len(tokenizer) < evaluator.teacher_config.vocab_size
    assert (tmp_path / "student" / "distilsearch.json").is_file()


def test_diverged_distillation_is_a_failed_result(evaluator: StudentEvaluator, monkeypatch: pytest.MonkeyPatch) -> None:
    def diverging(*args, **kwargs) -> DistillationOutcome:
        return DistillationOutcome(status="failed", error="loss became nan at step 3 (stage prediction)")

    monkeypatch.setattr(student_eval, "distill", diverging)
    result = evaluator.evaluate(candidate())
    assert result.status == "failed" and "nan" in result.error and result.accuracy is None


def test_task_must_match_teacher(evaluator: StudentEvaluator) -> None:
    other = dataclasses.replace(evaluator.task, name="another-task")
    with pytest.raises(ValueError, match="does not match"):
        StudentEvaluator(evaluator.teacher, other)
