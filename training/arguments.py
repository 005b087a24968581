"""The flags of every ``python -m training`` command, torch-free, so that ``--help`` and flag errors answer at once
instead of after torch and torchvision load (about 5 s on a 2-core CPU)."""

from __future__ import annotations

import argparse

from training.budgets import BUDGETS, DIFFICULT
from training.datasets.scenes import SCENE_CONFIGS


def initialisation_arguments(parser: argparse.ArgumentParser) -> None:
    """``--init FILE`` and ``--no-pretrained``: where the trunk's first weights come from."""
    parser.add_argument("--init", help="torchvision/timm state_dict loaded strictly into the trunk (head stays fresh)")
    parser.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                        help="start from random weights even when the preset names packaged pretrained weights")
    parser.add_argument("--frozen-blocks", type=int, metavar="N",
                        help="keep the trunk's first N blocks fixed (default: the preset's; MobileNetV2 presets)")


def run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--threads``, ``--seed``, ``--device`` and ``--pool``, which both trainers take."""
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda, cuda:N or auto (CUDA when present); on CUDA: bf16 autocast")
    parser.add_argument("--pool", metavar="DIR",
                        help="with --stream: read the streamed scenes from a pre-rendered uint8 pool under DIR "
                             "(rendered once, shared by runs with the same seed and stream)")


def data_arguments(parser: argparse.ArgumentParser, stream: str, val_size: int) -> None:
    """``--limit``, ``--stream``, ``--val-size``, then the initialisation and run flags both trainers take."""
    parser.add_argument("--limit", type=int, help="use only the first N training images")
    parser.add_argument("--stream", type=int, metavar="N",
                        help=f"train on {stream} (embedded data only) instead of the files")
    parser.add_argument("--val-size", type=int, default=val_size,
                        help=f"validation scenes when streaming (default {val_size})")
    initialisation_arguments(parser)
    run_arguments(parser)


def classify_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m training classify``."""
    parser.add_argument("--data", required=True,
                        help="embedded folder, reference JSON lists, a VOC2007/2012 folder or a COCO instances JSON")
    parser.add_argument("--preset", default="mobilenetv2-csra", help="model preset (default mobilenetv2-csra)")
    parser.add_argument("--method", choices=("baseline", "msl"), default="msl", help="BCE only, or MSL")
    parser.add_argument("--mask-ratio", default="high",
                        help="MSL training masks: low|medium|high|b1..b6|a-b, or 'buckets' (each mask's bucket drawn "
                             "uniformly from b1..b6 at every step)")
    parser.add_argument("--masked-bn", choices=("update", "clean"), default="update",
                        help="BatchNorm running statistics from both passes (update) or the clean pass only (clean)")
    parser.add_argument("--clean-bn-copy", action="store_true",
                        help="also write OUT/best-cleanbn.pth: the chosen weights with the trainable BatchNorm "
                             "statistics recomputed on clean training images")
    parser.add_argument("--difficult", choices=DIFFICULT, default="negative",
                        help="training labels of classes seen only as difficult instances (too hidden for the label "
                             "rule): trained as absent, or left out of the BCE terms")
    parser.add_argument("--eval-mask-ratio", default="high", help="extra masked evaluation ('' to skip)")
    parser.add_argument("--mask-dir", help="folder of real Irregular-Mask PNGs (white = hole) for training and "
                                           "evaluation masks, instead of generated ones")
    parser.add_argument("--image-size", type=int, help="input size (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01, help="backbone rate; the head gets 10x")
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--decay-epochs", type=int, nargs="*", default=[9], help="epochs where lr drops 10x")
    parser.add_argument("--choose-threshold", action="store_true",
                        help="choose the decision threshold that maximises OF1 on the validation split and keep it "
                             "for export (default: the preset's 0.5, as the papers' CP/CR/OF1 use)")
    data_arguments(parser, "N fresh procedural scenes per epoch", val_size=200)
    parser.add_argument("--out", required=True, help="output folder (checkpoints, log.json)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")


def segment_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m training segment``."""
    parser.add_argument("--data", required=True,
                        help="embedded folder, or a VOC2007/2012 folder (SegmentationClass/Object)")
    parser.add_argument("--preset", default="deeplab-mobilenetv2",
                        help="segmenter preset (default deeplab-mobilenetv2)")
    parser.add_argument("--loss", choices=("ce", "sb"), default="sb", help="plain CE, or CE then L_sw + EWC")
    parser.add_argument("--iters", type=int, default=1200)
    parser.add_argument("--switch-iter", type=int, help="CE -> L_sb switch (default: half of --iters)")
    parser.add_argument("--fisher-iters", type=int, default=100, help="CE iterations averaged into the Fisher")
    parser.add_argument("--tau", type=float, default=5.0, help="size-weight cap")
    parser.add_argument("--ewc-lambda", type=float, default=500.0, help="EWC strength (0 disables)")
    parser.add_argument("--image-size", type=int, help="training crop size (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01, help="backbone rate; the head gets 10x")
    parser.add_argument("--warmup-iters", type=int, default=50)
    parser.add_argument("--finetune-lr-factor", type=float, default=1.0,
                        help="after the switch every group runs at its CE-phase rate times this, for both losses "
                             "(default 1: the baseline's rate; the run logs lr x max(lambda F) against SGD's bound)")
    parser.add_argument("--keep", choices=("ia-miou", "last"), default="ia-miou",
                        help="weights kept: best validation IA-mIoU after the switch, or the last iterate")
    parser.add_argument("--start-from", help="continue from a switch.pth written by a run with the same settings")
    parser.add_argument("--eval-every", type=int, default=300)
    data_arguments(parser, "fresh procedural scenes (N per pass)", val_size=100)
    parser.add_argument("--out", required=True, help="output folder (final.pth, log.json)")


def reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m training reproduce``."""
    parser.add_argument("--budget", default="cpu", choices=tuple(BUDGETS),
                        help="tiny (tests, a minute), cpu (about 2 h for 3 seeds on 2 cores) or gpu (paper-like "
                             "step counts for one GPU)")
    parser.add_argument("--quick", action="store_true", help="the same as --budget tiny")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override one budget entry (e.g. --set iters=400); the report then calls the run reduced")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument("--machine", default="this 2-core CPU machine", help="how the report names the machine")
    parser.add_argument("--work", default="runs/reproduce", help="dataset, scene pool and run folder")
    parser.add_argument("--docs", default="docs", help="where reproduction.md/.json and plots go")
    parser.add_argument("--demo", default="runs/demo", help="the default store's training runs (for its figures)")
    parser.add_argument("--setup-minutes", type=float, help="record a measured make-serve set-up time")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild reproduction.md and the plots from reproduction.json without training")


def make_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m training make-dataset``."""
    parser.add_argument("out_dir", help="folder to write the VOC-style dataset into")
    parser.add_argument("--n-train", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--n-test", type=int, default=300, help="test images (default 300)")
    parser.add_argument("--image-size", type=int, default=224, help="square image side in pixels (default 224)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes (default 0)")
    parser.add_argument("--scenes", choices=tuple(SCENE_CONFIGS), default="mixed",
                        help="scene configuration: classification (VOC-like), segmentation (COCO-like, many small "
                             "objects) or mixed (the first embedded set); default mixed")
    parser.add_argument("--max-objects", type=int, help="objects drawn per image, at most (default: the config's)")
    parser.add_argument("--min-visible", type=int,
                        help="visible pixels an object needs to count as present (default: the config's, 12)")
    parser.add_argument("--void-width", type=int, help="void band around objects, pixels (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
