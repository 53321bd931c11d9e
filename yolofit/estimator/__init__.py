"""Predict the GPU memory of Ultralytics YOLO training before a GPU is touched.

Pure side (no torch at import): profile (Profile, ProfileStore, estimate), identity (model
configs and their hashes), gpu (GPU classes), planner (request -> plan), calibration.
Measurement side (torch, lazily): allocator, tracer, build, models, checkpointing.
"""
