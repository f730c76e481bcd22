"""Train `tiny-shapes-dit` (a FLUX.1 pipeline, `FluxTransformer2DModel` at toy size) on the Shapes
dataset of `tuner/shapes.py`, with the shipped `tiny-shapes` VAE and scored by the shipped
`tiny-shapes-clip`: only the transformer and its two small text encoders are trained.

Two commands, as `tools/train_tiny.py`:

    python tools/train_tiny_dit.py train --out runs/dit [--device cuda]
        -> runs/dit/checkpoint.safetensors (transformer and text encoders, the log in its
           metadata), log.json
    python tools/train_tiny_dit.py export runs/dit/checkpoint.safetensors [--to tuner/weights]
        -> tuner/weights/tiny-shapes-dit/ (a `FluxPipeline` folder, with training.json: the log)

Why FLUX. Of the three DiT families, only `FluxTransformer2DModel` is a `CacheMixin` in diffusers
0.42.1, and only `FluxPipeline` opens the `cache_context("cond")` / `("uncond")` the caches keep
their state in. `SD3Transformer2DModel` and `PixArtTransformer2DModel` have no `enable_cache` at
all (checked on tiny random instances on the CPU; their pipelines open no cache context), so
they take none of the caches through `transformer.enable_cache(...)`. On this toy's FLUX
architecture on the CPU (tests/test_train_tiny_dit.py, 4 steps), FirstBlockCache, TaylorSeer,
MagCache (with `FLUX_MAG_RATIOS`), FasterCache and Pyramid Attention Broadcast each attach
through `enable_cache` and change the output, with and without true CFG, and `disable_cache()`
gives the plain output back bit for bit; MagCache with `calibrate=True` attaches too and leaves the output plain. What FLUX
lacks is T-GATE: tgate 1.0.0 has loaders for SD, SDXL, PixArt-α/Σ and SVD only. Five caches
against T-GATE alone: FLUX.

The toy. 64x64 images through the `tiny-shapes` VAE give 4x8x8 latents, which `FluxPipeline`
packs into 16 tokens of 16 channels (2x2 patches). The transformer: 3 double-stream and 6
single-stream blocks, width 96 (4 heads of 24, RoPE axes 8+8+8), no guidance embedding (as
FLUX.1-schnell): classifier-free guidance is FluxPipeline's "true CFG" (`true_cfg_scale` with a
`negative_prompt`), for which 10 % of the captions are empty. Text: `text_encoder` a tiny
`CLIPTextModel` (its pooled output, as FLUX's CLIP-L) and `text_encoder_2` a tiny
`T5EncoderModel` (its sequence, as FLUX's T5-XXL), both on `tiny-shapes`' tokenizer (a
byte-level BPE whose every caption word is one token; it builds offline). FluxPipeline pads the
T5 sequence to `max_sequence_length` (512 by default) and masks nothing, so the model is trained at
one length, `TEXT_LENGTH` tokens, saved as `tokenizer_2.model_max_length`: call the pipeline with
`max_sequence_length=pipe.tokenizer_2.model_max_length`, and with `height=width=64` (FluxPipeline's
default is 1024). All weights ship in fp32, as `tiny-shapes`' do, so the CPU runs them as
trained: 2.23 M parameters, about 10 MiB (the transformer 7.4, the text encoders 1.2, the shipped
VAE's copy 1.3). On the CPU (one thread) a batch of 4 at 25 steps takes about 0.4 s, 0.8 s
with true CFG (`tiny-shapes`, with CFG: 0.7 s).

Training: rectified flow as FLUX and SD3 train, x_t = (1 - s) x_0 + s e and the velocity e - x_0
as the target, with s drawn logit-normal(0, 1) (Esser et al. 2024, "Scaling Rectified Flow
Transformers for High-Resolution Image Synthesis", sec. 3.1 and 5.1: the best of their sampling
schemes; it stands in for `train_tiny.py`'s min-SNR weighting, which is for epsilon prediction);
`train_tiny.py`'s seeded batches, warm-up and cosine schedule, gradient clipping, EMA of the
weights and time-filled stages (`--dit-steps 0` fills `--dit-seconds`). diffusers' default
initialisation stays: adaLN-Zero (Peebles and Xie 2023, sec. 3.2) trained slower over the first
120 steps of batch 32 on the CPU (loss 0.96 against 0.90).

On an H100, with the packages of the earlier GPU runs (`.whl-lz/site.tar.xz`, see
benchmarks/results/2026-12-04-h200-graphs/commands.sh), carried to the device:

    mkdir -p /tmp/site && tar xJf .whl-lz/site.tar.xz -C /tmp/site
    export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
    python3 tools/train_tiny_dit.py train --out $OUT/dit --device cuda --dit-seconds 270 \
        --eval-images 540 --export 2>&1 | tee $OUT/dit.log      # 4304 DiT steps on an H100
    # then here, with this project's diffusers and transformers:
    python tools/train_tiny_dit.py export <fetched>/dit/checkpoint.safetensors

About 6 minutes in all. The shipped weights come from 4304 steps of batch 512 (317 s: the
step count is fixed after 60 steps from their pace, which then sped up), final loss 0.473; on 540
generated images (true CFG 4) `tiny-shapes-clip` named the class of 99.8 % and scored 79.5 against
their own captions, 7.8 against shuffled ones (benchmarks/results/2026-12-05-h100-tiny-dit/).
Pass --dit-steps 4304 to repeat the run elsewhere. To train longer,
`--resume D/checkpoint.safetensors` goes on from a checkpoint, as `tiny-shapes`' second run did.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_tiny import (  # noqa: E402
    CLIP_NAME, EOS, MAX_LENGTH, PIPE_NAME, TEXT, WEIGHTS, Trainer, build_tokenizer, command_line,
    half_storage, optimizer_for, parameter_count, save_grid, text_config)
from tuner import shapes  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Architecture. 64x64 images, 4x8x8 latents (the shipped VAE), packed 2x2: 16 tokens of 16.

TRANSFORMER = dict(patch_size=1, in_channels=16, num_layers=3, num_single_layers=6,
                   attention_head_dim=24, num_attention_heads=4, joint_attention_dim=64,
                   pooled_projection_dim=TEXT["hidden_size"], guidance_embeds=False,
                   axes_dims_rope=(8, 8, 8))
T5 = dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_heads=4,
          relative_attention_num_buckets=8, relative_attention_max_distance=16,
          feed_forward_proj="gated-gelu", dropout_rate=0.0)
TEXT_LENGTH = 16  # the T5 sequence; the longest caption is 10 tokens with its BOS and EOS
SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                 base_image_seq_len=256, max_image_seq_len=4096)  # FLUX.1-dev's
DIT_NAME = "tiny-shapes-dit"
TRAINED = ("transformer", "text_encoder", "text_encoder_2")
CFG_SCALE = 4.0  # true CFG for the evaluation's images


def t5_config(vocab_size: int):
    from transformers import T5Config

    return T5Config(vocab_size=vocab_size, pad_token_id=EOS, eos_token_id=EOS,
                    decoder_start_token_id=EOS, is_encoder_decoder=False, use_cache=False, **T5)


def new_models(vocab_size: int) -> dict[str, torch.nn.Module]:
    from diffusers import FluxTransformer2DModel
    from transformers import CLIPTextModel, T5EncoderModel

    return {"transformer": FluxTransformer2DModel(**TRANSFORMER),
            "text_encoder": CLIPTextModel(text_config(vocab_size)),
            "text_encoder_2": T5EncoderModel(t5_config(vocab_size))}


def shipped_vae():
    """The `tiny-shapes` VAE as shipped; FluxPipeline also reads a latent shift (0 here)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(WEIGHTS / PIPE_NAME, subfolder="vae")
    vae.register_to_config(shift_factor=0.0)
    return vae.eval().requires_grad_(False)


def tokenizers():
    """`tiny-shapes`' tokenizer for the CLIP (77 tokens) and for the T5 (TEXT_LENGTH)."""
    clip, t5 = build_tokenizer(), build_tokenizer()
    t5.model_max_length = TEXT_LENGTH
    return clip, t5


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C), as FluxPipeline packs latents."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


# ---------------------------------------------------------------------------------------------
# Training


class DitTrainer(Trainer):
    """`train_tiny.Trainer`'s loop, batches and log; its VAE and CLIP stages are not run: the
    shipped VAE encodes, the shipped CLIP scores."""

    def __init__(self, args):  # not Trainer.__init__: that builds the UNet stage's models
        self.begin(args)
        self.tokenizer, self.tokenizer_2 = tokenizers()
        self.vae = shipped_vae().to(self.device)
        self.scaling_factor = self.vae.config.scaling_factor
        self.models = {k: m.to(self.device) for k, m in new_models(len(self.tokenizer)).items()}
        self.log["parameters"] = {k: parameter_count(m) for k, m in self.models.items()}
        self.log["scaling_factor"] = self.scaling_factor
        captions = [s.caption() for s in shapes.scenes()] + [""]  # the last one: empty
        self.ids = self.tokenize(self.tokenizer, captions, MAX_LENGTH)
        self.ids_2 = self.tokenize(self.tokenizer_2, captions, TEXT_LENGTH)

    def tokenize(self, tokenizer, captions: list[str], length: int) -> torch.Tensor:
        """As FluxPipeline tokenizes for each encoder: padded to `length`, truncated."""
        return tokenizer(captions, padding="max_length", max_length=length, truncation=True,
                         return_tensors="pt")["input_ids"].to(self.device)

    def encode(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled CLIP and T5 sequence embeddings of caption rows, as FluxPipeline encodes."""
        pooled = self.models["text_encoder"](input_ids=self.ids[rows]).pooler_output
        sequence = self.models["text_encoder_2"](input_ids=self.ids_2[rows])[0]
        return pooled, sequence

    def train_dit(self) -> None:
        a = self.args
        transformer = self.models["transformer"]
        params = [p for name in TRAINED for p in self.models[name].parameters()]
        ema = [p.detach().clone() for p in params]
        g, opt = self.data(4), optimizer_for(params, a.dit_lr, self.device)
        image_ids = None

        def body(step):
            nonlocal image_ids
            if step:  # the EMA follows the previous step's update
                decay = min(a.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
            batch = self.images(a.dit_batch, g)
            with torch.no_grad():
                z = self.vae.encode(batch.images * 2 - 1).latent_dist.sample()
                z = pack((z - self.vae.config.shift_factor) * self.scaling_factor)
            if image_ids is None:
                from diffusers import FluxPipeline

                side = z.shape[1] ** 0.5
                image_ids = FluxPipeline._prepare_latent_image_ids(
                    1, int(side), int(side), self.device, z.dtype)
            empty = torch.rand(a.dit_batch, generator=g) < a.uncond
            rows = torch.where(empty, len(shapes.scenes()), shapes.scene_index(batch.labels))
            pooled, sequence = self.encode(rows.to(self.device))
            # logit-normal(0, 1) noise levels (Esser et al. 2024, sec. 3.1)
            s = torch.sigmoid(torch.randn(a.dit_batch, generator=g)).to(self.device)
            noise = torch.randn(z.shape, generator=g).to(self.device)
            noisy = (1 - s.view(-1, 1, 1)) * z + s.view(-1, 1, 1) * noise
            pred = transformer(hidden_states=noisy, timestep=s, pooled_projections=pooled,
                               encoder_hidden_states=sequence,
                               txt_ids=torch.zeros(sequence.shape[1], 3, device=self.device),
                               img_ids=image_ids, return_dict=False)[0]
            per_sample = (pred - (noise - z)).square().mean((1, 2))
            loss = per_sample.mean()
            return loss, torch.stack([loss, (pred - (noise - z)).abs().mean()])

        self.ema_stage("dit", [self.models[name] for name in TRAINED], params, ema, opt, body,
                       ("loss", "v_l1"), steps=a.dit_steps, seconds=a.dit_seconds, lr=a.dit_lr,
                       batch=a.dit_batch)

    trained = TRAINED

    def log_fields(self, partial: int | None) -> dict:
        return {"partial_dit_steps": partial}

    @torch.no_grad()
    def evaluate(self, count: int) -> None:
        """Generate `count` images (20 Euler steps), without and with true CFG, and score them
        with the shipped CLIP: retrieval over the shape x colour classes and over all 540
        captions, and the CLIP score against their own and against shuffled captions."""
        from transformers import CLIPModel

        clip = CLIPModel.from_pretrained(WEIGHTS / CLIP_NAME).to(self.device).eval()
        pipe = assemble(self.models, self.vae).to(self.device)
        pipe.set_progress_bar_config(disable=True)
        scenes = shapes.scenes()
        chosen = [scenes[i] for i in torch.randperm(len(scenes), generator=self.data(13))[:count]]
        captions = [s.caption() for s in chosen]

        score = self.scorer(clip, scenes, chosen)
        side = shapes.IMAGE_SIZE  # FluxPipeline's default is 1024
        self.log["generated"] = {}
        for cfg in (1.0, CFG_SCALE):
            began = time.perf_counter()
            images = torch.cat([
                pipe(captions[i:i + 256], num_inference_steps=20, output_type="pt", height=side,
                     width=side,
                     max_sequence_length=TEXT_LENGTH, true_cfg_scale=cfg,
                     negative_prompt=[""] * len(captions[i:i + 256]) if cfg > 1 else None,
                     generator=torch.Generator(self.device).manual_seed(i)).images
                for i in range(0, count, 256)])
            scores = score(images)
            self.log["generated"][f"true_cfg_{cfg:g}"] = entry = {
                "images": count, "seconds": round(time.perf_counter() - began, 1), **scores}
            self.say(f"generated, true CFG {cfg:g}: {entry}")

    def resume(self, checkpoint: Path) -> None:
        """Take the trained weights from `checkpoint`; keep the log of the stage that made it."""
        models, log = load_checkpoint(checkpoint)
        for name, model in models.items():
            self.models[name].load_state_dict(model.state_dict())
        if "dit" in log["stages"]:
            self.log["stages"]["dit_before"] = {**log["stages"]["dit"], "resumed": True}
        self.log["resumed_from"] = {"seconds": log.get("seconds"), "args": log.get("args")}

    def run(self) -> None:
        self.say(f"device {self.log['device']}; parameters {self.log['parameters']}")
        if self.args.resume:
            self.resume(Path(self.args.resume))
        torch.manual_seed(self.args.seed * 1000 + 4)
        self.train_dit()
        self.save()
        if self.args.eval_images:
            self.evaluate(self.args.eval_images)
            self.save()
        self.say(f"saved {self.out / 'checkpoint.safetensors'}")


# ---------------------------------------------------------------------------------------------
# Export: the checkpoint as a diffusers FluxPipeline folder.


def load_checkpoint(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        log = json.loads(f.metadata()["log"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    models = new_models(len(build_tokenizer()))
    for name, model in models.items():
        state = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        model.load_state_dict(state, strict=True)
        model.eval()
    return models, log


def assemble(models: dict, vae):
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    tokenizer, tokenizer_2 = tokenizers()
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=vae,
                        text_encoder=models["text_encoder"], tokenizer=tokenizer,
                        text_encoder_2=models["text_encoder_2"], tokenizer_2=tokenizer_2,
                        transformer=models["transformer"])


def export(checkpoint: Path, to: Path) -> Path:
    """Write `to`/tiny-shapes-dit whole: into a folder beside it, which then replaces it."""
    models, log = load_checkpoint(checkpoint)
    pipe = assemble(models, shipped_vae())
    pipe_dir, staging = to / DIT_NAME, to / (DIT_NAME + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.save_pretrained(staging, safe_serialization=True)
    half_storage(staging)
    summary = {k: log[k] for k in ("device", "parameters", "stages", "generated", "seconds",
                                    "args", "resumed_from", "scaling_factor") if k in log}
    summary["text_length"] = TEXT_LENGTH
    (staging / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    for f in staging.rglob("*"):
        if f.is_file():
            f.chmod(0o644)  # safetensors writes 0600
    shutil.rmtree(pipe_dir, ignore_errors=True)
    staging.rename(pipe_dir)
    return pipe_dir


def save_samples(pipe_dir: Path, out: Path, device: str = "cpu") -> None:
    """A grid of 16 generated images (20 Euler steps, true CFG), to look at."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(pipe_dir).to(device)
    pipe.set_progress_bar_config(disable=True)
    prompts = shapes.prompts(16, seed=1)
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(16)]
    side = shapes.IMAGE_SIZE  # FluxPipeline's default is 1024
    images = pipe(prompts, num_inference_steps=20, generator=generators, output_type="np",
                  height=side, width=side,
                  max_sequence_length=pipe.tokenizer_2.model_max_length,
                  true_cfg_scale=CFG_SCALE, negative_prompt=[""] * 16).images
    save_grid(images, prompts, out)


def _stages(train) -> None:
    # steps 0: as many as fill --dit-seconds on this machine
    train.add_argument("--dit-steps", type=int, default=0)
    train.add_argument("--dit-seconds", type=float, default=270)
    train.add_argument("--dit-batch", type=int, default=512)
    train.add_argument("--dit-lr", type=float, default=6e-4)


def parser() -> argparse.ArgumentParser:
    return command_line(__doc__, _stages, resume="go on training this checkpoint's weights (a "
                        "fresh optimizer and schedule)")


def main(argv=None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    checkpoint = args.checkpoint if args.command == "export" else args.resume
    if checkpoint is not None and not Path(checkpoint).is_file():
        cli.error(f"no checkpoint at {checkpoint}")

    if args.command == "train":
        torch.set_num_threads(args.threads)
        if args.device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        trainer = DitTrainer(args)
        trainer.run()
        if args.export:
            pipe_dir = export(Path(args.out) / "checkpoint.safetensors",
                              Path(args.out) / "weights")
            save_samples(pipe_dir, Path(args.out) / "samples.png", args.device)
    else:
        pipe_dir = export(Path(args.checkpoint), Path(args.to))
        print(f"wrote {pipe_dir}")
        if args.samples:
            save_samples(pipe_dir, Path(args.samples))


if __name__ == "__main__":
    main()
