"""What one engine measured: accuracy (a task's metric with its unit), fidelity against the unfolded model,
the drop (always naming the metric it is a drop of, its unit and what it is compared with) and latency.

A new task (detection's mAP in points, super-resolution's PSNR in dB) adds a row to ``METRICS``; the shapes
stay the same."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from edgerep.report.models.base import Open, Strict

Unit = Literal["%", "points", "dB", "cosine"]
Task = Literal["classify", "detect", "super-resolution", "outputs"]
REFERENCE = "unfolded fp32"  # what every drop and every fidelity figure is measured against

#: metric -> (unit, what it is compared with, description). The one table of units: a metric's unit and its
#: drop's unit are read from it, and a model that states another unit is refused.
METRICS: dict[str, tuple[str, str, str]] = {
    "top1": ("%", "labels", "share of test samples whose highest-scoring class is the label"),
    "top1_agreement": ("%", REFERENCE, "no labels: share of test samples whose highest-scoring class is the "
                                       "unfolded FP32 model's (the reference agrees with itself: 100)"),
    "cosine": ("cosine", REFERENCE, "no labels, not a classifier: mean cosine similarity of each output with the "
                                    "unfolded FP32 model's (1 is identical)"),
    "map": ("points", "labels", "detection: COCO mAP@[.5:.95] x 100"),
    "map50": ("points", "labels", "detection: COCO mAP@.5 x 100"),
    "psnr": ("dB", "labels", "super-resolution: PSNR on Y (BT.601) against the HR image"),
}
#: the unit of a difference of two values in a metric's unit (percent minus percent is points)
DROP_UNITS: dict[str, str] = {"%": "points", "points": "points", "dB": "dB", "cosine": "cosine"}
TASK_OF = {"top1": "classify", "top1_agreement": "classify", "cosine": "outputs", "map": "detect",
           "map50": "detect", "psnr": "super-resolution"}
Metric = Literal["top1", "top1_agreement", "cosine", "map", "map50", "psnr"]


def _units_rule(field: str, unit_of) -> dict:
    """The metric -> unit table as JSON Schema (``allOf`` of if/then), so a schema validator refuses a wrong
    unit as the model does."""
    return {"allOf": [{"if": {"properties": {field: {"const": m}}, "required": [field]},
                       "then": {"properties": {"unit": {"const": unit_of(m)}}}} for m in METRICS]}


class Majority(Strict):
    """What always answering the most common test label scores (the baseline's chance level)."""

    class_: int = Field(alias="class", description="the most common label in the test set")
    count: int = Field(description="test samples with that label")


class Fidelity(Strict):
    """How close an engine's raw outputs are to the unfolded FP32 model's on the same samples."""

    vs: Literal["unfolded fp32"] = Field(REFERENCE, description="the reference the outputs are compared with")
    cosine: Optional[float] = Field(None, description="mean cosine similarity of outputs (1: identical)")
    sqnr_db: Optional[float] = Field(None, description="signal-to-quantization-noise ratio of all outputs, dB "
                                                       "(999: identical)")
    psnr_db: Optional[float] = Field(None, description="peak signal-to-noise ratio of the outputs (logits, not "
                                                       "images), dB (999: identical)")
    top1_agreement: Optional[float] = Field(None, description="classifiers: % of samples whose top class is the "
                                                              "reference's")


class Accuracy(Strict):
    """One engine's headline metric on the test set, naming its task, metric and unit, with the counts behind it."""

    model_config = {**Strict.model_config, "json_schema_extra": _units_rule("metric", lambda m: METRICS[m][0])}

    task: Task = Field(description="the task whose metric this is: classify (top-1), detect (mAP), "
                                   "super-resolution (PSNR); `outputs` when only fidelity can be measured")
    metric: Metric = Field(description="the metric `value` holds (see `unit` and `vs`). Without labels it is "
                                       "what the code measures then: top1_agreement (classifiers) or cosine")
    unit: Unit = Field(description="the unit of `value`: % (a share), points (mAP x 100), dB, cosine")
    vs: Literal["labels", "unfolded fp32"] = Field(description="what the metric is measured against: the "
                                                                "test labels, or the unfolded FP32 model")
    value: Optional[float] = Field(description="the metric's value in `unit` (null when nothing was scored)")
    correct: Optional[int] = Field(None, description="for a % metric: the samples that count (right, or agreeing)")
    samples: int = Field(description="test samples scored")
    labelled: bool = Field(description="whether the test samples had labels")
    top5: Optional[float] = Field(None, description="classify with labels: top-5 accuracy, %")
    fidelity: Optional[Fidelity] = Field(None, description="the outputs against the unfolded FP32 model's")
    nonfinite: int = Field(0, description="output rows holding NaN or Inf (never correct; the gate fails them)")
    user: dict[str, float] = Field(default_factory=dict, description="--metric's values, by name (free-form)")
    classes: Optional[int] = Field(None, description="classifier outputs: the class count")
    majority: Optional[Majority] = Field(None, description="the baseline: what always answering the most common "
                                                           "label scores")
    map50: Optional[float] = Field(None, description="detect: COCO mAP@.5 x 100, points (`value` is mAP@[.5:.95])")
    instances: Optional[int] = Field(None, description="detect: ground-truth boxes (non-crowd) in the scored images "
                                                       "(`samples` is the image count)")
    detections: Optional[int] = Field(None, description="detect: predicted boxes scored (after NMS)")
    per_class_ap: Optional[dict[str, Optional[float]]] = Field(
        None, description="detect: AP@[.5:.95] x 100 per class name (null: no instance of it)")
    predictions_file: Optional[str] = Field(None, description="detect: the COCO results JSON in the bundle "
                                                              "(pycocotools recomputes `value` from it and "
                                                              "annotations/test.json)")
    ssim: Optional[float] = Field(None, description="super-resolution: mean SSIM on Y over the images (same "
                                                    "convention as `value`)")
    psnr_sum_db: Optional[float] = Field(None, description="super-resolution: sum of the per-image PSNRs, dB "
                                                           "(shards add sums and `samples`, never means)")
    ssim_sum: Optional[float] = Field(None, description="super-resolution: sum of the per-image SSIMs")
    scale: Optional[int] = Field(None, description="super-resolution: the upscale factor (also the pixels shaved "
                                                   "per border)")
    output_psnr_db: Optional[float] = Field(None, description="super-resolution: mean PSNR of this engine's "
                                                              "output image against the unfolded FP32 model's "
                                                              "output (Y, shaved, 8-bit), dB (999: identical)")
    scores_file: Optional[str] = Field(None, description="super-resolution: the per-image PSNR / SSIM JSON in "
                                                         "the bundle")

    @model_validator(mode="after")
    def _unit_matches(self) -> "Accuracy":
        unit, vs, _ = METRICS[self.metric]
        if self.unit != unit:
            raise ValueError(f"accuracy metric {self.metric!r} is in {unit!r}, not {self.unit!r}")
        if self.vs != vs:
            raise ValueError(f"accuracy metric {self.metric!r} is measured against {vs!r}, not {self.vs!r}")
        return self

    @property
    def top1(self) -> float | None:
        """Top-1 against labels (%), or None where the metric is another one."""
        return self.value if self.metric == "top1" else None


class Drop(Strict):
    """How much worse an engine is than the unfolded FP32 model, in the named metric's drop unit (positive: worse)."""

    model_config = {**Strict.model_config,
                    "json_schema_extra": _units_rule("of", lambda m: DROP_UNITS[METRICS[m][0]])}

    of: Metric = Field(description="the metric this is a drop of (as in the engine's `accuracy.metric`)")
    unit: Unit = Field(description="points for a % or points metric, dB for PSNR, cosine for cosine")
    value: float = Field(description="reference minus engine, in `unit` (positive: the engine is worse)")
    vs: Literal["unfolded fp32"] = Field(REFERENCE, description="the model the drop is measured against")

    @model_validator(mode="after")
    def _unit_matches(self) -> "Drop":
        want = DROP_UNITS[METRICS[self.of][0]]
        if self.unit != want:
            raise ValueError(f"a drop of {self.of!r} is in {want!r}, not {self.unit!r}")
        return self


def make_accuracy(*, samples: int, classifier: bool, labelled: bool, correct: int | None = None,
                  correct5: int | None = None, agree: int | None = None, cosine: float | None = None,
                  sqnr_db: float | None = None, psnr_db: float | None = None, nonfinite: int = 0,
                  user: dict | None = None) -> Accuracy | None:
    """The accuracy of counts: top-1 against labels when a classifier has them, else agreement with the
    unfolded model (classifiers), else cosine with it; None when nothing could be scored."""
    pct = (lambda k: 100.0 * k / samples if samples and k is not None else None)
    fid = Fidelity(cosine=cosine, sqnr_db=sqnr_db, psnr_db=psnr_db, top1_agreement=pct(agree)) \
        if any(v is not None for v in (cosine, sqnr_db, psnr_db, agree)) else None
    if classifier and labelled and correct is not None:
        metric, value, count = "top1", pct(correct), correct
    elif classifier and agree is not None:
        metric, value, count = "top1_agreement", pct(agree), agree
    elif cosine is not None:
        metric, value, count = "cosine", cosine, None
    else:
        return None
    unit, vs, _ = METRICS[metric]
    return Accuracy(task=TASK_OF[metric] if classifier or metric == "cosine" else "outputs", metric=metric,
                    unit=unit, vs=vs, value=value, correct=count, samples=samples, labelled=labelled,
                    top5=pct(correct5) if metric == "top1" else None, fidelity=fid, nonfinite=nonfinite,
                    user=user or {})


def detect_accuracy(*, map: float, map50: float, images: int, instances: int, detections: int,
                    per_class: dict | None = None, predictions_file: str | None = None,
                    fidelity: Fidelity | None = None, nonfinite: int = 0, user: dict | None = None) -> Accuracy:
    """A detector's accuracy: COCO mAP@[.5:.95] in points against the labels, mAP@.5 beside it, with the image
    and instance counts it rests on (``edgerep.tasks.detect``)."""
    unit, vs, _ = METRICS["map"]
    return Accuracy(task="detect", metric="map", unit=unit, vs=vs, value=round(float(map), 4), samples=int(images),
                    labelled=True, map50=round(float(map50), 4), instances=int(instances), detections=int(detections),
                    per_class_ap=({k: (None if v is None else round(float(v), 4)) for k, v in per_class.items()}
                                  if per_class is not None else None),
                    predictions_file=predictions_file, fidelity=fidelity, nonfinite=nonfinite, user=user or {})


def sr_accuracy(*, psnr_sum: float, ssim_sum: float, images: int, scale: int, output_psnr_db: float | None = None,
                scores_file: str | None = None, fidelity: Fidelity | None = None, nonfinite: int = 0,
                user: dict | None = None) -> Accuracy:
    """A super-resolution model's accuracy: mean PSNR on Y in dB against the HR images (SSIM beside it), with the
    image count and the sums shards merge."""
    unit, vs, _ = METRICS["psnr"]
    n = int(images)
    return Accuracy(task="super-resolution", metric="psnr", unit=unit, vs=vs,
                    value=round(psnr_sum / n, 4) if n else None, samples=n, labelled=True,
                    ssim=round(ssim_sum / n, 5) if n else None, psnr_sum_db=round(float(psnr_sum), 6),
                    ssim_sum=round(float(ssim_sum), 6), scale=int(scale),
                    output_psnr_db=None if output_psnr_db is None else round(float(output_psnr_db), 4),
                    scores_file=scores_file, fidelity=fidelity, nonfinite=nonfinite, user=user or {})


def make_drop(acc: Accuracy | None, ref: Accuracy | None) -> Drop | None:
    """The engine's drop against the unfolded FP32 model in the engine's own metric: reference minus engine
    on the same samples (agreement: 100 minus it, the reference agreeing with itself); None where no metric
    compares (a non-classifier's cosine is a fidelity, reported, not a drop)."""
    if acc is None or acc.value is None:
        return None
    if acc.metric == "top1_agreement":
        base = 100.0
    elif ref is not None and ref.metric == acc.metric and ref.value is not None and acc.metric != "cosine":
        base = ref.value
    elif acc.fidelity is not None and acc.fidelity.top1_agreement is not None:  # labelled engine, unscored ref
        return Drop(of="top1_agreement", unit="points", value=round(100.0 - acc.fidelity.top1_agreement, 4))
    else:
        return None
    return Drop(of=acc.metric, unit=DROP_UNITS[acc.unit], value=round(base - acc.value, 4))


def top1_of(acc: dict | None) -> float | None:
    """A serialized accuracy's top-1 against labels (%), None where its metric is another one."""
    return acc.get("value") if acc and acc.get("metric") == "top1" else None


def drop_of(row: dict | None) -> float | None:
    """A serialized row's drop value (in its `drop.unit`), or None."""
    d = (row or {}).get("drop")
    return d.get("value") if d else None


class Latency(Strict):
    """One engine's latency run in one MLPerf scenario (LoadGen, or the built-in timer with the same rules)."""

    scenario: Literal["single-stream", "multi-stream", "offline"] = Field(description="the MLPerf scenario")
    batch: int = Field(description="samples per engine call")
    queries: int = Field(description="queries timed (offline: engine calls); replaces /1's duplicate `iterations`")
    samples: int = Field(description="samples run: queries x batch")
    percentile_rule: str = Field(description="how p90 / p99 are estimated, in words")
    p50_ms: Optional[float] = Field(description="median latency per query, ms")
    p90_ms: Optional[float] = Field(None, description="p90 per query, ms (early-stopping estimate; null below "
                                                      "64 queries)")
    p99_ms: Optional[float] = Field(None, description="p99 per query, ms (null below 662 queries)")
    p90_kind: Optional[str] = Field(None, description="what the shown p90 is (estimate, maximum, plain)")
    p99_kind: Optional[str] = Field(None, description="what the shown p99 is")
    throughput_ips: Optional[float] = Field(None, description="samples per second: samples / total time")
    engine_p50_ms: Optional[float] = Field(None, description="median of the engine calls alone, ms")
    mean_ms: Optional[float] = Field(None, description="mean latency, ms")
    min_ms: Optional[float] = Field(None, description="fastest query, ms")
    max_ms: Optional[float] = Field(None, description="slowest query, ms")
    std_ms: Optional[float] = Field(None, description="standard deviation of engine calls, ms")
    cv: Optional[float] = Field(None, description="coefficient of variation of engine calls (reported, not judged)")
    spread: Optional[float] = Field(None, description="robust spread: 1.4826 x MAD / median of per-query times")
    p50_repeats_ms: Optional[list[Optional[float]]] = Field(None, description="the p50 of each quarter of the run")
    duration_s: Optional[float] = Field(None, description="wall time of the timed run, s")
    valid: Optional[bool] = Field(None, description="LoadGen's verdict (null: the built-in timer ran)")
    validity: Optional[str] = Field(None, description="LoadGen's result_validity, verbatim")
    invalid_reason: Optional[str] = Field(None, description="why LoadGen called it INVALID")
    invalid_scope: Optional[Literal["tail", "run"]] = Field(None, description="INVALID for the tail only (p50 "
                                                                              "stands) or the whole run")
    offline_expected_qps: Optional[float] = Field(None, description="offline: the QPS LoadGen was told to expect")
    loadgen_attempts: Optional[int] = Field(None, description="offline: 2 when a cut-short run was rerun")
    log_dir: Optional[str] = Field(None, description="LoadGen's logs, relative to the bundle")
    loadgen: Optional[str] = Field(None, description="LoadGen's version (null: built-in timer)")
    timer: Literal["loadgen", "built-in"] = Field(description="which timer ran")
    timer_note: Optional[str] = Field(None, description="why the built-in timer ran")
    warmup: Optional[int] = Field(None, description="warm-up calls before timing")
    settle_ms: Optional[float] = Field(None, description="time waited for worker pools to park, ms")
    samples_pool: Optional[int] = Field(None, description="distinct samples the queries are drawn from")
    samples_distinct: Optional[bool] = Field(None, description="no sample twice in one query")
    samples_source: Optional[str] = Field(None, description="where the query samples come from")
    settings_note: Optional[str] = Field(None, description="the run's minimums beside an MLPerf submission's")
    noisy: Optional[bool] = Field(None, description="the shown figures say the host was busy")
    noise_reason: Optional[str] = Field(None, description="why the row is marked noisy")


class InputStatistics(Open):
    """The calibration inputs against the unfolded model's first BatchNorm layers' running statistics
    (`layers` rows are free-form: layer, channels, mean_shift, var_ratio, var_direction)."""

    source: str = Field(description="the data the statistics were taken on")
    samples: int = Field(description="samples hooked")
    layers: list[dict] = Field(description="per BatchNorm layer: median over channels of the input's shift "
                                           "and variance ratio (free-form rows)")
