# syntax=docker/dockerfile:1
#
# Two images from one build:
#   docker build --target operator -t ghcr.io/yolofit/operator:0.1.0 .   # `yolofit operator`
#   docker build --target trainer  -t ghcr.io/yolofit/trainer:0.1.0  .   # `yolofit train`
#
# The operator image carries no CUDA stack. Its webhooks and planner never trace a model and
# import no torch: they answer from profiles, and the shipped profiles reach the operator as
# package data of the yolofit wheel (yolofit/estimator/data/profiles.json, next to
# gpu_classes.json and the Ultralytics argument names in operator/data/ultralytics_args.json).
# Only a model without a profile is traced, off the request path, in a subprocess on CPU;
# for that the image has the CPU-only torch/torchvision wheels and Ultralytics (~0.7 GB
# instead of the ~5 GB of the CUDA runtime image).
# tests/ship/test_dockerfile.py keeps this file honest: hadolint, pinned bases, entrypoints
# that are real `yolofit` commands, the torch-free webhook import path, the data in the wheel.
#
# Bases are pinned by tag; pin by digest (image:tag@sha256:...) in your registry mirror if you
# need bit-for-bit rebuilds. The torch versions match the trainer base image.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG TRAINER_BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.6-cudnn9-runtime
ARG TORCH_VERSION=2.7.1
ARG TORCHVISION_VERSION=0.22.1

# ---------------------------------------------------------------------------------------
# build: the yolofit wheel (pure Python). The only stage that runs a build backend.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY yolofit ./yolofit
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
# operator: kopf operator + admission webhooks + metrics, as the non-root numeric user 10001
# so that the pod's `runAsNonRoot: true` can be verified by the kubelet.
FROM ${PYTHON_IMAGE} AS operator
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    HOME=/home/yolofit
# OpenCV (an Ultralytics dependency, used by the tracer) needs libGL and GLib at import time.
# Debian's point releases move these versions, so they are not pinned (DL3008 ignored).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
# CPU-only torch first (from PyTorch's CPU index), then the wheel; the constraint keeps pip
# from swapping in the CUDA build from PyPI.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}+cpu" "torchvision==${TORCHVISION_VERSION}+cpu" \
 && printf 'torch==%s+cpu\ntorchvision==%s+cpu\n' "${TORCH_VERSION}" "${TORCHVISION_VERSION}" > /tmp/cpu-torch.txt \
 && python -m pip install --constraint /tmp/cpu-torch.txt /wheels/yolofit-*.whl \
 && rm /tmp/cpu-torch.txt \
 && useradd --uid 10001 --user-group --home-dir /home/yolofit --create-home --shell /usr/sbin/nologin yolofit
USER 10001:10001
WORKDIR /home/yolofit
# webhook (HTTPS), metrics, liveness/readiness
EXPOSE 9443 8080 8081
ENTRYPOINT ["yolofit", "operator"]

# ---------------------------------------------------------------------------------------
# trainer: `yolofit train` on the PyTorch CUDA runtime image (CUDA 12.6, cuDNN 9, NCCL; no
# compiler toolchain). Its torch is kept: the constraint stops pip from replacing it.
FROM ${TRAINER_BASE_IMAGE} AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True \
    HOME=/home/yolofit
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -c 'import torch, torchvision; print(f"torch=={torch.__version__}\ntorchvision=={torchvision.__version__}")' > /tmp/keep-torch.txt \
 && python -m pip install --constraint /tmp/keep-torch.txt /wheels/yolofit-*.whl \
 && rm /tmp/keep-torch.txt \
 && useradd --uid 10001 --user-group --home-dir /home/yolofit --create-home --shell /usr/sbin/nologin yolofit
USER 10001:10001
WORKDIR /home/yolofit
ENTRYPOINT ["yolofit", "train"]
