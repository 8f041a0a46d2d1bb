"""Pure ndarray -> ndarray preprocessing, chained from the recipe, and model input preparation.

Frame side: :func:`build_chain` turns the recipe's `preprocess:` list into a
:class:`PreprocessChain`; :func:`roi_crops` cuts the recipe's ROIs out of its output.
Model side: :class:`InputPreparer` (or :func:`prepare_batch`) turns crops into the float32
batch a model's manifest asks for.
"""

from cellinspect.preprocess.chain import (
    BUILDERS,
    PreprocessChain,
    Step,
    build_chain,
    build_chain_for_recipe,
    roi_crops,
)
from cellinspect.preprocess.model_input import InputPreparer, prepare_batch
from cellinspect.preprocess.ops import (
    LetterboxResult,
    blur,
    colour,
    crop_roi,
    flip,
    letterbox,
    resize,
    rotate,
)
from cellinspect.preprocess.undistort import Undistorter

__all__ = [
    "BUILDERS",
    "InputPreparer",
    "LetterboxResult",
    "PreprocessChain",
    "Step",
    "Undistorter",
    "blur",
    "build_chain",
    "build_chain_for_recipe",
    "colour",
    "crop_roi",
    "flip",
    "letterbox",
    "prepare_batch",
    "resize",
    "roi_crops",
    "rotate",
]
