"""manifest.json (``edgerep.manifest/2``) and splits.json (``edgerep.splits/2``) of a deploy bundle."""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from edgerep.report.models.base import Open, Strict
from edgerep.report.models.report import Preprocessing

MANIFEST_SCHEMA = "edgerep.manifest/2"
SPLITS_SCHEMA = "edgerep.splits/2"


class ManifestInputs(Open):
    """What the bundle was made from (`*_data` / `*_fingerprint` per role: calibration, selection, evaluation)."""

    checkpoint: str = Field(description="the checkpoint as given")
    checkpoint_sha256: str = Field(description="its sha256 (bench and fleet find it again by this)")
    checkpoint_resolved: Optional[str] = Field(None, description="its absolute path")
    checkpoint_from_bundle: Optional[str] = Field(None, description="its path relative to the bundle")


class Manifest(Strict):
    """Versions, inputs, settings and the sha256 of every bundle file (what `edgerep diff` compares)."""

    schema_: Literal["edgerep.manifest/2"] = Field(MANIFEST_SCHEMA, alias="schema", description="this format")
    versions: dict[str, str] = Field(description="edgerep, python, torch, onnx, onnxruntime, numpy, tensorrt")
    inputs: ManifestInputs = Field(description="the checkpoint and the data of each role")
    preprocessing: Preprocessing = Field(description="how images become inputs")
    settings: dict[str, Any] = Field(description="every deploy option (free-form: DeployOptions' fields)")
    seed: int = Field(description="the seed of every random choice")
    target_profile: dict[str, Any] = Field(description="the target profile as read (free-form)")
    cpu_policy: Optional[dict[str, Any]] = Field(None, description="the CPU INT8 policy and its session config "
                                                                   "(bench reads `session_config`; free-form)")
    files: dict[str, str] = Field(description="role -> file, relative to the bundle")
    sha256: dict[str, str] = Field(description="file -> sha256")


class Splits(Strict):
    """Every sample id of the three disjoint roles, so anyone can recompute every number."""

    schema_: Literal["edgerep.splits/2"] = Field(SPLITS_SCHEMA, alias="schema", description="this format")
    calibration: list[str] = Field(description="ids of the calibration samples (activation ranges)")
    selection: list[str] = Field(description="ids of the selection samples (every choice)")
    test: list[str] = Field(description="ids of the test samples (reported and gated)")
    train: Optional[list[str]] = Field(None, description="ids of the --train-data samples the recovery ladder's "
                                                         "learning steps used (absent: they learn on calibration)")
    duplicates_dropped: dict[str, str] = Field(default_factory=dict, description="dropped id -> the id kept")
