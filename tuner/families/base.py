"""The interface every pipeline family implements.

A family is one kind of diffusers pipeline the tuner can measure: how its prompts are encoded
(once, for every configuration), which module denoises, its native image size, which
accelerator combos apply to it, and how its pipeline class is built or loaded from one file.
Everything else (the evaluator, the loading, the public API) asks the family, so that a new
kind of pipeline (a DiT: `transformer`, attention masks, pooled embeddings, text ids) is one
new module here. Families are recognised by the components a pipeline has, the names
diffusers registers them under (and lists in a folder's model_index.json).

Importing a family must not import torch or diffusers (the results readers import the
registry).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar


class Family(ABC):
    name: ClassVar[str]  # "sd", "sdxl": what presets name their architecture's kind by
    title: ClassVar[str]  # shown to users: "SD1.x/2.x"
    pipeline_class: ClassVar[str]  # the diffusers class presets and single files are built as
    # The pipeline's attribute holding the denoiser, and its name in words; the results file
    # keys the denoiser's architecture fingerprint by the attribute.
    denoiser_name: ClassVar[str]
    denoiser_title: ClassVar[str]
    denoiser_class: ClassVar[str]  # its diffusers class (what presets build)
    # Components a pipeline of this family has, and ones it has not (diffusers' names).
    has: ClassVar[tuple[str, ...]]
    lacks: ClassVar[tuple[str, ...]] = ()
    # The accelerator combos (accelerators.COMBOS) that apply to this family.
    combos: ClassVar[tuple[str, ...]]
    # The schedulers (pipelines.SCHEDULERS' names) its models run with; the first by default.
    schedulers: ClassVar[tuple[str, ...]] = ("DDIM", "DPM-Solver++", "UniPCMultistepScheduler")
    # Whether diffusers loads its pipelines from one file (`holds_checkpoint` then says which).
    single_file: ClassVar[bool] = True
    # Options a preset's pipeline is built with besides its components, and a single-file
    # checkpoint loaded with (no safety checker, no watermark: they change no timing).
    builds_with: ClassVar[Mapping[str, Any]] = {}
    loads_with: ClassVar[Mapping[str, Any]] = {}
    # What the image's height and width must be multiples of, and why (`check_size`).
    size_multiple: ClassVar[int] = 8
    size_reason: ClassVar[str] = "the VAE's 8"

    def made_of(self, components: Collection[str]) -> bool:
        """Whether a pipeline with these components (diffusers' names) is of this family."""
        return all(c in components for c in self.has) and \
            not any(c in components for c in self.lacks)

    def matches(self, pipe) -> bool:
        """Whether the loaded pipeline `pipe` is of this family."""
        return self.made_of({c for c in (*self.has, *self.lacks) if hasattr(pipe, c)})

    def denoiser(self, pipe):
        """The module that runs once per denoising step (what the accelerators patch)."""
        return getattr(pipe, self.denoiser_name)

    @abstractmethod
    def encode(self, pipe, prompts: Sequence[str], *, guidance: bool) -> dict[str, Any]:
        """The keyword arguments of `pipe`'s call that carry the embeddings of `prompts`, one
        image per prompt (`guidance`: with the negative ones of classifier-free guidance).
        Called under torch.inference_mode; the same tensors serve every configuration."""

    def classifier_free(self, pipe, guidance_scale: float) -> bool:
        """Whether the call at `guidance_scale` runs classifier-free guidance, a batch of
        negative prompts beside the prompts (so `encode` gives their embeddings too)."""
        return guidance_scale > 1

    def call_options(self, pipe, guidance_scale: float) -> dict[str, Any]:
        """The call's keyword arguments, besides the embeddings, steps, size and seeds, that
        generate as this family's models are meant to be run at `guidance_scale`."""
        return {"guidance_scale": guidance_scale}

    def native_size(self, pipe) -> tuple[int, int]:
        """(height, width) the loaded pipeline generates by default: the denoiser's square
        sample size in pixels, unless the family knows better."""
        side = self.denoiser(pipe).config.sample_size * pipe.vae_scale_factor
        return side, side

    def check_size(self, *, height: int | None, width: int | None) -> None:
        """Raises ValueError, one line naming the nearest valid sizes, when `height` or `width`
        (pixels; None: the native size) is not a multiple of `size_multiple`."""
        check_size(height=height, width=width, multiple=self.size_multiple,
                   needs=f"{self.title} ({self.size_reason})")

    @abstractmethod
    def native_size_of(self, source: str) -> tuple[int, int]:
        """`native_size` of a hub id or local folder, from its configs without weights; raises
        OSError or ValueError when they cannot be read."""

    @abstractmethod
    def holds_checkpoint(self, kind: str) -> bool:
        """Whether a single-file checkpoint of diffusers' model type `kind`
        (`infer_diffusers_model_type`) is of this family."""

    @abstractmethod
    def checkpoint_size(self, kind: str) -> tuple[int, int]:
        """The native size of a single-file checkpoint of model type `kind`."""

    def pipeline_type(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def build(self, components: Mapping[str, Any]):
        """A pipeline of this family from its components (diffusers' names)."""
        return self.pipeline_type()(**components, **self.builds_with)


def check_size(*, height: int | None, width: int | None, multiple: int = Family.size_multiple,
               needs: str = f"every pipeline ({Family.size_reason})") -> None:
    """`Family.check_size` for a `multiple` that `needs` says who needs (by default the rule
    of every family, for a model whose family is not known yet)."""
    for side, value in (("height", height), ("width", width)):
        if value is not None and value % multiple:
            low = value // multiple * multiple
            nearest = " or ".join(str(v) for v in (low, low + multiple) if v > 0)
            raise ValueError(f"{side} {value} is not a multiple of {multiple}, which {needs} "
                             f"needs: nearest {nearest}")


__all__ = ["Family", "check_size"]
