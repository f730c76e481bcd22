"""Train `tiny-shapes` (a Stable Diffusion pipeline with SD1.5's UNet topology at toy size) and
`tiny-shapes-clip` (a CLIP to score it) on the Shapes dataset of `tuner/shapes.py`.

Two commands, so that training can run wherever torch is fast while the shipped folders are
written by this project's own diffusers and transformers:

    python tools/train_tiny.py train --out runs/tiny [--device cuda]
        -> runs/tiny/checkpoint.safetensors (all weights, the log in its metadata), log.json
    python tools/train_tiny.py export runs/tiny/checkpoint.safetensors [--to tuner/weights]
        -> tuner/weights/tiny-shapes/ (a diffusers folder, with training.json: the log),
           tuner/weights/tiny-shapes-clip/ (a transformers folder)

Training is seeded (model initialisation and every batch); on a GPU it is not bit-exact. The
stages: (1) the VAE, as an autoencoder with a small KL term, then its latents' scaling factor;
(2) the CLIP, contrastively, on rendered images and their VAE reconstructions, with captions that
may leave out size and position (so that class prompts such as "a red circle" mean something);
(3) the UNet and text encoder together, epsilon prediction on the SD noise schedule, 10 %
empty captions for classifier-free guidance, min-SNR weighting and an EMA of the weights.
`--*-steps 0` (the default) picks the step count that fills the stage's `--*-seconds` on this
machine (timed on its first steps, then logged, so that a run can be repeated with that number).

The shipped weights come from two runs on one H100 (about 8 and 5.5 minutes):

    train --out A --device cuda --vae-seconds 60 --clip-seconds 75 --unet-seconds 300 \
        --eval-images 540                      # 1568 VAE, 1938 CLIP, 2377 UNet steps
    train --out B --device cuda --resume A/checkpoint.safetensors --unet-seconds 270 \
        --unet-batch 1024 --unet-lr 3e-4 --eval-images 540     # 2054 more UNet steps
    export B/checkpoint.safetensors

(pass those step counts as --vae-steps, --clip-steps, --unet-steps to repeat them elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner import shapes  # noqa: E402
from tuner.metrics import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: E402
from tuner.metrics import _features as embeddings  # noqa: E402  (transformers 4 and 5)
from tuner.presets import SCHEDULER_CONFIG, _sd_unet, _vae  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Architecture. 64x64 images, 8x8 latents (the VAE downsamples 8x, as SD's does).

UNET = _sd_unet((32, 32, 48, 48), 2, 64, sample_size=8, groups=8)
VAE = {**_vae((16, 32, 32, 32), groups=8), "layers_per_block": 1, "sample_size": 64}
TEXT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
CLIP_VISION = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                   intermediate_size=256, image_size=shapes.IMAGE_SIZE, patch_size=8)
CLIP_DIM = 64
MAX_LENGTH = 77
BOS, EOS = 512, 513  # as in tuner.presets.offline_clip_tokenizer; words get ids from 514

PIPE_NAME, CLIP_NAME = "tiny-shapes", "tiny-shapes-clip"
WEIGHTS = Path(__file__).resolve().parents[1] / "tuner" / "weights"


# ---------------------------------------------------------------------------------------------
# Tokenizer: byte-level BPE (every byte and its word-final form, as the offline tokenizer) plus
# the merges that make each word of the captions one token.


def bpe_merges(words: list[str]) -> list[tuple[str, str]]:
    """Learn BPE merges on `words` until each is one token. Applying merges lowest rank first
    (as the tokenizer does) rebuilds every word exactly as it was learned."""
    segments = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    merges = []
    while True:
        pairs = Counter(p for s in segments.values() for p in zip(s, s[1:]))
        if not pairs:
            return merges
        best = max(pairs, key=lambda p: (pairs[p], p))  # ties broken by the pair: deterministic
        merges.append(best)
        for word, s in segments.items():
            out, i = [], 0
            while i < len(s):
                if (s[i], s[i + 1] if i + 1 < len(s) else None) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            segments[word] = out


def build_tokenizer():
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = BOS, EOS
    merges = bpe_merges(shapes.words())
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)
    for word in shapes.words():  # every caption word is one token
        assert len(tokenizer(word)["input_ids"]) == 3, word
    return tokenizer


def text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=MAX_LENGTH,
                          bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS,
                          hidden_act="quick_gelu", projection_dim=CLIP_DIM, **TEXT)


def clip_config(vocab_size: int):
    from transformers import CLIPConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(projection_dim=CLIP_DIM, hidden_act="quick_gelu", **CLIP_VISION)
    return CLIPConfig(text_config=text_config(vocab_size).to_dict(),
                      vision_config=vision.to_dict(), projection_dim=CLIP_DIM)


# Caption variants for the CLIP: which of size and position a caption names.
VARIANTS = (("shape", "colour", "size", "position"), ("shape", "colour", "position"),
            ("shape", "colour", "size"), ("shape", "colour"))
VARIANT_WEIGHTS = (0.4, 0.2, 0.2, 0.2)


def token_table(tokenizer) -> torch.Tensor:
    """(len(VARIANTS), 540 + 1, 77) token ids: every scene's caption in each variant; the last
    row is the empty caption."""
    rows = []
    for parts in VARIANTS:
        captions = [s.caption(parts) for s in shapes.scenes()] + [""]
        rows.append(tokenizer(captions, padding="max_length", max_length=MAX_LENGTH,
                              truncation=True, return_tensors="pt")["input_ids"])
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# Models


def new_models(vocab_size: int) -> dict[str, torch.nn.Module]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel

    return {"vae": AutoencoderKL(**VAE), "unet": UNet2DConditionModel(**UNET),
            "text_encoder": CLIPTextModel(text_config(vocab_size)),
            "clip": CLIPModel(clip_config(vocab_size))}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Schedule:
    """Linear warm-up, then cosine decay to 10 % of the peak."""

    def __init__(self, optimizer, peak: float, steps: int, warmup: int):
        self.optimizer, self.peak, self.steps, self.warmup = optimizer, peak, steps, warmup

    def set(self, step: int) -> None:
        if step < self.warmup:
            lr = self.peak * (step + 1) / self.warmup
        else:
            done = (step - self.warmup) / max(1, self.steps - self.warmup)
            lr = self.peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(done, 1.0))))
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def optimizer_for(params, lr: float, device: torch.device, weight_decay: float = 0.0):
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99),
                             **({"fused": True} if device.type == "cuda" else {}))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    def __init__(self, args):
        self.begin(args)
        self.tokenizer = build_tokenizer()
        self.tokens = token_table(self.tokenizer).to(self.device)
        self.models = {k: m.to(self.device) for k, m in new_models(len(self.tokenizer)).items()}
        self.log["parameters"] = {k: parameter_count(m) for k, m in self.models.items()}
        self.scaling_factor = 1.0

    def begin(self, args) -> None:
        """What every trainer starts with: its options, device, output folder, clock and log,
        and the seeded RNG its models are initialised from."""
        self.args = args
        self.device = torch.device(args.device)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.start = time.perf_counter()
        self.log: dict = {"args": vars(args), "device": self.describe_device(), "stages": {}}
        self.on_step = None  # called after each step of a stage with (step, steps)
        torch.manual_seed(args.seed)

    def describe_device(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return f"cpu ({torch.get_num_threads()} threads)"

    def say(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", flush=True)

    def data(self, stage: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.args.seed * 1000 + stage)

    def images(self, n: int, g: torch.Generator) -> shapes.Batch:
        return shapes.sample(n, generator=g, device=self.device)

    def loop(self, stage: str, steps: int, seconds: float, optimizer, peak_lr: float, body,
             names: tuple[str, ...]) -> dict:
        """Run ``body(step) -> loss, numbers`` for `steps` steps; with `steps` 0, for as many as
        fill `seconds` on this machine (timed on steps 10 to 60, then fixed and logged).
        Returns the stage's log entry with the last `log_every` steps' mean numbers."""
        schedule = Schedule(optimizer, peak_lr, steps or 10 ** 9,
                            warmup=min(self.args.warmup, (steps or 2000) // 10 + 1))
        history, began, step, fixed = [], time.perf_counter(), 0, bool(steps)
        while step < (steps or 10 ** 9):
            if not steps and step in (10, 60):  # the first steps warm up: time 10 to 60
                synchronize(self.device)
                now = time.perf_counter()
                if step == 10:
                    warm = now
                else:
                    per_step = (now - warm) / 50
                    steps = schedule.steps = max(100, 60 + int((seconds - (now - began))
                                                               / per_step))
                    self.say(f"{stage}: {per_step * 1000:.1f} ms a step -> {steps} steps")
            schedule.set(step)
            loss, numbers = body(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for group in optimizer.param_groups for p in group["params"]], 1.0)
            optimizer.step()
            history.append(numbers.detach())
            step += 1
            if step % self.args.log_every == 0 or step == steps:
                mean = torch.stack(history[-self.args.log_every:]).mean(0).tolist()
                self.say(f"{stage} {step}/{steps or '?'} " + " ".join(
                    f"{n} {v:.5g}" for n, v in zip(names, mean)))
            if self.on_step is not None:
                self.on_step(step, steps)
            if step < steps and time.perf_counter() - began > 1.25 * seconds and not fixed:
                self.say(f"{stage}: out of time, stopped at step {step}")
                steps = step
        synchronize(self.device)
        mean = torch.stack(history[-self.args.log_every:]).mean(0).tolist()
        return {"steps": steps, "seconds": round(time.perf_counter() - began, 1),
                **{f"final_{n}": v for n, v in zip(names, mean)}}

    # -- stage 1: VAE -----------------------------------------------------------------------

    def train_vae(self) -> None:
        a, vae = self.args, self.models["vae"]
        g, opt = self.data(1), optimizer_for(vae.parameters(), a.vae_lr, self.device)

        def body(step):
            x = self.images(a.vae_batch, g).images * 2 - 1
            posterior = vae.encode(x).latent_dist
            rec = vae.decode(posterior.sample()).sample
            mse, l1 = F.mse_loss(rec, x), F.l1_loss(rec, x)
            kl = posterior.kl().mean()
            return mse + 0.1 * l1 + a.kl_weight * kl, torch.stack([mse, l1, kl])

        vae.train()
        entry = self.loop("vae", a.vae_steps, a.vae_seconds, opt, a.vae_lr, body,
                          ("mse", "l1", "kl"))
        vae.eval()
        with torch.no_grad():  # SD's recipe: scale latents to unit standard deviation
            x = self.images(512, self.data(11)).images * 2 - 1
            z = torch.cat([vae.encode(c).latent_dist.sample() for c in x.split(128)])
            rec = torch.cat([vae.decode(c).sample for c in z.split(128)])
        self.scaling_factor = float(1 / z.std())
        self.log["stages"]["vae"] = {
            **entry, "batch": a.vae_batch,
            "heldout_mse": float(F.mse_loss(rec, x)), "latent_mean": float(z.mean()),
            "latent_std": float(z.std()), "scaling_factor": self.scaling_factor}
        self.say(f"vae done: {self.log['stages']['vae']}")

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.models["vae"]
        z = vae.encode(images * 2 - 1).latent_dist.sample()
        return ((vae.decode(z).sample + 1) / 2).clamp(0, 1)

    # -- stage 2: CLIP ----------------------------------------------------------------------

    def clip_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """As tuner.metrics.CLIPScorer.preprocess sees a 64x64 image: quantised, normalised."""
        mean = torch.tensor(OPENAI_CLIP_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_CLIP_STD, device=self.device).view(1, 3, 1, 1)
        quantised = images + ((images * 255).round() / 255 - images).detach()
        return (quantised - mean) / std

    def train_clip(self) -> None:
        a, clip = self.args, self.models["clip"]
        g = self.data(2)
        opt = optimizer_for(clip.parameters(), a.clip_lr, self.device, weight_decay=0.05)
        weights = torch.tensor(VARIANT_WEIGHTS)
        keep = torch.tensor([[p in parts for p in ("shape", "colour", "position", "size")]
                             for parts in VARIANTS])

        def body(step):
            with torch.no_grad():
                clip.logit_scale.clamp_(0, math.log(100))
            batch = self.images(a.clip_batch, g)
            x = batch.images
            half = a.clip_batch // 2  # half of them as the VAE reconstructs them
            x = torch.cat([x[:half], self.reconstruct(x[half:])])
            variant = torch.multinomial(weights, a.clip_batch, replacement=True, generator=g)
            ids = self.tokens[variant.to(self.device),
                              shapes.scene_index(batch.labels).to(self.device)]
            out = clip(input_ids=ids, attention_mask=(ids != EOS) | _first_eos(ids),
                       pixel_values=self.clip_pixels(x))
            # A caption matches every image it describes, not only its own: soft targets.
            said = torch.where(keep[variant], batch.labels, -1)
            match = ((said.unsqueeze(0) == -1) | (said.unsqueeze(0) == batch.labels.unsqueeze(1))
                     ).all(-1).float().to(self.device)  # (images, texts)
            logits = out.logits_per_image
            loss_i = -(match / match.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
            loss_t = -(match / match.sum(0, keepdim=True) * logits.log_softmax(0)).sum(0).mean()
            own = (out.image_embeds * out.text_embeds).sum(-1).mean()
            loss = (loss_i + loss_t) / 2
            return loss, torch.stack([loss, own, clip.logit_scale.exp()])

        clip.train()
        entry = self.loop("clip", a.clip_steps, a.clip_seconds, opt, a.clip_lr, body,
                          ("loss", "own_cosine", "logit_scale"))
        clip.eval()
        self.log["stages"]["clip"] = {**entry, "batch": a.clip_batch, **self.clip_retrieval()}
        self.say(f"clip done: {self.log['stages']['clip']}")

    @torch.no_grad()
    def clip_retrieval(self) -> dict:
        """Top-1 over the shape x colour class prompts, on held-out rendered images."""
        clip = self.models["clip"]
        prompts = shapes.class_prompts()
        ids = self.tokenizer(prompts, padding="max_length", max_length=MAX_LENGTH,
                             return_tensors="pt")
        text = clip.get_text_features(input_ids=ids["input_ids"].to(self.device),
                                      attention_mask=ids["attention_mask"].to(self.device))
        batch = self.images(540, self.data(12))
        image = clip.get_image_features(pixel_values=self.clip_pixels(batch.images))
        text, image = (F.normalize(embeddings(t), dim=-1) for t in (text, image))
        truth = (batch.labels[:, 0] * len(shapes.COLOURS) + batch.labels[:, 1]).to(self.device)
        return {"heldout_class_top1": float(((image @ text.T).argmax(1) == truth).float().mean())}

    # -- stage 3: UNet and text encoder -----------------------------------------------------

    def train_unet(self) -> None:
        from diffusers import DDIMScheduler

        a = self.args
        unet, text, vae = self.models["unet"], self.models["text_encoder"], self.models["vae"]
        params = [*unet.parameters(), *text.parameters()]
        ema = [p.detach().clone() for p in params]
        alphas = DDIMScheduler(**SCHEDULER_CONFIG).alphas_cumprod.to(self.device)
        snr = alphas / (1 - alphas)
        weight = snr.clamp(max=5) / snr  # min-SNR-5 for epsilon prediction
        g, opt = self.data(3), optimizer_for(params, a.unet_lr, self.device)

        def body(step):
            if step:  # the EMA follows the previous step's update
                decay = min(a.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
            batch = self.images(a.unet_batch, g)
            with torch.no_grad():
                z = vae.encode(batch.images * 2 - 1).latent_dist.sample() * self.scaling_factor
            scene = shapes.scene_index(batch.labels)
            empty = torch.rand(a.unet_batch, generator=g) < a.uncond
            ids = self.tokens[0, torch.where(empty, len(shapes.scenes()), scene).to(self.device)]
            t = torch.randint(0, len(alphas), (a.unet_batch,), generator=g).to(self.device)
            noise = torch.randn(z.shape, generator=g).to(self.device)
            at = alphas[t].view(-1, 1, 1, 1)
            noisy = at.sqrt() * z + (1 - at).sqrt() * noise
            pred = unet(noisy, t, text(input_ids=ids).last_hidden_state).sample
            per_sample = (pred - noise).square().mean((1, 2, 3))
            loss = (weight[t] * per_sample).mean()
            return loss, torch.stack([loss, per_sample.mean()])

        self.ema_stage("unet", (unet, text), params, ema, opt, body, ("loss", "eps_mse"),
                       steps=a.unet_steps, seconds=a.unet_seconds, lr=a.unet_lr,
                       batch=a.unet_batch)

    def ema_stage(self, stage: str, models, params, ema, opt, body, columns, *, steps: int,
                  seconds: float, lr: float, batch: int) -> None:
        """Train `models` by `body` (`loop`), their EMA `ema` of `params` kept by `body`, a
        checkpoint of the EMA every --save-every steps; then the models take their EMA weights
        and go to eval mode, and the stage's entry is logged."""
        a = self.args

        def checkpoint(step, total):
            if a.save_every and step % a.save_every == 0 and step < total:
                self.save(ema_params=(params, ema), partial=step)

        for model in models:
            model.train()
        self.on_step = checkpoint
        entry = self.loop(stage, steps, seconds, opt, lr, body, columns)
        self.on_step = None
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - a.ema)
            for p, e in zip(params, ema):
                p.copy_(e)
        for model in models:
            model.eval()
        self.log["stages"][stage] = {**entry, "batch": batch, "ema": a.ema}
        self.say(f"{stage} done: {self.log['stages'][stage]}")

    # -- saving -----------------------------------------------------------------------------

    def save(self, ema_params=None, partial: int | None = None) -> None:
        """All weights in one safetensors file (keys `<model>.<parameter>`), the log in its
        metadata; mid-training (`ema_params`), the trained models (`trained`) as their EMA."""
        from safetensors.torch import save_file

        # A copy of each tensor: safetensors refuses two names on one storage (T5 ties some).
        tensors = {f"{name}.{k}": v.detach().float().cpu().clone()
                   for name, m in self.models.items() for k, v in m.state_dict().items()}
        if ema_params is not None:  # mid-training: the EMA weights of the trained models
            params, ema = ema_params
            by_id = {id(p): e for p, e in zip(params, ema)}
            for name in self.trained:
                for k, p in self.models[name].named_parameters():
                    tensors[f"{name}.{k}"] = by_id[id(p)].float().cpu().contiguous()
        self.log.update(self.log_fields(partial))
        self.log["seconds"] = time.perf_counter() - self.start
        path = self.out / "checkpoint.safetensors"
        save_file(tensors, str(path) + ".tmp", metadata={"log": json.dumps(self.log)})
        os.replace(str(path) + ".tmp", path)
        (self.out / "log.json").write_text(json.dumps(self.log, indent=2))

    trained = ("unet", "text_encoder")  # the models the last stage trains (their EMA)

    def log_fields(self, partial: int | None) -> dict:
        """What `save` adds to the log: `partial`, the last stage's steps so far mid-training."""
        return {"scaling_factor": self.scaling_factor, "partial_unet_steps": partial}

    def scorer(self, clip, scenes: list, chosen: list):
        """A function of images generated for the scenes `chosen` (of all `scenes`) that scores
        them with `clip`: retrieval over the shape x colour classes and over every caption, and
        the CLIP score against their own captions and against shuffled ones (every caption
        moved by 7)."""
        captions = [s.caption() for s in chosen]

        def text(prompts):
            ids = self.tokenizer(prompts, padding="max_length", max_length=MAX_LENGTH,
                                 return_tensors="pt").to(self.device)
            return F.normalize(embeddings(clip.get_text_features(**ids)), dim=-1)

        classes = torch.tensor([s.shape * len(shapes.COLOURS) + s.colour for s in chosen])
        full = torch.tensor([scenes.index(s) for s in chosen])
        class_text, caption_text = text(shapes.class_prompts()), text([s.caption() for s in scenes])
        k = 7 % len(captions)
        own_text, shuffled_text = text(captions), text(captions[k:] + captions[:k])

        def score(images) -> dict:
            image = F.normalize(embeddings(clip.get_image_features(
                pixel_values=self.clip_pixels(images.to(self.device)))), dim=-1)
            return {
                "class_top1": float(((image @ class_text.T).argmax(1).cpu() == classes)
                                    .float().mean()),
                "caption_top1": float(((image @ caption_text.T).argmax(1).cpu() == full)
                                      .float().mean()),
                "clip_score_own": float(100 * (image * own_text).sum(-1).clamp(min=0).mean()),
                "clip_score_shuffled": float(100 * (image * shuffled_text).sum(-1)
                                             .clamp(min=0).mean())}

        return score

    @torch.no_grad()
    def evaluate(self, count: int) -> None:
        """Generate `count` images (20 DDIM steps, guidance 7.5) and score them with the CLIP:
        retrieval over the shape x colour classes and over all 540 captions, and the CLIP score
        against their own and against shuffled captions."""
        vae = self.models["vae"]
        vae.register_to_config(scaling_factor=self.scaling_factor)
        pipe = assemble(self.models, self.tokenizer).to(self.device)
        pipe.set_progress_bar_config(disable=True)
        clip, began = self.models["clip"], time.perf_counter()
        scenes = shapes.scenes()
        chosen = [scenes[i] for i in torch.randperm(len(scenes), generator=self.data(13))[:count]]
        captions = [s.caption() for s in chosen]
        images = torch.cat([
            pipe(captions[i:i + 256], num_inference_steps=20, output_type="pt",
                 generator=torch.Generator(self.device).manual_seed(i)).images
            for i in range(0, count, 256)])
        scores = self.scorer(clip, scenes, chosen)(images)
        self.log["generated"] = {"images": count,
                                 "seconds": round(time.perf_counter() - began, 1), **scores}
        self.say(f"generated: {self.log['generated']}")

    def resume(self, checkpoint: Path) -> None:
        """Take every model's weights and the VAE's scaling factor from `checkpoint`; keep the
        log of the stages that made it."""
        models, _, log = load_checkpoint(checkpoint)
        for name, model in models.items():
            self.models[name].load_state_dict(model.state_dict())
        self.scaling_factor = log["scaling_factor"]
        self.log["stages"] = {k: {**v, "resumed": True} for k, v in log["stages"].items()}
        if "unet" in self.log["stages"]:  # training continues: keep the earlier entries
            self.log["stages"]["unet_before"] = self.log["stages"].pop("unet")
        self.log["resumed_from"] = {"seconds": log.get("seconds"), "args": log.get("args")}

    def run(self) -> None:
        self.say(f"device {self.log['device']}; parameters {self.log['parameters']}")
        if self.args.resume:  # keep the VAE and the CLIP, go on training the UNet
            self.resume(Path(self.args.resume))
        else:
            torch.manual_seed(self.args.seed * 1000 + 1)
            self.train_vae()
            self.save()
            torch.manual_seed(self.args.seed * 1000 + 2)
            self.train_clip()
            self.save()
        torch.manual_seed(self.args.seed * 1000 + 3)
        self.train_unet()
        self.save()
        if self.args.eval_images:
            self.evaluate(self.args.eval_images)
            self.save()
        self.say(f"saved {self.out / 'checkpoint.safetensors'}")


def _first_eos(ids: torch.Tensor) -> torch.Tensor:
    """The attention mask a tokenizer gives keeps the first EOS (the pooled token)."""
    eos = ids == EOS
    return eos & (eos.cumsum(1) == 1)


# ---------------------------------------------------------------------------------------------
# Export: the checkpoint as a diffusers pipeline folder and a transformers CLIP folder.


def load_checkpoint(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        log = json.loads(f.metadata()["log"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tokenizer = build_tokenizer()
    models = new_models(len(tokenizer))
    for name, model in models.items():
        state = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
        model.load_state_dict(state, strict=True)
        model.eval()
    models["vae"].register_to_config(scaling_factor=log["scaling_factor"])
    return models, tokenizer, log


def assemble(models: dict, tokenizer):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=models["vae"], text_encoder=models["text_encoder"], tokenizer=tokenizer,
        unet=models["unet"], scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)


def half_storage(folder: Path) -> None:
    """Store the float32 tensors of every safetensors file under `folder` as float16 (half the
    bytes shipped; the presets load them as float32 on the CPU, float16 on a GPU). Trained
    weights of these sizes sit far from float16's limits: the rounding is 2**-11 relative."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in sorted(folder.rglob("*.safetensors")):
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        if any(not torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point()):
            raise ValueError(f"{path} does not fit float16")
        save_file(tensors, str(path), metadata=metadata)


def export(checkpoint: Path, to: Path) -> tuple[Path, Path]:
    from transformers import CLIPImageProcessor

    models, tokenizer, log = load_checkpoint(checkpoint)
    pipe = assemble(models, tokenizer)
    pipe_dir, clip_dir = to / PIPE_NAME, to / CLIP_NAME
    pipe.save_pretrained(pipe_dir, safe_serialization=True)
    models["clip"].save_pretrained(clip_dir, safe_serialization=True)
    half_storage(pipe_dir)
    half_storage(clip_dir)
    tokenizer.save_pretrained(clip_dir)
    side = shapes.IMAGE_SIZE
    CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                       image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD)
                       ).save_pretrained(clip_dir)
    summary = {k: log[k] for k in ("device", "parameters", "stages", "generated", "seconds",
                                    "args", "resumed_from") if k in log}
    (pipe_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    for f in [*pipe_dir.rglob("*"), *clip_dir.rglob("*")]:
        if f.is_file():
            f.chmod(0o644)  # safetensors writes 0600
    return pipe_dir, clip_dir


def save_samples(pipe_dir: Path, out: Path, device: str = "cpu") -> None:
    """A grid of 16 generated images (20 DDIM steps), to look at."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(pipe_dir).to(device)
    pipe.set_progress_bar_config(disable=True)
    prompts = shapes.prompts(16, seed=1)
    generators = [torch.Generator("cpu").manual_seed(i) for i in range(16)]
    images = pipe(prompts, num_inference_steps=20, generator=generators, output_type="np").images
    save_grid(images, prompts, out)


def save_grid(images, prompts: list[str], out: Path) -> None:
    """16 images (numpy, 0-1) as a 2 x 8 grid at `out`, their prompts beside it (.txt)."""
    from PIL import Image

    grid = (torch.from_numpy(images) * 255).round().byte().view(2, 8, *images.shape[1:])
    grid = grid.permute(0, 2, 1, 3, 4).reshape(2 * images.shape[1], 8 * images.shape[2], 3)
    Image.fromarray(grid.numpy()).save(out)
    (out.with_suffix(".txt")).write_text("\n".join(prompts) + "\n")


def command_line(doc: str, stages, *, resume: str) -> argparse.ArgumentParser:
    """The two commands of a training tool (`train`, `export`): the options every tool has,
    and its stages' own, which `stages(train)` adds (after --seed); `resume`: what --resume
    keeps and trains on."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--out", required=True)
    train.add_argument("--device", default="cpu")
    train.add_argument("--threads", type=int, default=1, help="CPU threads")
    train.add_argument("--seed", type=int, default=0)
    stages(train)
    train.add_argument("--uncond", type=float, default=0.1, help="share of empty captions")
    train.add_argument("--ema", type=float, default=0.999)
    train.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    train.add_argument("--log-every", type=int, default=100)
    train.add_argument("--save-every", type=int, default=2000)
    train.add_argument("--resume", metavar="CHECKPOINT", help=resume)
    train.add_argument("--eval-images", type=int, default=0,
                       help="generate this many images at the end and score them (log)")
    train.add_argument("--export", action="store_true",
                       help="also export to <out>/weights and save samples.png")
    exp = sub.add_parser("export")
    exp.add_argument("checkpoint")
    exp.add_argument("--to", default=str(WEIGHTS))
    exp.add_argument("--samples", help="also save a grid of generated images here (.png)")
    return parser


def _stages(train) -> None:
    # steps 0: as many as fill the stage's seconds on this machine
    train.add_argument("--vae-steps", type=int, default=0)
    train.add_argument("--vae-seconds", type=float, default=45)
    train.add_argument("--vae-batch", type=int, default=256)
    train.add_argument("--vae-lr", type=float, default=1e-3)
    train.add_argument("--kl-weight", type=float, default=1e-6)
    train.add_argument("--clip-steps", type=int, default=0)
    train.add_argument("--clip-seconds", type=float, default=60)
    train.add_argument("--clip-batch", type=int, default=512)
    train.add_argument("--clip-lr", type=float, default=1e-3)
    train.add_argument("--unet-steps", type=int, default=0)
    train.add_argument("--unet-seconds", type=float, default=300)
    train.add_argument("--unet-batch", type=int, default=512)
    train.add_argument("--unet-lr", type=float, default=6e-4)


def main(argv=None) -> None:
    parser = command_line(__doc__, _stages,
                          resume="keep this checkpoint's VAE and CLIP; go on training its UNet "
                                 "and text encoder (a fresh optimizer and schedule)")
    args = parser.parse_args(argv)

    if args.command == "train":
        torch.set_num_threads(args.threads)
        if args.device.startswith("cuda"):
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        trainer = Trainer(args)
        trainer.run()
        if args.export:
            pipe_dir, _ = export(Path(args.out) / "checkpoint.safetensors",
                                 Path(args.out) / "weights")
            save_samples(pipe_dir, Path(args.out) / "samples.png", args.device)
    else:
        pipe_dir, clip_dir = export(Path(args.checkpoint), Path(args.to))
        print(f"wrote {pipe_dir} and {clip_dir}")
        if args.samples:
            save_samples(pipe_dir, Path(args.samples))


if __name__ == "__main__":
    main()
