"""The JSON of `edgerep check --json` (``edgerep.check/2``), `edgerep quantize` (quantize.json,
``edgerep.quantize/2``) and `edgerep fleet deploy` (``edgerep.fleet-report/2``)."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from edgerep.report.models.base import Open, Strict
from edgerep.report.models.report import BenchSettings, DataRoles, Expected, FoldBlock, Gate, ModelInfo, RecoveryBlock
from edgerep.report.models.results import Accuracy, Drop, InputStatistics, Latency

CHECK_SCHEMA = "edgerep.check/2"
QUANTIZE_SCHEMA = "edgerep.quantize/2"
FLEET_SCHEMA = "edgerep.fleet-report/2"


class CheckOutput(Strict):
    """`edgerep check --json`: the INT8-friendliness of every folded layer (`layers` rows: `metrics`,
    `attribution`, `advice` are free-form diagnostics, see docs/check.md)."""

    schema_: Literal["edgerep.check/2"] = Field(CHECK_SCHEMA, alias="schema", description="this format")
    model: str = Field(description="the model checked")
    input_shape: list[int] = Field(description="C, H, W")
    passed: bool = Field(description="no layer is bad with the fixes applied")
    summary: dict[str, Any] = Field(description="counts of ok / warn / bad, flagged layers, top advice (free-form)")
    fp32: Optional[dict[str, Any]] = Field(None, description="the FP32 model's own figures (free-form)")
    fold_max_rel_error: Optional[float] = Field(None, description="the fold's max relative error")
    data: dict[str, Any] = Field(default_factory=dict, description="data read (free-form)")
    settings: dict[str, Any] = Field(default_factory=dict, description="settings (free-form)")
    thresholds: dict[str, Any] = Field(default_factory=dict, description="the thresholds judged by (free-form)")
    timings_s: dict[str, float] = Field(default_factory=dict, description="seconds per step")
    layers: list[dict[str, Any]] = Field(description="per folded layer: name, kind, block, verdict, "
                                                     "verdict_with_fixes, reasons, metrics, attribution, advice")
    html: Optional[str] = Field(None, description="--html: the page written")


class QuantizeOutput(Open):
    """`edgerep quantize`'s quantize.json and `--json` (`calibration`, `candidates`, `cpu`, `tensorrt`,
    `equalization`, `bias_correction`, `reference` are free-form diagnostics; candidates' `drop` is on the
    selection set in `reference.measure`'s terms)."""

    schema_: Literal["edgerep.quantize/2"] = Field(QUANTIZE_SCHEMA, alias="schema", description="this format")
    calibration: dict[str, Any] = Field(description="method, cache key, samples (free-form)")
    files: dict[str, str] = Field(description="policy -> QDQ file written")
    cpu_policy: Optional[dict[str, Any]] = Field(None, description="the chosen CPU policy and why (free-form)")
    candidates: list[dict[str, Any]] = Field(default_factory=list, description="every CPU policy tried")
    excluded_nodes: list[dict[str, Any]] = Field(default_factory=list, description="layers kept in float")
    max_drop: Optional[float] = Field(None, description="the budget the choices were held to")
    int8_failure: Optional[str] = Field(None, description="set when INT8 kept more than half the layers in float")
    recovery: Optional[RecoveryBlock] = Field(None, description="the recovery ladder, when --recover asked for one")


class FleetBaseline(Strict):
    """The unfolded reference, measured once on the CI side."""

    name: str = Field(description="torch-cpu")
    precision: str = Field("fp32", description="fp32")
    device: str = Field("cpu", description="cpu")
    status: str = Field("built", description="built")
    accuracy: Optional[Accuracy] = Field(None, description="on the test set (merged counts)")
    note: str = Field(description="where it was measured")
    expected: Optional[Expected] = Field(None, description="what it should reach")


class FleetRow(Strict):
    """One node x engine (scope node / shard) or one merged target x engine (scope merged)."""

    target: str = Field(description="the target profile")
    node: str = Field(description="hostname-nodeid, `merged (N shard(s))` or `-`")
    node_id: Optional[str] = Field(None, description="Ray's node id")
    hostname: Optional[str] = Field(None, description="the node's hostname")
    scope: Literal["node", "shard", "merged"] = Field(description="a whole node, a node's shards, or merged")
    shards: Optional[list[Any]] = Field(None, description="shard indices the node ran")
    name: str = Field(description="backend-device")
    precision: str = Field(description="fp32, fp16, int8")
    device: str = Field(description="the device")
    status: str = Field(description="built / cached / fallback / skipped / failed / lost / no node")
    reason: str = Field("", description="why not built, lost or failed")
    requested: Optional[str] = Field(None, description="the profile's engine key")
    build_seconds: Optional[float] = Field(None, description="build time on the node, s")
    describe: dict[str, Any] = Field(default_factory=dict, description="the engine's settings (free-form)")
    latency: Optional[Latency] = Field(None, description="single-stream latency on the node")
    accuracy: Optional[Accuracy] = Field(None, description="from the rows' counts")
    drop: Optional[Drop] = Field(None, description="vs the unfolded reference on the same samples")
    note: Optional[str] = Field(None, description="e.g. answered on a retry")
    recovered_by: Optional[str] = Field(None, description="the node that redid a lost node's shards")
    shards_missing: Optional[list[int]] = Field(None, description="shards that never came back")


class FleetReport(Strict):
    """`edgerep fleet deploy`'s merged report.json."""

    schema_: Literal["edgerep.fleet-report/2"] = Field(FLEET_SCHEMA, alias="schema", description="this format")
    kind: Literal["fleet"] = Field("fleet", description="fleet")
    created_unix: float = Field(description="when")
    bundle: str = Field(description="the bundle deployed")
    model: dict[str, Any] = Field(description="the bundle's model block (see the report schema's `model`)")
    fold: Optional[FoldBlock] = Field(None, description="the bundle's fold")
    quantization: dict[str, Any] = Field(default_factory=dict, description="the bundle's int8_failure")
    baseline: FleetBaseline = Field(description="the unfolded reference")
    input_statistics: Optional[InputStatistics] = Field(None, description="the bundle's input statistics")
    data: dict[str, Any] = Field(description="evaluation data, split, sharding (free-form)")
    reference: dict[str, Any] = Field(description="the reference's source and accuracy")
    bench: dict[str, Any] = Field(description="latency settings (batch)")
    targets: list[str] = Field(description="targets deployed to")
    nodes: dict[str, dict[str, Any]] = Field(description="per node: versions, host, timings (free-form)")
    rows: list[FleetRow] = Field(description="node x engine and merged rows")
    warnings: list[str] = Field(default_factory=list, description="what the reader must know")
    gate: Optional[Gate] = Field(None, description="the merged gate")
    timings_s: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
