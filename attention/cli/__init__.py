"""The command line: `yolov5-attention <command>` (train, val, detect, compare, convert, tiling, sizes, maps,
export, compat); train.py, val.py and detect.py at the top of the repository call the same commands."""
