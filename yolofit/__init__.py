"""yolofit: fit Ultralytics YOLO training jobs to GPU memory before they run."""

__version__ = "0.1.0"
