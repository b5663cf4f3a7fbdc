"""``frugalvl train-upsampler``: train a SimFeatUp JBU upsampler for any ViT CLIP on unlabeled images."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError

def register(subparsers) -> None:
    from ..train.upsampler import LAST_BLOCKS

    p = subparsers.add_parser(
        "train-upsampler", help="train a SimFeatUp upsampler for a CLIP from unlabeled images",
        description="Learn the JBU-One feature upsampler of SegEarth-OV for any ViT CLIP (RemoteCLIP, GeoRSCLIP, "
                    "open_clip models) from unlabeled images, with the official SimFeatUp recipe. The result loads "
                    "with 'frugalvl segment --upsampler FILE'.")
    p.add_argument("--images", required=True, nargs="+", metavar="DIR_OR_LIST",
                   help="folders of images (searched recursively), image files, or text files listing one image path per line")
    p.add_argument("--clip", default="ViT-B-16",
                   help="CLIP: open_clip name[:tag] (default ViT-B-16, OpenAI weights), hf-hub:ORG/REPO, an OpenAI-format .pt file, or ARCH:FILE")
    p.add_argument("-o", "--output", required=True, metavar="UPSAMPLER.ckpt", help="the trained upsampler, in the official checkpoint layout")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    recipe = p.add_argument_group("recipe (defaults: the official SimFeatUp settings)")
    recipe.add_argument("--steps", type=int, help="optimiser steps (default: one pass over the images, as officially)")
    recipe.add_argument("--batch-size", type=int, help="crops per step (default 4)")
    recipe.add_argument("--lr", type=float, help="NAdam learning rate (default 1e-3)")
    recipe.add_argument("--img-weight", type=float, help="weight γ of the image-reconstruction loss (default 0.1)")
    recipe.add_argument("--crop-size", type=int, help="random crop size in pixels, a multiple of the patch size (default 224)")
    recipe.add_argument("--jitters", type=int, dest="n_jitters", help="random views per step (default 5)")
    recipe.add_argument("--projection-dim", type=int, help="random projection width of L_rec (default 30; 0 compares all channels)")
    recipe.add_argument("--last-block", choices=LAST_BLOCKS,
                        help="features to learn from: 'skip' drops the last ViT block as the official training (default); "
                             "'segearth' runs SegEarth-OV's modified last block, the features the upsampler meets at inference")
    recipe.add_argument("--normalisation", choices=["imagenet", "clip"],
                        help="image normalisation: imagenet as the official training (default), or clip as SegEarth-OV inference")
    recipe.add_argument("--upsampler-type", dest="upsampler", choices=["jbu_one", "jbu_stack"], help="JBU-One (default) or FeatUp's JBU-Stack")
    recipe.add_argument("--radius", type=int, help="JBU kernel radius (default 5 for JBU-One, 3 for JBU-Stack)")
    recipe.add_argument("--seed", type=int, help="seed of the initial weights, crops, views and dropout (default 0)")
    run = p.add_argument_group("checkpoints and speed")
    run.add_argument("--checkpoint-dir", help="folder of resumable checkpoints and log.jsonl (default: OUTPUT's stem + '_train' beside it)")
    run.add_argument("--checkpoint-every", type=int, help="steps between resumable checkpoints (default 100)")
    run.add_argument("--keep-checkpoints", type=int, help="resumable checkpoints kept, 0 keeps all (default 3)")
    run.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    run.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                     help="mixed precision: auto uses bf16 (else fp16) autocast on CUDA and fp32 on CPU (default auto)")
    run.add_argument("--workers", type=int, help="threads decoding images ahead of training (default 2)")
    p.set_defaults(func=run_command)


def settings_from_args(args: argparse.Namespace):
    from dataclasses import replace

    from ..train.upsampler import UpsamplerTrainSettings, settings_with

    names = ("steps", "batch_size", "lr", "img_weight", "crop_size", "n_jitters", "last_block", "normalisation", "upsampler",
             "radius", "seed", "checkpoint_every", "keep_checkpoints", "precision", "workers")
    settings = settings_with(UpsamplerTrainSettings(), **{name: getattr(args, name) for name in names})
    if args.projection_dim is not None:  # 0: compare all channels
        settings = replace(settings, projection_dim=args.projection_dim or None)
    return settings


def run_command(args: argparse.Namespace) -> int:
    from ..devices import resolve_device
    from ..models.clip import load_clip
    from ..train.upsampler import check_settings, list_training_images, summary_line, train_upsampler

    settings = settings_from_args(args)
    check_settings(settings)  # before the slow part; the patch size is checked once the CLIP is loaded
    images = list_training_images(args.images)
    output = Path(args.output)
    if output.is_dir():
        raise UserError(f"-o {output} is a folder: give the path of the .ckpt file to write")
    device = resolve_device(args.device)
    clip = load_clip(args.clip, device=device)
    summary = train_upsampler(clip, images, output, settings, checkpoint_dir=args.checkpoint_dir, resume=args.resume,
                              progress=not args.no_progress)
    print(summary_line(summary))
    return 0
