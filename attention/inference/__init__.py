"""Inference: detection on images and video (whole or sliced with sahi), attention maps, export."""
