"""`cellinspect calibrate ...`: camera, plane and hand-eye calibration, and the renders behind
the shipped calibration files.

Mounted by the main CLI (`cli/root.py`: app.add_typer(app, name="calibrate")); without the
installed script, ``python -m cellinspect calibrate ...``. User errors print one line and exit 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import typer
from rich.table import Table

from cellinspect.calibration.board import BoardKind, BoardSpec
from cellinspect.calibration.camera import (
    DEFAULT_MIN_SHARPNESS,
    DEFAULT_MIN_VIEWS,
    calibrate_camera,
    save_camera_report,
    undistort_image,
)
from cellinspect.calibration.camera_file import load_camera_calibration
from cellinspect.calibration.handeye import (
    HandEyeMethod,
    HandEyeMode,
    calibrate_handeye,
    save_handeye_result,
    target_poses_from_images,
)
from cellinspect.calibration.handeye_sim import simulate_handeye, write_handeye_example
from cellinspect.calibration.measure import measure_circle_features
from cellinspect.calibration.measure_config import MeasurementSpec
from cellinspect.calibration.plane import (
    calibrate_plane,
    load_plane_calibration,
    mm_per_px,
    save_plane_calibration,
)
from cellinspect.calibration.plane_report import plane_report_image
from cellinspect.calibration.poses import RotationFormat, load_robot_poses, rotation_to
from cellinspect.calibration.render import (
    CAMERA_BOARD,
    HANDEYE_BOARD,
    PLANE_BOARD,
    Look,
    calibration_poses,
    conveyor_pose,
    render_board,
)
from cellinspect.cli.support import console, err_console, reader_for, user_errors
from cellinspect.errors import CalibrationError
from cellinspect.sources.decode import IMAGE_SUFFIXES

app = typer.Typer(
    help="Calibrate the camera (intrinsics), the conveyor plane (pixels -> mm) and the robot "
    "(hand-eye), and render the board pictures the shipped calibration was made from.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BoardOpt = Annotated[BoardKind, typer.Option("--board", help="Board kind.")]
SizeOpt = Annotated[
    str, typer.Option("--size", help="Squares across x down, e.g. 10x7 (9x6 inner corners).")
]
SquareOpt = Annotated[float, typer.Option("--square", help="Square side in mm.")]
MarkerOpt = Annotated[
    float | None, typer.Option("--marker", help="ChArUco marker side in mm (0.7 x square).")
]
CameraOpt = Annotated[
    Path, typer.Option("--camera", "-c", help="Camera calibration (OpenCV YAML).")
]


def _board(kind: BoardKind, size: str, square: float, marker: float | None) -> BoardSpec:
    return BoardSpec.parse(kind.value, size, square, marker)


def expand_images(paths: Sequence[Path]) -> list[Path]:
    """Files as given; folders become their images in name order."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            out.append(path)
        else:
            raise CalibrationError(f"{path}: no such file or folder")
    if not out:
        raise CalibrationError("no images found in " + ", ".join(str(p) for p in paths))
    return out


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise CalibrationError(f"{path}: cannot be read as an image")
    return np.asarray(img, dtype=np.uint8)


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise CalibrationError(f"{path}: cannot write the image")


@app.command("camera")
def camera_cmd(
    images: Annotated[list[Path], typer.Argument(help="Board pictures, or folders of them.")],
    board: BoardOpt = BoardKind.CHESSBOARD,
    size: SizeOpt = "10x7",
    square: SquareOpt = 8.0,
    marker: MarkerOpt = None,
    calibration_id: Annotated[
        str, typer.Option("--id", help="Calibration id recorded in every result.")
    ] = "camera",
    out: Annotated[Path, typer.Option("--out", "-o", help="YAML to write.")] = Path(
        "calibration/camera.yaml"
    ),
    report: Annotated[
        Path | None, typer.Option("--report", help="Report PNG (default: beside --out).")
    ] = None,
    min_views: Annotated[int, typer.Option(help="Fewest usable views accepted.")] = (
        DEFAULT_MIN_VIEWS
    ),
    min_sharpness: Annotated[
        float, typer.Option(help="Laplacian variance over the board below which a view is blurry.")
    ] = DEFAULT_MIN_SHARPNESS,
    k3: Annotated[bool, typer.Option("--k3/--no-k3", help="Also fit k3 (wide lenses).")] = False,
) -> None:
    """Intrinsics and lens distortion from pictures of a board."""
    with user_errors():
        spec = _board(board, size, square, marker)
        files = expand_images(images)
        console.print(f"{len(files)} images, {spec.describe()}")
        result = calibrate_camera(
            files, spec, calibration_id, min_views, min_sharpness, fix_k3=not k3
        )
        png = report if report is not None else out.with_name(out.stem + "_report.png")
        cal = save_camera_report(result, out, png)
    table = Table(title=f"{cal.calibration_id}: {cal.image_size[0]}x{cal.image_size[1]}")
    for col in ("view", "corners", "rms px"):
        table.add_column(col)
    for view in result.used:
        table.add_row(view.name, str(view.detection.count), f"{view.rms_error_px:.3f}")
    for rej in result.rejected:
        table.add_row(f"[red]{rej.name}[/]", "-", f"[red]rejected: {rej.reason}[/]")
    console.print(table)
    k, d, std = cal.camera_matrix, cal.dist_coeffs, result.std_intrinsics
    console.print(
        f"fx {k[0, 0]:.2f} ± {std.get('fx', 0):.2f}  fy {k[1, 1]:.2f} ± {std.get('fy', 0):.2f}  "
        f"cx {k[0, 2]:.2f} ± {std.get('cx', 0):.2f}  cy {k[1, 2]:.2f} ± {std.get('cy', 0):.2f}"
    )
    console.print("dist (k1 k2 p1 p2 k3): " + " ".join(f"{v:.5f}" for v in d))
    console.print(f"RMS reprojection error {cal.rms_error:.3f} px over {len(result.used)} views")
    console.print(f"wrote {out} (sha256 {cal.sha256[:12]}) and {png}")


@app.command("plane")
def plane_cmd(
    image: Annotated[Path, typer.Argument(help="Picture of the board lying on the belt.")],
    camera: CameraOpt = Path("calibration/camera.yaml"),
    board: BoardOpt = BoardKind.CHESSBOARD,
    size: SizeOpt = "11x8",
    square: SquareOpt = 6.0,
    marker: MarkerOpt = None,
    origin: Annotated[
        tuple[float, float],
        typer.Option(help="Plane position (mm) of the board's first inner corner."),
    ] = (0.0, 0.0),
    calibration_id: Annotated[str, typer.Option("--id", help="Plane calibration id.")] = "plane",
    out: Annotated[Path, typer.Option("--out", "-o", help="YAML to write.")] = Path(
        "calibration/plane.yaml"
    ),
    report: Annotated[
        Path | None, typer.Option("--report", help="Report PNG (default: beside --out).")
    ] = None,
) -> None:
    """Homography from undistorted pixels to millimetres on the conveyor plane."""
    with user_errors():
        spec = _board(board, size, square, marker)
        cam = load_camera_calibration(camera)
        img = _read(image)
        plane = calibrate_plane(img, cam, spec, calibration_id, origin)
        save_plane_calibration(plane, out)
        plane = load_plane_calibration(out)
        png = report if report is not None else out.with_name(out.stem + "_report.png")
        _write(png, plane_report_image(img, cam, plane, spec.square_mm))
    pos = plane.camera_position_mm
    console.print(f"{plane.points} corners of {spec.describe()}")
    console.print(
        f"residual rms {plane.residual_rms_mm:.3f} mm, max {plane.residual_max_mm:.3f} mm; "
        f"scale {mm_per_px(plane):.4f} mm/px at the centre"
    )
    console.print(f"camera {pos[2]:.1f} mm above the plane, over ({pos[0]:.1f}, {pos[1]:.1f}) mm")
    console.print(f"wrote {out} and {png}")


@app.command("handeye")
def handeye_cmd(
    poses: Annotated[
        Path,
        typer.Argument(help="Robot poses, CSV or JSON: image,x,y,z,rx,ry,rz (see docs)."),
    ],
    camera: CameraOpt = Path("calibration/camera.yaml"),
    board: BoardOpt = BoardKind.CHESSBOARD,
    size: SizeOpt = "7x6",
    square: SquareOpt = 6.0,
    marker: MarkerOpt = None,
    mode: Annotated[HandEyeMode, typer.Option(help="Where the camera is mounted.")] = (
        HandEyeMode.EYE_TO_HAND
    ),
    method: Annotated[HandEyeMethod, typer.Option(help="Solver.")] = HandEyeMethod.PARK,
    rotation: Annotated[
        RotationFormat, typer.Option(help="Meaning of rx, ry, rz in the pose file.")
    ] = RotationFormat.RPY_DEG,
    backend: Annotated[str, typer.Option(help="auto, opencv or builtin.")] = "auto",
    out: Annotated[Path, typer.Option("--out", "-o", help="YAML to write.")] = Path(
        "calibration/handeye.yaml"
    ),
) -> None:
    """Camera -> gripper (eye-in-hand) or camera -> robot base (eye-to-hand)."""
    with user_errors():
        spec = _board(board, size, square, marker)
        cam = load_camera_calibration(camera)
        robot = load_robot_poses(poses, rotation)
        missing = [i + 1 for i, p in enumerate(robot) if p.image is None]
        if missing:
            raise CalibrationError(f"{poses}: rows {missing} name no image")
        images = [p.image for p in robot if p.image is not None]
        targets, problems = target_poses_from_images(images, cam, spec)
        for problem in problems:
            err_console.print(f"[yellow]skipped[/] {problem}")
        pairs = [(r.gripper_to_base, t) for r, t in zip(robot, targets, strict=True) if t]
        result = calibrate_handeye(
            [g for g, _ in pairs],
            [t for _, t in pairs],
            mode,
            method,
            backend,
            cam.calibration_id,
        )
        save_handeye_result(result, out)
    x = result.camera_to_robot
    rx, ry, rz = rotation_to(x.rotation, RotationFormat.RPY_DEG)
    c = result.consistency
    console.print(f"{result.pairs} pose pairs, {result.method.value} ({result.backend})")
    console.print(
        f"camera -> {result.frame}: x {x.translation[0]:.2f} y {x.translation[1]:.2f} "
        f"z {x.translation[2]:.2f} mm, rx {rx:.3f} ry {ry:.3f} rz {rz:.3f} deg"
    )
    console.print(
        f"consistency: translation rms {c.translation_rms_mm:.3f} mm (max "
        f"{c.translation_max_mm:.3f}), rotation rms {c.rotation_rms_deg:.3f} deg (max "
        f"{c.rotation_max_deg:.3f})"
    )
    console.print(f"wrote {out}")


@app.command("measure")
def measure_cmd(
    image: Annotated[Path, typer.Argument(help="Raw camera frame of a round part.")],
    camera: CameraOpt = Path("calibration/camera.yaml"),
    plane: Annotated[Path, typer.Option("--plane", "-p", help="Plane calibration.")] = Path(
        "calibration/plane.yaml"
    ),
    part_height: Annotated[
        float, typer.Option(help="Height of the part's top face above the belt, mm.")
    ] = 0.0,
) -> None:
    """Measure a round part's diameters and bolt holes in mm (a check of the calibration)."""
    with user_errors():
        cam = load_camera_calibration(camera)
        pl = load_plane_calibration(plane)
        pl.check_fits(cam)
        und = undistort_image(_read(image), cam)
        m = measure_circle_features(und, pl, MeasurementSpec(part_height_mm=part_height))
    table = Table(title=f"{image.name} (camera {cam.calibration_id}, plane {pl.calibration_id})")
    table.add_column("feature")
    table.add_column("mm", justify="right")
    for key, value in m.to_dict().items():
        table.add_row(key, f"{value:.3f}")
    console.print(table)


@app.command("render-views")
def render_views_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the board pictures.")],
    views: Annotated[int, typer.Option(help="Number of pictures.")] = 15,
    seed: Annotated[int, typer.Option(help="Random seed (poses, light, noise).")] = 0,
    board: BoardOpt = CAMERA_BOARD.kind,
    size: SizeOpt = f"{CAMERA_BOARD.cols}x{CAMERA_BOARD.rows}",
    square: SquareOpt = CAMERA_BOARD.square_mm,
    marker: MarkerOpt = None,
) -> None:
    """Render board pictures through the virtual camera (known intrinsics and distortion)."""
    with user_errors():
        if views < 1:
            raise CalibrationError(f"--views must be >= 1, got {views}")
        spec = _board(board, size, square, marker)
        rng = np.random.default_rng(seed)
        for i, pose in enumerate(calibration_poses(spec, views, seed=seed)):
            img = render_board(spec, pose, look=Look.random(rng), rng=rng)
            _write(out_dir / f"view_{i:02d}.png", img[:, :, 0])  # grey PNG: a third the size
    console.print(f"wrote {views} views of {spec.describe()} to {out_dir}")


@app.command("render-plane")
def render_plane_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the picture.")],
    rotation_deg: Annotated[float, typer.Option(help="Board turn on the belt, degrees.")] = 1.5,
    seed: Annotated[int, typer.Option(help="Random seed (light, noise).")] = 0,
    board: BoardOpt = PLANE_BOARD.kind,
    size: SizeOpt = f"{PLANE_BOARD.cols}x{PLANE_BOARD.rows}",
    square: SquareOpt = PLANE_BOARD.square_mm,
    marker: MarkerOpt = None,
) -> None:
    """Render the board lying on the belt, seen by the top-down conveyor camera."""
    with user_errors():
        spec = _board(board, size, square, marker)
        rng = np.random.default_rng(seed)
        pose = conveyor_pose(spec, rotation_deg=rotation_deg)
        img = render_board(spec, pose, look=Look(), rng=rng, margin_mm=0.7 * spec.square_mm)
        _write(out_dir / "plane.png", img[:, :, 0])
    console.print(f"wrote {out_dir / 'plane.png'} ({spec.describe()})")


@app.command("render-handeye")
def render_handeye_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Folder for pictures, poses.csv, truth.yaml.")],
    views: Annotated[int, typer.Option(help="Number of robot poses.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    mode: Annotated[HandEyeMode, typer.Option(help="Simulated mounting.")] = (
        HandEyeMode.EYE_TO_HAND
    ),
    board: BoardOpt = HANDEYE_BOARD.kind,
    size: SizeOpt = f"{HANDEYE_BOARD.cols}x{HANDEYE_BOARD.rows}",
    square: SquareOpt = HANDEYE_BOARD.square_mm,
    marker: MarkerOpt = None,
) -> None:
    """Simulate a robot cell with a known camera mounting and render its board pictures."""
    with user_errors():
        if views < 3:
            raise CalibrationError(f"--views must be >= 3, got {views}")
        spec = _board(board, size, square, marker)
        scene = simulate_handeye(mode, spec, views, seed=seed)
        csv_path = write_handeye_example(scene, spec, out_dir, seed=seed)
    console.print(f"wrote {views} pictures, {csv_path} and {out_dir / 'truth.yaml'}")


@app.command("thresholds")
def thresholds_cmd(
    model: Annotated[Path, typer.Argument(help="model.onnx (manifest beside it).")],
    dataset: Annotated[
        Path, typer.Argument(help="Labelled validation set (class folders or CSV/JSONL).")
    ],
    target_escape: Annotated[
        float, typer.Option("--target-escape", help="Highest escape rate (defects passed).")
    ] = 0.01,
    alpha: Annotated[
        float | None,
        typer.Option(help="With it: P(escape <= target) >= 1-alpha; without: in expectation."),
    ] = None,
    target_false_fail: Annotated[
        float, typer.Option(help="Share of good parts allowed to FAIL outright (sets fail_at).")
    ] = 0.01,
    recipe: Annotated[
        Path | None, typer.Option("--recipe", "-r", help="Cut images as this recipe does.")
    ] = None,
    roi: Annotated[str | None, typer.Option(help="ROI of the recipe.")] = None,
    split: Annotated[Path | None, typer.Option(help="split.json beside the model.")] = None,
    subset: Annotated[str, typer.Option(help="Subset of --split to calibrate on.")] = "val",
    write: Annotated[
        str | None, typer.Option(help="manifest, or recipe (writes <recipe>-calibrated.yaml).")
    ] = None,
) -> None:
    """Set review_at/fail_at from labelled data for a target escape rate (conformal); refuses
    images the model was fitted on."""
    from cellinspect.entities import Task
    from cellinspect.training.dataset import load_labelled
    from cellinspect.training.fitted_images import refuse_fitted_overlap
    from cellinspect.training.scores import load_runner, score_dataset
    from cellinspect.training.split import load_split
    from cellinspect.training.threshold_files import write_to_manifest, write_to_recipe
    from cellinspect.training.thresholds import choose_thresholds

    with user_errors():
        if write not in (None, "manifest", "recipe"):
            raise CalibrationError(f"--write must be 'manifest' or 'recipe', got '{write}'")
        if write == "recipe" and recipe is None:
            raise CalibrationError("--write recipe needs --recipe")
        data = load_labelled(dataset)
        if split is not None:
            data = load_split(split).subset(data, subset)
        runner = load_runner(model)
        if not refuse_fitted_overlap(runner.manifest, data, model):
            err_console.print(
                f"[yellow]warning:[/] {model}: the manifest records no fitted images; "
                "make sure these were not fitted on",
                highlight=False,
            )
        scored = score_dataset(runner, data, reader_for(recipe, roi, dataset))
        upper = 1.0 if runner.manifest.task is Task.CLASSIFICATION else None
        choice = choose_thresholds(
            scored.scores, scored.is_defect, target_escape, alpha, target_false_fail, upper
        )
        for path, reason in data.skipped:
            console.print(f"skipped {path}: {reason}", highlight=False)
        table = Table(title=f"thresholds for {runner.manifest.name} ({choice.method})")
        table.add_column("quantity")
        table.add_column("value", justify="right")
        for key, value in (
            ("calibration images (good / defective)", f"{choice.n_good} / {choice.n_defect}"),
            ("review_at (PASS below)", f"{choice.review_at:.6g}"),
            ("fail_at (FAIL from)", f"{choice.fail_at:.6g}"),
            ("guarantee", choice.guarantee),
            ("escape rate on this set", f"{choice.escape_rate_calibration:.4f}"),
            ("expected false-reject rate (good not passed)", f"{choice.false_reject_rate:.4f}"),
            ("good parts failed outright", f"{choice.good_fail_rate:.4f}"),
            ("review rate (all parts)", f"{choice.review_rate:.4f}"),
            ("fail rate (all parts)", f"{choice.fail_rate:.4f}"),
        ):
            table.add_row(key, value)
        console.print(table)
        info = {
            "root": str(data.root),
            "fingerprint": data.fingerprint(),
            "subset": subset if split else None,
        }
        if write == "manifest":
            console.print(f"wrote {write_to_manifest(model, choice, info)}")
        elif write == "recipe" and recipe is not None:
            console.print(f"wrote {write_to_recipe(recipe, model, choice)}")
