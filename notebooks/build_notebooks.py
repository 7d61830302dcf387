"""Write the notebooks of this folder (nbformat v4, without outputs).

Run from the repository root after editing a cell here:

    .venv/bin/python notebooks/build_notebooks.py

The notebooks are generated, not edited by hand, so that they stay free of outputs and
execution counts and their cells stay reviewable as plain text.
"""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP_MD = """\
The notebook reads one run folder, named by the environment variable `FOURM_RUN`
(default `runs/quickstart`, relative to the repository root), with the layout that
`fourm-lightning quickstart` writes. The working directory becomes the repository root, because
checkpoints record the paths of their tokenizers relative to it."""

SETUP = """\
ROOT = explore.repo_root()
os.chdir(ROOT)
RUN = explore.run_folder(ROOT)
print("run folder:", RUN.path)"""


def setup(imports: str, after: str = "") -> str:
    """The first code cell: the notebook's imports, the run folder, then ``after``."""
    lines = [dedent(imports).strip(), "", SETUP]
    if after:
        lines += ["", dedent(after).strip()]
    return "\n".join(lines)


THREADS_MD = """\
The models are small, so each operation is short and PyTorch's thread synchronisation would
cost more than it saves, most of all when other processes share the CPU cores. One thread keeps
the run time predictable."""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(dedent(text).strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(dedent(text).strip())


# ----------------------------------------------------------------------------------------------
# 01: the data
# ----------------------------------------------------------------------------------------------

DATA_TOUR = [
    md(
        """
        # A tour of the built-in dataset

        The built-in dataset is rendered: procedural rooms with one to six objects, ray-cast
        with exact ground truth for every modality. This notebook shows what one validation
        sample holds, how each modality is stored, and statistics of the validation split.
        """
    ),
    md(SETUP_MD),
    code(
        setup(
            """
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from fourm_lightning import explore
from fourm_lightning.datamodules.shards import iter_samples, load_sample, read_manifest
from fourm_lightning.viz import plot_sample
"""
        )
    ),
    md(
        """
        ## The manifest

        `manifest.json` records the modality specs, the resolution, the splits and the
        generator's settings. Every reader of the dataset starts from it.
        """
    ),
    code(
        """
        manifest = read_manifest(RUN.data)
        print(f"resolution {manifest.resolution} x {manifest.resolution}")
        for split in manifest.splits:
            shards = len(manifest.shards(split))
            print(f"{split}: {manifest.num_samples(split)} samples in {shards} shard(s)")
        generator = manifest.generator
        print(f"generator {generator.get('name')} v{generator.get('version')}, seed {manifest.seed}")
        """
    ),
    md(
        """
        ## The modalities

        One row per modality. `kind` is the class that implements storage, validation,
        augmentation and drawing for the modality's family; `file` is the member name inside a
        sample of a WebDataset shard; `stored form` is the value `decode` returns for the first
        validation sample.
        """
    ),
    code(
        """
        sample = load_sample(RUN.data, "val", 0)
        display(Markdown(explore.markdown_table(explore.modality_table(manifest, sample))))
        """
    ),
    md(
        """
        ## One validation sample

        `plot_sample` draws each modality with its kind's `render`, after converting the
        stored forms to sample forms (`kind.to_tensor`). Boxes are drawn over the RGB image.
        Depth is shown as inverse depth (near is bright). The scene graph (`scene`) is left
        out of the figure; its objects are listed below it.
        """
    ),
    code(
        """
        specs = {name: spec for name, spec in manifest.specs.items() if name != "scene"}
        shown = {name: spec.kind.to_tensor(sample[name]) for name, spec in specs.items()}
        title = f"validation sample {sample['__key__']}"
        explore.show(plot_sample(shown, specs, columns=7, title=title))
        """
    ),
    code(
        """
        fields = ("instance", "shape", "color", "size", "visible_pixels")
        objects = [{f: obj.get(f) for f in fields} for obj in sample["scene"]["objects"]]
        display(Markdown(explore.markdown_table(objects)))
        print("caption:", sample["caption"])
        """
    ),
    md(
        """
        ## Statistics of the validation split

        `dataset_statistics` reads the scene graph, the boxes, the caption, the depth map and
        the semantic map of every validation sample. Objects are counted from the scene graph,
        boxes only for visible objects, so a scene can have fewer boxes than objects.
        """
    ),
    code(
        """
        names = ["scene", "det", "caption", "depth", "semseg"]
        stats = explore.dataset_statistics(
            iter_samples(RUN.data, "val", names), manifest.class_names
        )
        per_scene = {
            "objects per scene": stats.objects_per_scene,
            "boxes per scene": stats.boxes_per_scene,
            "caption words": stats.caption_words,
            "nearest depth (m)": stats.depth_min,
            "farthest depth (m)": stats.depth_max,
        }
        rows = [
            {"quantity": q, "mean": v.mean(), "min": v.min(), "max": v.max()}
            for q, v in per_scene.items()
        ]
        print(f"{stats.num_samples} validation scenes")
        display(Markdown(explore.markdown_table(rows, digits=2)))
        """
    ),
    md(
        """
        Objects per scene, and how the objects divide into shapes and colours (each bar of the
        colour plot is drawn in its colour).
        """
    ),
    code(
        """
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        counts = np.bincount(stats.objects_per_scene)
        axes[0].bar(range(len(counts)), counts)
        axes[0].set(title="objects per scene", xlabel="objects", ylabel="scenes")
        axes[1].bar(list(stats.shapes), list(stats.shapes.values()))
        axes[1].set(title="objects per shape", ylabel="objects")
        colors = list(stats.colors)
        axes[2].bar(colors, list(stats.colors.values()), color=colors, edgecolor="black")
        axes[2].set(title="objects per colour", ylabel="objects")
        axes[2].tick_params(axis="x", rotation=45)
        fig.tight_layout()
        explore.show(fig)
        """
    ),
    md(
        """
        Caption lengths in words, the depth range of each scene (nearest and farthest pixel),
        and the share of all pixels that each semantic class takes.
        """
    ),
    code(
        """
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        axes[0].hist(stats.caption_words, bins=20)
        axes[0].set(title="caption length", xlabel="words", ylabel="captions")
        axes[1].hist([stats.depth_min, stats.depth_max], bins=20, label=["nearest", "farthest"])
        axes[1].set(title="depth range per scene", xlabel="metres", ylabel="scenes")
        axes[1].legend()
        axes[2].bar(stats.semseg_classes, stats.semseg_share)
        axes[2].set(title="semantic classes", ylabel="share of pixels")
        axes[2].tick_params(axis="x", rotation=45)
        fig.tight_layout()
        explore.show(fig)
        """
    ),
]


# ----------------------------------------------------------------------------------------------
# 02: the tokenizers
# ----------------------------------------------------------------------------------------------

TOKENIZERS = [
    md(
        """
        # The tokenizers

        4M sees every modality as discrete tokens. Image-like maps go through a ViT VQ-VAE
        each (one token per image patch), the camera vector through an MLP VQ, and the
        text-like modalities through one shared WordPiece vocabulary. This notebook encodes a
        few validation samples with each tokenizer of the run, decodes them again, scores the
        reconstructions, and measures how the codebooks are used.
        """
    ),
    md(SETUP_MD + "\n\n" + THREADS_MD),
    code(
        setup(
            """
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from fourm_lightning import explore
from fourm_lightning.datamodules.shards import read_manifest
from fourm_lightning.generation.io import render_sample
from fourm_lightning.tokenizers.loading import load_tokenizer
from fourm_lightning.transfer.metrics import CameraError
""",
            """
torch.set_num_threads(1)
manifest = read_manifest(RUN.data)
"""
        )
    ),
    md(
        """
        ## Loading

        `load_tokenizer` rebuilds a tokenizer from its Lightning checkpoint (the checkpoint
        names its class) and checks that it serves the expected modality.
        """
    ),
    code(
        """
        IMAGE_MODALITIES = ["rgb", "depth", "normal", "semseg", "canny_edge", "instance_edge"]
        tokenizers = {
            m: load_tokenizer(RUN.tokenizer_checkpoint(m), modality=m)
            for m in [*IMAGE_MODALITIES, "camera"]
        }
        rows = [
            {
                "modality": m,
                "tokenizer": type(tok).__name__,
                "quantizer": type(tok.model.quantizer).__name__,
                "vocabulary": tok.vocab_size,
                "tokens per sample": tok.num_tokens(manifest.resolution),
            }
            for m, tok in tokenizers.items()
        ]
        display(Markdown(explore.markdown_table(rows)))
        """
    ),
    md(
        """
        ## Reconstructions

        The first validation samples, in batch form. `encode` gives one token per image
        patch; `decode` maps the tokens back to the modality. Depth is tokenized after a
        per-image standardisation, so `decode` needs the encoded batch as `reference` to return
        metres; the other modalities ignore it.
        """
    ),
    code(
        """
        NUM_SAMPLES, SHOWN = 32, 3
        batch = explore.load_batch(
            RUN.data, "val", [*IMAGE_MODALITIES, "camera", "caption", "det"], NUM_SAMPLES
        )
        tokens, reconstructions = {}, {}
        for m in IMAGE_MODALITIES:
            tokens[m] = tokenizers[m].encode(batch[m])
            reconstructions[m] = tokenizers[m].decode(tokens[m], reference=batch[m])
        print(f"{len(batch['__key__'])} samples; rgb tokens {tuple(tokens['rgb'].shape)}")
        print("rgb tokens of the first sample:")
        print(tokens["rgb"][0])
        """
    ),
    md(
        """
        Each row is one tokenizer: for each of the first samples, the input and its
        reconstruction side by side.
        """
    ),
    code(
        """
        rows = []
        for m in IMAGE_MODALITIES:
            kind = manifest.specs[m].kind
            row = []
            for i in range(min(SHOWN, len(batch["__key__"]))):
                row.append((f"{m} {i}", batch[m][i], kind))
                row.append((f"{m} {i} decoded", reconstructions[m][i], kind))
            rows.append(row)
        explore.show(render_sample(rows, title="input | reconstruction"))
        """
    ),
    md(
        """
        ## Reconstruction quality

        Each tokenizer's own validation metrics (those it logs in training), over the samples
        above: PSNR and SSIM for RGB, AbsRel (lower is better) and delta1 for depth in metres,
        mean angular error in degrees for normals, mIoU for the semantic map, F1 for edges.
        """
    ),
    code(
        """
        quality = [
            {"tokenizer": f"tok_{m}", "metric": name, "value": value}
            for m in IMAGE_MODALITIES
            for name, value in explore.reconstruction_metrics(
                tokenizers[m], batch[m], reconstructions[m]
            ).items()
        ]
        display(Markdown(explore.markdown_table(quality)))
        """
    ),
    md(
        """
        ## Codebook usage

        Usage is counted on the pre-tokenized validation split (`RUN/tokens`), the tokens 4M
        is trained and evaluated on. *Codes used* is the share of the vocabulary that occurs at
        least once; *perplexity* is exp(entropy) of the code histogram, the number of equally
        used codes that would give the same entropy. A vocabulary larger than the number of
        tokens counted cannot be fully used in them.
        """
    ),
    code(
        """
        val_tokens = explore.collect_tokens(RUN.tokens, "val")
        usage = {
            m: explore.code_usage(val_tokens[m], tokenizers[m].vocab_size)
            for m in tokenizers
            if m in val_tokens
        }
        rows = [
            {
                "tokenizer": f"tok_{m}",
                "vocabulary": u.vocab_size,
                "tokens counted": u.num_tokens,
                "codes used": f"{u.share_used:.1%}",
                "perplexity": u.perplexity,
            }
            for m, u in usage.items()
        ]
        display(Markdown(explore.markdown_table(rows, digits=1)))
        """
    ),
    md(
        """
        The code histograms, with codes sorted from most to least frequent (log scale); the
        horizontal axis spans the whole vocabulary, so the empty part on the right is the
        unused codes. A flat curve means evenly used codes; a steep drop means a few codes
        carry most tokens.
        """
    ),
    code(
        """
        fig, axes = plt.subplots(2, 4, figsize=(14, 5.5))
        for ax, (m, u) in zip(axes.flat, usage.items(), strict=False):
            counts = np.sort(u.counts)[::-1]
            used = counts[counts > 0]
            ax.bar(range(len(used)), used, width=1.0)
            ax.set_yscale("log")
            ax.set_xlim(-0.5, u.vocab_size)
            ax.set_title(f"tok_{m}: {len(used)} of {u.vocab_size} codes used", fontsize=9)
            ax.set_xlabel("code rank", fontsize=8)
        axes.flat[0].set_ylabel("occurrences")
        for ax in axes.flat[len(usage) :]:
            ax.axis("off")
        fig.tight_layout()
        explore.show(fig)
        """
    ),
    md(
        """
        ## The camera vector

        The camera modality is a 10-vector: position, forward direction, field of view and
        light direction. Its MLP VQ turns it into a few tokens. Below: the tokens of the first
        samples, the first vector before and after the round trip, and the round-trip errors
        over all loaded samples (the metric the out-of-the-box evaluation uses).
        """
    ),
    code(
        """
        camera = tokenizers["camera"]
        camera_tokens = camera.encode(batch["camera"])
        camera_decoded = camera.decode(camera_tokens)
        print("camera tokens of the first samples:")
        print(camera_tokens[:SHOWN])
        fields = manifest.specs["camera"].kind.field_names
        rows = [
            {"field": f, "true": float(batch["camera"][0, j]), "decoded": float(camera_decoded[0, j])}
            for j, f in enumerate(fields)
        ]
        display(Markdown(explore.markdown_table(rows)))
        error = CameraError()
        error.update(camera_decoded, batch["camera"])
        display(Markdown(explore.markdown_table([{k: float(v) for k, v in error.compute().items()}])))
        """
    ),
    md(
        """
        ## The text tokenizer

        Captions, boxes, colour palettes and metadata share one WordPiece vocabulary. Below, a
        validation caption: its ids, the token each id stands for, and the decoded text. The
        last line shows a made-up phrase: words outside the vocabulary split into pieces
        marked `##`, and a word with a character the vocabulary lacks becomes `[UNK]`.
        """
    ),
    code(
        """
        text = load_tokenizer(RUN.text_tokenizer).tokenizer
        caption = batch["caption"][0]
        ids = text.encode(caption, add_eos=True)
        print(f"vocabulary: {text.vocab_size} ids")
        print("caption:", caption)
        print(f"{len(ids)} ids:", ids)
        print("tokens:", [text.id_to_token(i) for i in ids])
        print("decoded:", text.decode(ids))
        print("a made-up phrase:", [text.id_to_token(i) for i in text.encode("a turquoise dodecahedron")])
        """
    ),
    md(
        """
        Boxes become text before tokenization (`kind.text_chunks`): each box is written as its
        four coordinates, quantised to single number tokens (`v0=...` to `v3=...`), followed by
        words naming the object. `kind.from_text` parses the decoded text back into boxes.
        """
    ),
    code(
        """
        det_kind = manifest.specs["det"].kind
        boxes = det_kind.to_stored(batch["det"][0])
        box_text = " ".join(det_kind.text_chunks(boxes))
        box_ids = text.encode(box_text)
        print("boxes as text:", box_text)
        print(f"{len(box_ids)} tokens:", [text.id_to_token(i) for i in box_ids])
        for box in det_kind.from_text(text.decode(box_ids)):
            print("parsed back:", box)
        """
    ),
]


# ----------------------------------------------------------------------------------------------
# 03: any-to-any generation
# ----------------------------------------------------------------------------------------------

ANY_TO_ANY = [
    md(
        """
        # Any-to-any generation

        The run's 4M model predicts any subset of modalities from any other. A generation
        *schedule* is a list of steps; each step fills one target modality, and a finished
        target becomes an input of the later steps. This notebook runs the schedules of
        `configs/generation/` on a few samples, shows classifier-free guidance, and fills in
        partial inputs.

        A model trained for a short time produces poor outputs; the figures show what the
        run's model does, whatever its quality.
        """
    ),
    md(SETUP_MD + "\n\n" + THREADS_MD),
    code(
        setup(
            """
import dataclasses
import os

import torch
from IPython.display import Markdown, display

from fourm_lightning import explore
from fourm_lightning.commands.generate import load_model
from fourm_lightning.datamodules.shards import read_manifest
from fourm_lightning.generation.io import Detokenizer, condition_state, render_sample
from fourm_lightning.generation.sampler import GenerationStep, generate
from fourm_lightning.tokenizers.text import TextTokenizer
""",
            """
torch.set_num_threads(1)
manifest = read_manifest(RUN.data)
"""
        )
    ),
    md(
        """
        ## The model

        `load_model` returns the plain `FourM` network in eval mode. Its *domains* are what it
        sees of each modality: RGB pixels (input only), token maps of the image tokenizers,
        the camera tokens, and text sequences in the shared vocabulary. `Detokenizer` loads
        each domain's tokenizer once and turns generated tokens back into modality values.
        """
    ),
    code(
        """
        net = load_model(str(RUN.fourm_checkpoint))
        text_tokenizer = TextTokenizer.load(RUN.text_tokenizer)
        detok = Detokenizer(net, manifest.specs)
        sources = {name: domain.source_name for name, domain in net.domains.items()}
        rows = [
            {
                "domain": name,
                "family": type(domain).__name__,
                "modality": domain.source_name,
                "tokens": domain.max_tokens,
                "generated": "yes" if domain.has_target else "no (input only)",
            }
            for name, domain in net.domains.items()
        ]
        display(Markdown(explore.markdown_table(rows)))
        """
    ),
    md(
        """
        ## RGB to all

        The schedule `configs/generation/rgb2all.yaml`: the dense maps and the camera first
        (MaskGIT or one ROAR step at a low temperature), then the captions, boxes, palette and
        metadata autoregressively. The conditions are the RGB images of the first validation
        samples.
        """
    ),
    code(
        """
        rgb2all = explore.read_schedule(ROOT / "configs/generation/rgb2all.yaml", net.domains)
        steps = [
            {
                "target": s.target,
                "scheme": s.scheme,
                "steps": s.steps if s.scheme != "autoregressive" else "",
                "temperature": s.temperature,
            }
            for s in rgb2all
        ]
        display(Markdown(explore.markdown_table(steps, digits=2)))
        val = explore.load_batch(RUN.data, "val", list(manifest.specs), 3)
        state = condition_state(net, images=list(val["rgb"]))
        result = generate(net, state, rgb2all, seed=0, text_tokenizer=text_tokenizer)
        values = detok.values(result)
        """
    ),
    md(
        """
        For each sample, the generated values (upper rows) over the dataset's ground truth
        (lower rows). Generated depth has no metric scale: depth tokens describe each image's
        standardised log depth, so decoded without the true depth as reference they give
        depth up to a per-image scale, and only the layout compares with the truth.
        """
    ),
    code(
        """
        for i, key in enumerate(val["__key__"]):
            rows = explore.comparison_rows(values, val, manifest.specs, sources, i, given=["rgb"])
            backdrop = ("rgb", values["rgb"][i], manifest.specs["rgb"].kind)
            explore.show(render_sample(rows, backdrop, title=f"validation sample {key}: RGB -> all"))
        """
    ),
    md(
        """
        ## Caption to RGB

        `configs/generation/caption2rgb.yaml` chains caption -> semantic map -> depth -> RGB:
        the geometry is generated first, and each later step is conditioned on the caption and
        on everything generated before it. The steps use classifier-free guidance.
        """
    ),
    code(
        """
        caption2rgb = explore.read_schedule(ROOT / "configs/generation/caption2rgb.yaml", net.domains)
        captions = [
            "a room with a red sphere and a blue cube.",
            "there is a large green cylinder. the walls are plain.",
        ]
        state = condition_state(net, texts={"caption": captions}, text_tokenizer=text_tokenizer)
        values = detok.values(generate(net, state, caption2rgb, seed=0, text_tokenizer=text_tokenizer))
        rows = [
            [(name, values[name][i], manifest.specs[sources[name]].kind) for name in values]
            for i in range(len(captions))
        ]
        explore.show(render_sample(rows, title="caption -> semseg -> depth -> RGB"))
        """
    ),
    md(
        """
        ## Classifier-free guidance

        With guidance scale s, each step combines two passes: the logits with the conditions,
        l_c, and without them, l_u, as l_u + s (l_c - l_u). Scale 1 is the conditional pass
        alone; a larger scale extrapolates further from the unconditional prediction, in the
        direction the conditions move it.
        Below: the same caption and seed, two samples per scale, with every step's scale set
        to 1 and then to 3.
        """
    ),
    code(
        """
        rows = []
        for scale in (1.0, 3.0):
            schedule = [dataclasses.replace(step, guidance_scale=scale) for step in caption2rgb]
            state = condition_state(net, texts={"caption": captions[:1] * 2}, text_tokenizer=text_tokenizer)
            values = detok.values(generate(net, state, schedule, seed=0, text_tokenizer=text_tokenizer))
            for i in range(2):
                rows.append(
                    [
                        (f"{name}, scale {scale:g}", values[name][i], manifest.specs[sources[name]].kind)
                        for name in values
                    ]
                )
        explore.show(render_sample(rows, title=f"guidance scale 1 (top) and 3 (bottom): {captions[0]!r}"))
        """
    ),
    md(
        """
        ## In-painting

        A state entry carries two masks per domain: `input_mask` marks the tokens that are
        known, `target_mask` the tokens to generate. The sampler never changes input tokens,
        so in-painting is a state in which part of a domain is input and the rest is target.

        Here the RGB tokens of two validation images are computed with the model's RGB
        tokenizer, the left half of the token grid is kept, and the right half is generated
        (MaskGIT, 8 steps) from the left half alone.
        """
    ),
    code(
        """
        domain = net.domains["tok_rgb"]
        rgb_tokenizer = detok.tokenizer(domain.tokenizer)
        images = val["rgb"][:2]
        known = rgb_tokenizer.encode(images).flatten(1)  # (B, grid * grid)
        grid = domain.grid
        keep = torch.zeros(grid, grid, dtype=torch.bool)
        keep[:, : grid // 2] = True
        keep = keep.flatten().expand(len(images), -1).clone()
        state = condition_state(net, tokens={"tok_rgb": known})
        state["tok_rgb"]["input_mask"] = keep
        state["tok_rgb"]["target_mask"] = ~keep
        step = GenerationStep("tok_rgb", scheme="maskgit", steps=8, temperature=1.0, top_p=0.8)
        filled = detok.values(generate(net, state, [step], seed=0), ["tok_rgb"])["tok_rgb"]
        """
    ),
    md(
        """
        Per image: the original, the part that was given (the pixels of the kept tokens), all
        of its tokens decoded (the best any generation can do through this tokenizer), and
        the in-painted result.
        """
    ),
    code(
        """
        patch = images.shape[-1] // grid
        pixels = keep[0].reshape(grid, grid).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
        decoded = rgb_tokenizer.decode(known.reshape(-1, grid, grid))
        kind = manifest.specs["rgb"].kind
        rows = [
            [
                ("original", images[i], kind),
                ("given", images[i] * pixels, kind),
                ("all tokens decoded", decoded[i], kind),
                ("in-painted", filled[i], kind),
            ]
            for i in range(len(images))
        ]
        explore.show(render_sample(rows, title="RGB in-painting: the right half is generated"))
        """
    ),
    md(
        """
        Text is completed the same way with sentinels: `[S_1]` marks a span to fill, and the
        autoregressive step writes the span's text after it. Here the model also sees the
        RGB image of each sample.
        """
    ),
    code(
        """
        partial = ["a room with [S_1]", "[S_1] the walls are plain."]
        state = condition_state(
            net,
            images=list(val["rgb"][:2]),
            texts={"caption": partial},
            text_tokenizer=text_tokenizer,
        )
        step = GenerationStep("caption", scheme="autoregressive", temperature=0.5, top_p=0.9)
        completed = detok.values(
            generate(net, state, [step], seed=0, text_tokenizer=text_tokenizer), ["caption"]
        )["caption"]
        for given, text in zip(partial, completed, strict=True):
            print(f"{given!r}\\n  -> {text!r}")
        """
    ),
    md(
        """
        ## Which conditions does the model use?

        A generation can go wrong because of the sampler or because the model never learned to
        use the condition. `conditioning_gain` tells them apart: the loss of each target
        (nats per token) given each sample's own inputs, another sample's inputs, and no input
        at all. `none - own` is what the inputs tell the model; `another` above `none` means
        that the model reads the inputs but is misled by the wrong ones.
        """
    ),
    code(
        """
        from fourm_lightning.transfer.conditioning import conditioning_gain

        targets = ["tok_depth", "tok_semseg", "tok_rgb"]
        lines = ["| input | given | " + " | ".join(targets) + " |", "|---|---|---|---|---|"]
        for source in ("rgb", "caption"):
            scores = conditioning_gain(net, RUN.tokens, [source], targets, num_samples=100)
            for how, losses in scores.items():
                cells = " | ".join(f"{losses[t]:.3f}" for t in targets)
                lines.append(f"| {source} | {how} | {cells} |")
        display(Markdown("\\n".join(lines)))
        """
    ),
]


# ----------------------------------------------------------------------------------------------
# 04: transfer results
# ----------------------------------------------------------------------------------------------

RESULTS = [
    md(
        """
        # Transfer benchmark results

        `results/full/results.csv` holds every number of the benchmark suite
        `configs/benchmark/full.yaml` (`fourm-lightning benchmark`), one row per run and
        metric. This notebook turns it into the suite's two tables and bar plots, and then
        shows the run folder's own out-of-the-box scores (`evaluation.json`) when it has them.
        """
    ),
    md(SETUP_MD),
    code(
        setup(
            """
import json
import os

import yaml
from IPython.display import Markdown, display

from fourm_lightning import explore
from fourm_lightning.explore import CEILING_LABEL, MEAN_LABEL, MetricKey
from fourm_lightning.transfer.benchmark import TransferTask
""",
            """
results = explore.read_results(ROOT / "results/full/results.csv")
for section in ("ootb", "transfer"):
    models = {r.model for r in results if r.section == section}
    print(f"{section}: {sum(r.section == section for r in results)} rows, {len(models)} models")
"""
        )
    ),
    md(
        """
        ## Out of the box: RGB -> X

        Each model gets all RGB patches of a validation image and generates one target
        domain; the domain's tokenizer decodes it and the result is scored against the
        dataset's ground truth. Three references sit beside the 4M models:

        - *tokenizer ceiling*: the ground truth after a round trip through the same tokenizer,
          the best any token-predicting model can score;
        - *input-free mean*: the split's mean ground truth for every image, the score of a
          model that ignores the image;
        - *specialist*: the same network trained only for RGB -> that domain, with the same
          budget.

        Arrows mark each domain's primary metric and its direction (↑ higher is better,
        ↓ lower is better).
        """
    ),
    code(
        """
        ootb_models = list(dict.fromkeys(r.model for r in results if r.section == "ootb"))
        references = [m for m in (CEILING_LABEL, MEAN_LABEL, "specialist") if m in ootb_models]
        ootb_models = references + [m for m in ootb_models if m not in references]
        table = explore.pivot_table(results, explore.ootb_keys(results), ootb_models)
        display(Markdown(explore.markdown_table(table)))
        """
    ),
    code(
        """
        primary = explore.ootb_keys(results, primary_only=True)
        explore.show(explore.plot_metric_bars(results, primary, ootb_models))
        """
    ),
    md(
        """
        ## Transfer: fine-tuned and frozen backbones

        Each backbone's encoder gets a new head and is trained on a task the pretraining never
        saw: shape classification, colour segmentation, depth on a shifted scene distribution
        and Fashion-MNIST. *finetune* trains the whole encoder, *probe* only the head on a
        frozen encoder; *scratch* is the same network without pretraining. Cells hold the mean
        ± standard deviation over seeds. The tasks, their metrics and directions come from the
        suite's configuration.
        """
    ),
    code(
        """
        suite = yaml.safe_load((ROOT / "configs/benchmark/full.yaml").read_text())
        tasks = [TransferTask(**task) for task in suite["transfer"]["tasks"]]
        keys = [MetricKey(t.name, t.metric, t.higher_is_better) for t in tasks]
        transfer = [r for r in results if r.section == "transfer"]
        display(Markdown(explore.markdown_table(explore.pivot_table(transfer, keys))))
        explore.show(explore.plot_metric_bars(transfer, keys))
        """
    ),
    md(
        """
        ## This run's out-of-the-box scores

        The quickstart scores its own 4M model the same way on the first validation samples
        and writes `evaluation.json`, with the tokenizer ceiling and the input-free mean of
        the same samples. A model that does not beat the input-free mean has not used the
        image; the gap to the tokenizer ceiling is what better training could still gain.
        """
    ),
    code(
        """
        if RUN.evaluation_file.is_file():
            scores = json.loads(RUN.evaluation_file.read_text())
            run_rows = explore.evaluation_rows(scores, model="this run's 4M")
            print(f"{RUN.evaluation_file}: {scores.get('num_samples')} validation samples")
        else:
            scores, run_rows = None, []
            print(f"{RUN.evaluation_file} does not exist: this run has no evaluation yet.")
        """
    ),
    code(
        """
        if run_rows:
            run_models = ["this run's 4M", CEILING_LABEL, MEAN_LABEL]
            table = explore.pivot_table(run_rows, explore.ootb_keys(run_rows), run_models)
            display(Markdown(explore.markdown_table(table)))
            primary = explore.ootb_keys(run_rows, primary_only=True)
            explore.show(explore.plot_metric_bars(run_rows, primary, run_models))
        else:
            print("No evaluation to show.")
        """
    ),
]


NOTEBOOKS = {
    "01_data_tour.ipynb": DATA_TOUR,
    "02_tokenizers.ipynb": TOKENIZERS,
    "03_any_to_any.ipynb": ANY_TO_ANY,
    "04_transfer_results.ipynb": RESULTS,
}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        notebook = new_notebook(cells=cells)
        notebook.metadata["kernelspec"] = {
            "display_name": "Python 3",
            "language": "python",
            "name": "python3",
        }
        notebook.metadata["language_info"] = {"name": "python"}
        for index, cell in enumerate(notebook.cells):
            cell["id"] = f"{Path(name).stem[:2]}-{index:02d}"  # stable ids, no random churn
        nbformat.validate(notebook)
        nbformat.write(notebook, HERE / name)
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
