"""Right-sized GPUs: how a plan becomes a request on a GPU-sharing system.

One module per backend, each a pure transform of plain data:

- `mig`  MIG slices as GPU classes (GFD `mixed` and `single` strategies), and the rule that a
         multi-rank job never lands on one;
- `dra`  a ResourceClaimTemplate per job attempt whose CEL selector asks for a device with at
         least the memory the plan needs (Kubernetes resource.k8s.io/v1);
- `hami` `nvidia.com/gpu` plus `nvidia.com/gpumem` (MiB per GPU) for HAMi's vGPU;
- `kai`  KAI Scheduler's `gpu-memory` annotation, sized to survive KAI's rounding.

`base` holds the per-class description (`Sharing`) and the memory each backend is asked for;
`apply` dispatches from a plan to the backend's pod transform. Nothing here talks to the API.
"""
