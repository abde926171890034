"""python -m attention <command>: the same as the yolov5-attention console script."""

from attention.cli.main import console

if __name__ == "__main__":
    console()
