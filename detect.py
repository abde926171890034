"""Detect objects: python detect.py --weights best.pt --source img.jpg|folder|'*.jpg'|video.mp4 [--slice-size 640].

The classic script; the same as `yolov5-attention detect` (attention/cli/detect.py holds the flags).
"""

from attention.cli.main import main

if __name__ == "__main__":
    main(script="detect.py")
