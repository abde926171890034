"""Bad files in a dataset: found once before a run, left out or kept, listed and counted.

ultralytics already checks every image/label pair (ultralytics.data.utils.verify_image_label):
it leaves out images it cannot open and images whose label file it rejects, drops duplicate
label lines and treats an empty or missing label file as a background image. We call that same
check, file by file, and fill only its gaps:

- an empty file, or one that is not an image at all, is left out before ultralytics sees it:
  its HEIF fallback would try to pip-install pi-heif for each such file and then give that
  failed import as the reason;
- an image that OpenCV cannot decode is left out: when its header passes ultralytics' check,
  ultralytics keeps it and training stops with "Image Not Found" when a batch loads it;
- a rejected label file is explained by its first bad line, where ultralytics' own message is
  often a numpy error or an empty array (NaN);
- boxes that reach past the image edge, and zero-size boxes, which ultralytics keeps silently,
  are reported;
- each problem file is listed once per run, with a summary by reason and split, however many
  splits share it and however often ultralytics builds a dataset from it.

Images to leave out are left out by handing ultralytics a data YAML whose split is a list of the
usable images, so every process of the run (DDP ranks too) trains on the same files. An empty
split, a split with no usable image or a split with no label at all stops the run (DataError).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from hashlib import sha1
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from attention.adapter import scan
from attention.adapter.api import NUM_THREADS, check_det_dataset
from attention.data.listing import DataError, label_files, list_images

REPORT_NAME = "data_report"  # data_report.txt and data_report.json in the run folder
CACHE_VERSION = 1  # bump when a check changes, so cached audits are redone
EDGE_TOL = 0.01  # how far past the edge a box may reach unreported: ultralytics' own coordinate tolerance

# Reasons, in report order. An image with any LEFT_OUT reason is not trained or scored on.
LEFT_OUT = {
    "empty image file": "the image file has 0 bytes",
    "not an image": "the file holds no known image format",
    "rejected image": "the image cannot be read, or fails ultralytics' image check",
    "undecodable image": "OpenCV cannot decode it: truncated or damaged image data",
    "unreadable label file": "the label file is not UTF-8 text",
    "malformed label line": "a label line is not numbers",
    "wrong column count": "a label line does not have 5 values (class x y w h)",
    "NaN or inf in labels": "a label value is NaN or infinite",
    "bad class id": "a class id is negative, fractional or not below the class count",
    "box outside the image": "a box coordinate is outside 0-1",
    "rejected label": "ultralytics' label check failed",
}
KEPT = {
    "restored JPEG": "the JPEG did not end with its end marker: ultralytics re-saved it in place",
    "duplicate labels": "repeated label lines: ultralytics keeps one of each",
    "box crosses the border": "a box reaches past the image edge (kept as written)",
    "zero-size box": "a box has zero width or height (kept as written)",
    "empty label file": "background image (no objects)",
    "no label file": "background image (no objects)",
    "ultralytics warning": "ultralytics kept the image with a warning",
}
BACKGROUND = {"empty label file", "no label file"}  # counted, but not listed on the console: often intended

# First bytes of the formats in IMG_FORMATS, to tell "not an image" from "a damaged image".
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",
          b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51")


def _is_image_format(head: bytes) -> bool:
    return (head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
            or head[4:8] == b"ftyp")  # ftyp: HEIC / HEIF / AVIF


def _repairable_jpeg(im_file: str, head: bytes) -> bool:
    """A JPEG that does not end with its end marker: ultralytics' check re-saves it whole when PIL can read it."""
    if not head.startswith(b"\xff\xd8\xff"):
        return False
    with open(im_file, "rb") as f:
        f.seek(-2, os.SEEK_END)
        return f.read() != b"\xff\xd9"


def explain_label(lb_file: str, nc: int) -> tuple[str, str] | None:
    """(reason, detail) for the first line of a label file that ultralytics would reject, or None.

    Only wording: ultralytics has already decided; this names the line, which its messages do not.
    """
    try:
        text = Path(lb_file).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        return "unreadable label file", f"not UTF-8 text ({e.reason} at byte {e.start})"
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue  # blank lines are skipped by ultralytics too
        shown = line.strip()[:60]
        try:
            v = [float(x) for x in parts]
        except ValueError:
            return "malformed label line", f"line {n} is not numbers: {shown!r}"
        if len(v) != 5 and (len(v) < 7 or len(v) % 2 == 0):  # 7, 9, ... values: a polygon, which ultralytics accepts
            return "wrong column count", f"line {n} has {len(v)} values, expected 5 (class x y w h): {shown!r}"
        if not all(math.isfinite(x) for x in v):
            return "NaN or inf in labels", f"line {n}: {shown!r}"
        if v[0] < 0 or v[0] % 1 or v[0] >= nc:
            return "bad class id", f"line {n}: class {v[0]:g} is not one of 0-{nc - 1}: {shown!r}"
        if min(v[1:]) < -EDGE_TOL or max(v[1:]) > 1 + EDGE_TOL:
            return "box outside the image", f"line {n}: coordinates outside 0-1: {shown!r}"
    return None


def _ultralytics_reason(msg: str, im_file: str) -> str:
    """ultralytics' message without the file name it starts with."""
    text = msg.replace(f"{im_file}: ", "").replace(im_file, "")  # some releases put it after a "WARNING" prefix
    text = text.split("ignoring corrupt image/label: ", 1)[-1].strip()
    return text.removeprefix("WARNING ⚠️").strip()


def check_file(im_file: str, lb_file: str, nc: int) -> dict[str, Any]:
    """Audit one image/label pair: {"problems": [(reason, detail), ...], "labels": rows kept}."""
    out: dict[str, Any] = {"problems": [], "labels": 0}
    bad = lambda reason, detail: {**out, "problems": [(reason, detail)]}
    try:
        with open(im_file, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return bad("rejected image", f"cannot be read: {e.strerror or e}")
    if not head:
        return bad("empty image file", LEFT_OUT["empty image file"])
    # Decode first, as training will (OpenCV), so that a file PIL cannot identify never reaches ultralytics'
    # check, whose HEIF fallback would try to install pi-heif for it. Two exceptions go to ultralytics first:
    # HEIF/AVIF files, which need that fallback, and JPEGs without an end marker, which it can repair.
    decoded = None if im_file.lower().endswith(scan.PIL_FALLBACK_SUFFIXES) else scan.decodes(im_file)
    if decoded is False and not _is_image_format(head):
        return bad("not an image", f"starts with {head[:8]!r}, which no image format does")
    if decoded is False and not _repairable_jpeg(im_file, head):
        return bad("undecodable image", LEFT_OUT["undecodable image"])
    verdict = scan.verify(im_file, lb_file, nc)
    lb, msg = verdict["labels"], verdict["message"]
    if not verdict["ok"]:
        if verdict["read"]:  # it got as far as reading the label file, so the label file is what it rejected
            return bad(*(explain_label(lb_file, nc) or ("rejected label", _ultralytics_reason(msg, im_file))))
        return bad("rejected image", _ultralytics_reason(msg, im_file))
    if len(lb) and ((lb[:, 0] < 0) | (lb[:, 0] >= nc)).any():  # releases up to 8.3.9x let class nc through
        return bad(*(explain_label(lb_file, nc) or ("bad class id", f"a class id is not one of 0-{nc - 1}")))
    if not decoded and not scan.decodes(im_file):
        return bad("undecodable image", LEFT_OUT["undecodable image"])
    problems = out["problems"]
    if msg:
        if "duplicate" in msg:
            problems.append(("duplicate labels", _ultralytics_reason(msg, im_file)))
        elif "restored" in msg:
            problems.append(("restored JPEG", KEPT["restored JPEG"]))
        else:
            problems.append(("ultralytics warning", _ultralytics_reason(msg, im_file)))
    if verdict["missing"]:
        problems.append(("no label file", f"{lb_file} does not exist: {KEPT['no label file']}"))
    elif verdict["empty"]:
        problems.append(("empty label file", KEPT["empty label file"]))
    if len(lb):
        xy, half = lb[:, 1:3], lb[:, 3:5] / 2
        past = ((xy - half) < -EDGE_TOL).any(1) | ((xy + half) > 1 + EDGE_TOL).any(1)
        if past.any():
            problems.append(("box crosses the border", f"{int(past.sum())} box(es) reach past the image edge, e.g. "
                             f"'{_row(lb[past][0])}'"))
        flat = (lb[:, 3] <= 0) | (lb[:, 4] <= 0)
        if flat.any():
            problems.append(("zero-size box", f"{int(flat.sum())} box(es), e.g. '{_row(lb[flat][0])}'"))
    out["labels"] = len(lb)
    return out


def _row(r: np.ndarray) -> str:
    return f"{int(r[0])} " + " ".join(f"{x:.6g}" for x in r[1:])


@dataclass
class SplitAudit:
    """One split of the dataset: where it is, its images, and the per-image results."""

    name: str
    entry: str  # the split as resolved from the data YAML, for messages
    images: list[str]
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # image -> check_file() result

    @property
    def usable(self) -> list[str]:
        return [f for f in self.images if not any(r in LEFT_OUT for r, _ in self.results[f]["problems"])]

    @property
    def labels(self) -> int:
        return sum(self.results[f]["labels"] for f in self.usable)


@dataclass
class DataReport:
    """Every problem file of the checked splits, each once, and counts by reason and split."""

    data: str  # the data YAML as the user named it
    splits: list[SplitAudit]

    def files(self) -> list[dict[str, Any]]:
        """One entry per problem file (a file several splits share is one entry naming them all)."""
        entries: dict[str, dict[str, Any]] = {}
        for s in self.splits:
            for f in s.images:
                problems = s.results[f]["problems"]
                if not problems:
                    continue
                if f in entries:
                    entries[f]["splits"].append(s.name)
                    continue
                entries[f] = {
                    "image": f, "label": label_files([f])[0], "splits": [s.name],
                    "action": "left out" if any(r in LEFT_OUT for r, _ in problems) else "kept",
                    "problems": [{"reason": r, "detail": d} for r, d in problems],
                }
        return list(entries.values())

    def problem_images(self) -> list[str]:
        """Every image the report names (left out or kept with a note)."""
        return [e["image"] for e in self.files()]

    def counts(self) -> dict[str, dict[str, int]]:
        """reason -> split -> number of files (a file with two reasons counts under each)."""
        out: dict[str, Counter] = {}
        for s in self.splits:
            for f in s.images:
                for r, _ in s.results[f]["problems"]:
                    out.setdefault(r, Counter())[s.name] += 1
        order = list(LEFT_OUT) + list(KEPT)
        return {r: dict(out[r]) for r in sorted(out, key=order.index)}

    def summary(self) -> str:
        """A table of problem files by reason and split, with per-split totals."""
        names = [s.name for s in self.splits]
        lines = [f"Data check of {self.data}: " + ", ".join(
            f"{s.name} {len(s.usable)}/{len(s.images)} images used, {s.labels} labels" for s in self.splits)]
        counts = self.counts()
        if not counts:
            return lines[0] + "; no problem files"
        width = max(len(r) for r in counts)
        lines.append(f"  {'reason':<{width}}  " + "  ".join(f"{n:>5}" for n in names) + "  action")
        for r, by_split in counts.items():
            action = "left out" if r in LEFT_OUT else "kept"
            lines.append(f"  {r:<{width}}  " + "  ".join(f"{by_split.get(n, 0):>5}" for n in names) + f"  {action}")
        files = self.files()
        left = sum(e["action"] == "left out" for e in files)
        lines.append(f"  {len(files)} problem file(s): {left} left out, {len(files) - left} kept")
        return "\n".join(lines)

    def listing(self, backgrounds: bool = True) -> list[str]:
        """'image: action: reason: detail' lines, one per problem file."""
        out = []
        for e in self.files():
            problems = [p for p in e["problems"] if backgrounds or p["reason"] not in BACKGROUND]
            if problems:
                why = "; ".join(f"{p['reason']}: {p['detail']}" for p in problems)
                out.append(f"{'+'.join(e['splits'])}: {e['image']}: {e['action']}: {why}")
        return out

    def show(self) -> None:
        """Print the problem files (background images only counted) and the summary."""
        for line in self.listing(backgrounds=False):
            print(f"  {line}")
        print(self.summary() + (f"\n  (full list: {REPORT_NAME}.txt in the run folder)" if self.counts() else ""))

    def write(self, folder: str | Path) -> Path | None:
        """data_report.txt (summary and every problem file) and data_report.json in folder (none if not audited)."""
        if not self.splits:
            return None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        listing = self.listing()
        (folder / f"{REPORT_NAME}.txt").write_text(self.summary() + "\n" + ("\nProblem files:\n" if listing else "")
                                                   + "".join(f"  {x}\n" for x in listing))
        splits = {s.name: {"source": s.entry, "images": len(s.images), "used": len(s.usable), "labels": s.labels}
                  for s in self.splits}
        report = {"data": self.data, "splits": splits, "counts": self.counts(), "files": self.files()}
        (folder / f"{REPORT_NAME}.json").write_text(json.dumps(report, indent=1))
        return folder / f"{REPORT_NAME}.txt"


def _audit(images: list[str], nc: int) -> dict[str, dict[str, Any]]:
    """check_file() for each image, reusing the result saved beside ultralytics' label cache when no file changed."""
    labels = label_files(images)
    cache = Path(labels[0]).parent.with_suffix(".audit.json")
    key = scan.files_hash(labels + images + [f"nc={nc} v{CACHE_VERSION}"])  # sizes and mtimes: any edit invalidates it
    try:
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return {f: {"problems": [tuple(p) for p in r["problems"]], "labels": r["labels"]}
                    for f, r in saved["results"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with ThreadPool(NUM_THREADS) as pool:  # as ultralytics scans: the work is file reads and decoding
        results = dict(zip(images, pool.starmap(check_file, [(f, lb, nc) for f, lb in zip(images, labels)])))
    try:  # best effort, as ultralytics' own cache: a read-only dataset is just audited again next time
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "results": results}))
        os.replace(tmp, cache)
    except OSError:
        pass
    return results


def _usable_only(data: str, cfg: dict[str, Any], audits: list[SplitAudit]) -> str:
    """A copy of the data YAML whose splits with left-out images list only the usable ones."""
    raw = yaml.safe_load(Path(data).read_text()) or {}
    raw["path"] = str(cfg["path"])
    out_dir = Path(tempfile.gettempdir()) / "attention-data"
    out_dir.mkdir(parents=True, exist_ok=True)
    lists = {s.name: "".join(f"{f}\n" for f in s.usable) for s in audits if len(s.usable) < len(s.images)}
    key = sha1(json.dumps([data, raw, lists], sort_keys=True, default=str).encode()).hexdigest()[:12]
    for name, text in lists.items():
        (path := out_dir / f"{Path(data).stem}-{key}-{name}.txt").write_text(text)
        raw[name] = str(path)
    out = out_dir / f"{Path(data).stem}-{key}.yaml"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # readers never see half a file
    tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.replace(tmp, out)
    return str(out)


def check_data(data: str, splits: Sequence[str], named: str | Path | None = None) -> tuple[str, DataReport]:
    """Audit the given splits of a (prepare_data-resolved) data YAML; print the problem files and a summary.

    Returns the data YAML to hand ultralytics (data itself when nothing is left out) and the report,
    to write into the run folder. Splits the YAML lacks are skipped: the caller says what it needs.
    Raises DataError for an empty split, a split with no usable image, or one with no labels.
    """
    named = str(named or data)
    if not scan.available():  # this ultralytics release lacks what the audit calls: its own checks still run
        return data, DataReport(named, [])
    cfg = check_det_dataset(data, autodownload=False)
    nc = len(cfg["names"])
    audits: list[SplitAudit] = []
    done: dict[str, dict[str, Any]] = {}  # image -> result, so splits sharing files check them once
    for name in dict.fromkeys(splits):
        if not cfg.get(name):
            continue
        entry = cfg[name] if isinstance(cfg[name], str) else ", ".join(cfg[name])
        try:
            images = list_images(cfg[name])
        except DataError as e:
            raise DataError(f"data YAML {named}: the {name} split: {e}") from None
        if not images:
            raise DataError(f"data YAML {named}: the {name} split has no images ({entry})")
        todo = [f for f in images if f not in done]
        if todo:
            done |= _audit(todo, nc)
        audits.append(SplitAudit(name, entry, images, {f: done[f] for f in images}))
    report = DataReport(named, audits)
    report.show()
    for s in audits:
        if not s.usable:
            raise DataError(f"data YAML {named}: none of the {len(s.images)} images of the {s.name} split is usable "
                            f"({s.entry}; reasons listed above)")
        if not s.labels:
            where = Path(label_files(s.images[:1])[0]).parent
            raise DataError(f"data YAML {named}: no image of the {s.name} split has a label: the label files "
                            f"for {s.entry} (in {where}) are missing or empty")
    if all(len(s.usable) == len(s.images) for s in audits):
        return data, report
    return _usable_only(data, cfg, audits), report
