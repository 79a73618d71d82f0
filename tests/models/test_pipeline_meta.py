"""dopplergen.json is checked against its schema at load: a fault names its field, before any model is
built."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from models.pipeline import DopplerPipeline, PipelineError
from models.pipeline_meta import MetaError, validate_meta

REPO = Path(__file__).resolve().parents[2]


def good_meta() -> dict:
    return {"format_version": 1, "route": "kl", "image_size": [32, 32], "channels": 1, "name": "n",
            "version": "1",
            "normalization": {"dyn_range_db": 60.0, "kind": "linear_db"}}


@pytest.fixture
def broken_copy(tiny_pipeline_dir, tmp_path):
    """A copy of the tiny pipeline whose dopplergen.json a test edits."""

    def _copy(edit) -> Path:
        folder = tmp_path / f"pipe{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_pipeline_dir, folder)
        meta_file = folder / "dopplergen.json"
        meta = json.loads(meta_file.read_text())
        edit(meta)
        meta_file.write_text(json.dumps(meta))
        return folder

    return _copy


def test_the_shipped_demo_and_unknown_keys_pass() -> None:
    demo = json.loads((REPO / "checkpoints" / "demo" / "dopplergen.json").read_text())
    checked = validate_meta(demo)
    assert checked.normalization.dyn_range_db == 60.0 and checked.route == "kl"
    extra = validate_meta({**good_meta(), "conditions": {"speed_mps": {}}, "enrolled": ["x"],
                           "provenance": {}})
    assert extra.model_extra["enrolled"] == ["x"], "fields added by other writers must be kept"


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda m: m.pop("normalization"), "normalization"),
        (lambda m: m["normalization"].update(dyn_range_db=-3), "normalization.dyn_range_db"),
        (lambda m: m["normalization"].update(dyn_range_db=float("inf")), "normalization.dyn_range_db"),
        (lambda m: m["normalization"].update(kind="log"), "normalization.kind"),
        (lambda m: m["normalization"].update(gamma=2), "normalization.gamma"),
        (lambda m: m.pop("image_size"), "image_size"),
        (lambda m: m.update(image_size=[32]), "image_size"),
        (lambda m: m.update(image_size=[0, 32]), "image_size"),
        (lambda m: m.update(route="gan"), "route"),
        (lambda m: m.update(format_version=2), "format_version"),
        (lambda m: m.pop("format_version"), "format_version"),
        (lambda m: m.update(name="a\r\nX-Evil: 1"), "name"),
        (lambda m: m.update(num_inference_steps=0), "num_inference_steps"),
        (lambda m: m.update(guidance_scale="high"), "guidance_scale"),
    ],
)
def test_each_fault_names_its_field(edit, field) -> None:
    meta = good_meta()
    edit(meta)
    with pytest.raises(MetaError) as info:
        validate_meta(meta)
    assert re.search(rf": {re.escape(field)}[:.]", str(info.value)), str(info.value)


def test_load_refuses_a_pipeline_without_normalisation(broken_copy) -> None:
    folder = broken_copy(lambda m: m.pop("normalization"))
    with pytest.raises(PipelineError, match=r"dopplergen\.json: normalization: Field required"):
        DopplerPipeline.load(folder)


def test_load_checks_the_folder_and_the_models(broken_copy) -> None:
    folder = broken_copy(lambda m: None)
    for weights in (folder / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(PipelineError, match=r"unet: no \*\.safetensors"):
        DopplerPipeline.load(folder)
    with pytest.raises(PipelineError, match="channels: 3, but the autoencoder takes 1"):
        DopplerPipeline.load(broken_copy(lambda m: m.update(channels=3)))
    with pytest.raises(PipelineError, match="image_size: .* not a multiple"):
        DopplerPipeline.load(broken_copy(lambda m: m.update(image_size=[33, 32])))


def test_save_refuses_metadata_that_load_would_refuse(tiny_pipeline_dir, tmp_path) -> None:
    pipe = DopplerPipeline.load(tiny_pipeline_dir)
    del pipe.meta["normalization"]
    with pytest.raises(PipelineError, match="normalization"):
        pipe.save(tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing is written before the check"
