"""Fine-tune a variant from one base checkpoint four ways and print mAP50-95 after every epoch.

  (a) full transfer + identity start   (b) full transfer   (c) plain key loading   (d) no weights

python benchmarks/transfer_init.py --cfg yolov5n-cbam.yaml --base-epochs 20 --epochs 5 --img 320
Without --base, a base (yolov5n.yaml) is first trained for --base-epochs on the same data (with
--base-hyp); the fine-tunes use --hyp. Epoch 0 is each starting model, scored before training.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

from ultralytics import YOLO  # noqa: E402

from attention import cfg as shipped  # noqa: E402
from attention.data.listing import class_names, data_dict  # noqa: E402
from attention.data.prepare import EMBEDDED_DATA, prepare_data  # noqa: E402
from attention.evaluation.tables import format_table, write_table  # noqa: E402
from attention.training.build import starting_model  # noqa: E402
from attention.training.job import load_hyp, train  # noqa: E402

MODES = {"a": "transfer+identity", "b": "transfer", "c": "key loading", "d": "no weights"}


def mAP_per_epoch(run: Path) -> list[float]:
    with (run / "results.csv").open() as fh:
        return [float({k.strip(): v for k, v in r.items()}["metrics/mAP50-95(B)"]) for r in csv.DictReader(fh)]


def start_map(model, data: str, opt: argparse.Namespace, out: Path, key: str) -> float:
    """mAP50-95 of a starting model before any training (epoch 0)."""
    wrapper = YOLO(opt.cfg)
    wrapper.model = model
    return wrapper.val(data=data, imgsz=opt.img, batch=opt.batch_size, device=opt.device, plots=False,
                       project=str(out), name=f"start-{key}", exist_ok=True, verbose=False).box.map


def main(opt: argparse.Namespace) -> None:
    data = prepare_data(opt.data)
    nc = len(class_names(data_dict(data)))
    out = Path(opt.project).resolve()
    common = dict(data=opt.data, imgsz=opt.img, batch_size=opt.batch_size, device=opt.device, workers=opt.workers,
                  seed=opt.seed, project=out, exist_ok=True)
    base = opt.base or str(train(opt.base_cfg, hyp=opt.base_hyp, epochs=opt.base_epochs, name="base", **common)
                           .save_dir / "weights" / "best.pt")
    curves = {}
    for key, label in MODES.items():
        if key == "c":  # ultralytics' own loading: by state_dict key and shape, through its own trainer
            model = YOLO(shipped.model_yaml(opt.cfg)).load(base)
            start = start_map(copy.deepcopy(model.model), data, opt, out, key)
            model.train(data=data, imgsz=opt.img, batch=opt.batch_size, device=opt.device, workers=opt.workers,
                        seed=opt.seed, deterministic=True, project=str(out), exist_ok=True, epochs=opt.epochs,
                        name=f"mode-{key}", plots=False, **load_hyp(opt.hyp))
        else:
            weights = base if key in "ab" else None
            init = "identity" if key == "a" else "paper"
            start = start_map(starting_model(opt.cfg, weights, nc, opt.seed, init)[0], data, opt, out, key)
            train(opt.cfg, weights=weights, attn_init=init, hyp=opt.hyp, epochs=opt.epochs, name=f"mode-{key}", **common)
        curves[label] = [start, *mAP_per_epoch(out / f"mode-{key}")]
    rows = [{"epoch": e, **{label: c[e] for label, c in curves.items()}} for e in range(opt.epochs + 1)]
    write_table(rows, out / "transfer_init")
    print(f"\nmAP50-95 after each epoch, {Path(opt.cfg).stem} from {base} ({out / 'transfer_init.csv'}):")
    print(format_table(rows))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="yolov5n-cbam.yaml", help="the variant to fine-tune")
    p.add_argument("--base", default="", help="base checkpoint; default: train --base-cfg first")
    p.add_argument("--base-cfg", default="yolov5n.yaml")
    p.add_argument("--base-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--data", default=EMBEDDED_DATA)
    p.add_argument("--hyp", default="hyp.finetune.yaml", help="hyperparameters of the fine-tunes")
    p.add_argument("--base-hyp", default="hyp.small-objects.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="runs/benchmarks/transfer_init")
    main(p.parse_args())
