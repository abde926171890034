"""Evaluation: COCO AP by object size, tables, the val job, and variants trained alike and compared with intervals."""
