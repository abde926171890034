"""Train or fine-tune YOLOv5 attention variants: python train.py --cfg yolov5s-cbam.yaml [--weights base.pt].

The classic script; the same as `yolov5-attention train` (attention/cli/train.py holds the flags).
"""

from attention.cli.main import main

if __name__ == "__main__":
    main(script="train.py")
