"""Score checkpoints: python val.py --weights best.pt [more.pt ...] [--data tiny-objects.yaml] [--size-bins tiny].

The classic script; the same as `yolov5-attention val` (attention/cli/val.py holds the flags).
"""

from attention.cli.main import main

if __name__ == "__main__":
    main(script="val.py")
