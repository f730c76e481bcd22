"""Pipeline families (tuner/families): which family a pipeline, a folder or a single-file
checkpoint is of, and what each answers for it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from tuner import presets
from tuner.accelerators import COMBOS
from tuner.families import SD, SDXL, family_made_of, family_of, family_of_checkpoint
from tuner.pipelines import PipelineError, model_fingerprint, model_record, native_size


def test_each_preset_is_of_its_architectures_family(tiny_sd, tiny_sdxl):
    assert family_of(tiny_sd) is SD and family_of(tiny_sdxl) is SDXL
    for name, arch in presets.ARCHITECTURES.items():
        assert {"sd": SD, "sdxl": SDXL}[arch.kind].name == arch.kind, name
    assert family_of(SimpleNamespace(transformer=object())) is None
    assert SD.denoiser(tiny_sd) is tiny_sd.unet and SDXL.denoiser(tiny_sdxl) is tiny_sdxl.unet


def test_a_folders_family_is_read_from_its_model_index():
    index = json.loads((presets.WEIGHTS / "tiny-shapes" / "model_index.json").read_text())
    assert family_made_of(index) is SD
    assert family_made_of({**index, "text_encoder_2": [], "tokenizer_2": []}) is SDXL
    assert family_made_of({"transformer": [], "vae": []}) is None


@pytest.mark.parametrize("kind, family, side", [("v1", SD, 512), ("v2", SD, 768),
                                                ("inpainting", SD, 512),
                                                ("xl_base", SDXL, 1024),
                                                ("xl_refiner", SDXL, 1024)])
def test_a_checkpoints_family_and_size_follow_its_model_type(kind, family, side):
    assert family_of_checkpoint(kind) is family
    assert family.checkpoint_size(kind) == (side, side)


def test_sd_encodes_two_embeddings_and_sdxl_four(tiny_sd, tiny_sdxl):
    with torch.inference_mode():
        sd = SD.encode(tiny_sd, ["a red car", "a cat"], guidance=True)
        xl = SDXL.encode(tiny_sdxl, ["a red car"], guidance=True)
        unguided = SD.encode(tiny_sd, ["a red car"], guidance=False)
    assert set(sd) == {"prompt_embeds", "negative_prompt_embeds"}
    assert set(xl) == {"prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                       "negative_pooled_prompt_embeds"}
    assert set(unguided) == {"prompt_embeds"} and len(sd["prompt_embeds"]) == 2


def test_sizes_and_fingerprints_come_from_the_family(tiny_sd, tiny_sdxl):
    for name, pipe in (("tiny-sd", tiny_sd), ("tiny-sdxl", tiny_sdxl)):
        assert native_size(pipe) == presets.native_size(name) == (128, 128)
    assert model_record(tiny_sd) == {"unet": model_fingerprint(tiny_sd)}
    assert model_fingerprint(tiny_sd) != model_fingerprint(tiny_sdxl)
    with pytest.raises(PipelineError, match="no pipeline family"):
        native_size(SimpleNamespace(transformer=object()))


def test_every_unet_combo_applies_to_the_unet_families():
    """diffusers' caches and T-GATE alone (PixArt) are for transformers: no UNet family's."""
    unet = ("deepcache", "deepcache+tome", "deepcache+tgate", "deepcache+tome+tgate")
    assert SD.combos == SDXL.combos == unet
    unsearched = {c for c in COMBOS if "solver" not in COMBOS[c]}  # the steps combos: beside
    assert unsearched - set(unet) == {"fbcache", "taylorseer", "magcache", "fastercache", "pab",
                                       "tgate"}
