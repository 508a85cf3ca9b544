"""`edgerep build MODEL.onnx --target NAME`: the engines of a target profile, with a smoke check each."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "build engines (onnxruntime, TensorRT) for a target profile from an ONNX file"
DESCRIPTION = """\
Build the engines a target profile lists (engines/<target>.toml) from an FP32 ONNX file and,
for INT8 engines, the QDQ files `edgerep quantize` wrote. TensorRT plans go to --out with a JSON
sidecar (TensorRT version, GPU and compute capability, ONNX hash); a compatible plan already there
is reused, and a plan built by another TensorRT or GPU is refused unless --rebuild. Where the target
wants TensorRT or a GPU this machine lacks, onnxruntime on the CPU stands in and the table says so.
Every engine then runs one batch and is compared with onnxruntime FP32 (column "max |diff|").

Targets: jetson-orin-nano, jetson-agx-orin, jetson-xavier-nx, x86-cpu, dgpu (see `--list`), or a
path to your own .toml with the same fields.

examples:
  edgerep build model.fp32.onnx --target x86-cpu --int8 cpu=model.int8.cpu.onnx
  edgerep build model.fp32.onnx --target jetson-orin-nano --int8 tensorrt=model.int8.tensorrt.onnx
  edgerep build model.fp32.onnx --target dgpu --out plans/ --rebuild      # after a TensorRT upgrade
  edgerep build model.fp32.onnx --target my-board.toml --checkpoint model.pt --json
  edgerep build --list
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, nargs="?", help="FP32 ONNX file (as `edgerep fold`/`deploy` export it)")
    p.add_argument("--target", "-t", default="x86-cpu", help="profile name or .toml path (default x86-cpu)")
    p.add_argument("--int8", action="append", default=[], metavar="[POLICY=]FILE",
                   help="QDQ INT8 ONNX, per policy (tensorrt=..., cpu=...); a bare FILE serves every policy. "
                        "Default: MODEL's siblings as deploy names them (model.int8.trt.onnx, model.int8.onnx) "
                        "or *.int8.<policy>.onnx")
    p.add_argument("--checkpoint", type=Path, help="checkpoint for the torch reference engine (else torch is skipped)")
    p.add_argument("--arch", help="architecture of a plain state_dict checkpoint")
    p.add_argument("--out", type=Path, help="where plans and build.json go (default engines/out/<model>-<target>)")
    p.add_argument("--rebuild", action="store_true", help="replace plans built by another TensorRT or GPU")
    p.add_argument("--timing-cache", type=Path, metavar="DIR",
                   help="TensorRT timing-cache folder (default ~/.cache/edgerep/tensorrt)")
    p.add_argument("--no-check", action="store_true", help="skip the one-batch smoke run of each engine")
    p.add_argument("--list", action="store_true", help="list the known target profiles and exit")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _int8_files(args: argparse.Namespace) -> dict[str, Path]:
    from edgerep.errors import EdgerepError

    files: dict[str, Path] = {}
    for item in args.int8:
        policy, _, path = item.rpartition("=") if "=" in item else ("*", "", item)
        if not Path(path).is_file():
            raise EdgerepError(f"{path}: --int8 file not found")
        files[policy] = Path(path)
    if "*" in files:
        bare = files.pop("*")
        for pol in ("tensorrt", "cpu"):
            files.setdefault(pol, bare)
    if not args.int8 and args.model is not None:
        stem = args.model.name.replace(".fp32.onnx", "").replace(".onnx", "")
        names = {"tensorrt": ("int8.tensorrt", "int8.trt", "tensorrt.int8"), "cpu": ("int8.cpu", "int8", "cpu.int8")}
        for pol, middles in names.items():  # `edgerep deploy` bundles: model.int8.trt.onnx, model.int8.onnx
            for cand in (f"{stem}.{m}.onnx" for m in middles):
                f = args.model.with_name(cand)
                if f.is_file():
                    files.setdefault(pol, f)
    return files


def _input_shape(onnx_path: Path) -> tuple[int, ...]:
    import onnx

    from edgerep.errors import EdgerepError

    try:
        m = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise EdgerepError(f"{onnx_path}: not a readable ONNX file: {str(e).splitlines()[0] if str(e) else e}")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node):
        raise EdgerepError(f"{onnx_path}: is a QDQ (INT8) file; MODEL is the FP32 ONNX",
                           hint=f"edgerep build MODEL.fp32.onnx --int8 {onnx_path}")
    dims = m.graph.input[0].type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.dim_value > 0 else 1 for d in dims)
    if len(shape) != 4:
        raise EdgerepError(f"{onnx_path}: input '{m.graph.input[0].name}' is {len(shape)}-D; edgerep engines take NCHW")
    return shape


def _list() -> int:
    from edgerep.report.console import make_console
    from rich.table import Table

    from edgerep.engines.profiles import list_profiles

    t = Table(title="target profiles")
    for col in ("name", "engines", "batch", "fallback", "description"):
        t.add_column(col)
    for p in list_profiles():
        t.add_row(p.name, ", ".join(e.key for e in p.engines), ",".join(map(str, p.batch_sizes)), p.fallback,
                  p.description)
    make_console().print(t)
    return 0


def run(args: argparse.Namespace) -> int:
    from edgerep.errors import EdgerepError

    if args.list:
        return _list()
    if args.model is None:
        raise EdgerepError("MODEL: give the FP32 ONNX file to build from (or --list to see targets)")
    if not args.model.is_file():
        raise EdgerepError(f"{args.model}: ONNX file not found")
    from edgerep.outputs import check_output_dir

    if args.out is not None:
        check_output_dir(args.out, "--out")  # before any work (and before torch / onnxruntime are imported)
    if args.timing_cache is not None:
        check_output_dir(args.timing_cache, "--timing-cache")
    from edgerep.engines.factory import build_engines
    from edgerep.engines.profiles import load_profile

    profile = load_profile(args.target)
    stem = args.model.name.replace(".fp32.onnx", "").replace(".onnx", "")
    out = args.out or check_output_dir(Path("engines") / "out" / f"{stem}-{profile.name}", "--out")
    from edgerep.pipeline import check_engines_available

    check_engines_available(profile)  # fallback = "none" and an engine cannot run here: exit 2, naming it
    shape = _input_shape(args.model)
    int8 = _int8_files(args)
    torch_model = None
    if args.checkpoint is not None:
        from edgerep.model_path import load_and_fold

        torch_model = load_and_fold(args.checkpoint, {"arch": args.arch})[1].module  # the fold deploy ships
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda m: None) if args.json else (lambda m: print(f"  {m}", flush=True))
    built = build_engines(profile, fp32_onnx=args.model, int8_onnx=int8, torch_model=torch_model, out_dir=out,
                          progress=log, rebuild=args.rebuild, timing_cache_dir=args.timing_cache)
    rows = [b.to_dict() for b in built]
    if not args.no_check:
        _smoke_check(args.model, shape, built, rows)
    result = {"model": str(args.model), "target": profile.to_dict(), "out": str(out),
              "int8_onnx": {k: str(v) for k, v in int8.items()}, "engines": rows}
    (out / "build.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_table(profile.name, rows, out)
    return 0


def _smoke_check(model: Path, shape: tuple[int, ...], built, rows: list[dict]) -> None:
    """Run each engine on one batch and record its max abs difference from onnxruntime FP32."""
    import numpy as np

    from edgerep.errors import EdgerepError

    x = np.random.default_rng(0).standard_normal((max(2, shape[0]), *shape[1:])).astype(np.float32)
    ref = None
    try:
        from edgerep.engines.onnxruntime_engine import OrtEngine

        ref = OrtEngine(model, precision="fp32").run(x)
    except (ImportError, EdgerepError):
        pass
    for b, row in zip(built, rows):
        if b.engine is None:
            continue
        try:
            y = b.engine.run(x)
            row["check"] = {"ran": True, "output_shape": list(y.shape),
                            "max_abs_diff_vs_ort_fp32": float(np.abs(y - ref).max()) if ref is not None else None}
        except EdgerepError as e:
            row["check"] = {"ran": False, "error": e.one_line()}


def _print_table(target: str, rows: list[dict], out: Path) -> None:
    from edgerep.report.console import make_console
    from rich.table import Table

    t = Table(title=f"edgerep build: {target}")
    for col in ("#", "requested", "status", "runs as", "artifact", "max |diff|"):
        t.add_column(col, overflow="fold")
    notes = []
    for i, r in enumerate(rows, 1):
        spec, actual = r["spec"], r["actual"]
        key = f"{spec['backend']}-{spec['precision']}-{spec['device']}"
        runs = f"{actual['backend']}-{actual['precision']}-{actual['device']}" if r["engine"] else "-"
        chk = r.get("check") or {}
        diff = chk.get("max_abs_diff_vs_ort_fp32")
        t.add_row(str(i), key, r["status"], runs, Path(r["artifact"]).name if r["artifact"] else "-",
                  f"{diff:.2e}" if diff is not None else ("failed" if chk.get("ran") is False else "-"))
        for why in (r["reason"], chk.get("error")):
            if why:
                notes.append(f"  {i}. {why}")
    c = make_console()
    c.print(t)
    if notes:
        c.print("why:", highlight=False)
        for n in notes:
            c.print(n, highlight=False, soft_wrap=True)
    c.print(f"wrote {out / 'build.json'}", highlight=False)
