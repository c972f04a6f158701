"""The reference implementations pmv-data's models are proved against, built the same way
everywhere: by the parity tests (tests/python/*_reference.py), the converters' round trips,
the training-step benchmark (scripts/bench_models_torch.py) and the FLOP count
(scripts/model_flops.py).

One module a model family, each with `build(frames, height, width, classes, drop_path=0.0,
dropout=0.0)` returning the reference model (logits from an ImageNet-normalised
`[B, 3, T, H, W]` clip) and `randomise(model, seed)`:
- `x3d`: pytorchvideo 0.1.5 `create_x3d` (X3D-M);
- `mvit`: torchvision 0.26 `MViT` with `mvit_v2_s`'s blocks;
- `uniformer`: mmaction2 1.2.0's `uniformer.py` backbone, loaded on its own, with its
  I3D-style head.
Nothing here is pmv-data's own arithmetic; these modules only build and seed the
references.
"""
