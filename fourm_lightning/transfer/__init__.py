"""Transfer benchmarks: out-of-the-box evaluation, fine-tuned heads on the 4M encoder, suites.

- ``metrics``: depth, normals, segmentation, edges, camera, caption truth, detection mAP;
- ``ootb``: RGB -> each modality token to token, beside the tokenizer ceiling;
- ``data``: ``TransferDataModule`` (the project's DataModule + derived labels);
- ``encoder`` / ``heads`` / ``lit``: ``TransferModule`` (4M encoder + head, layer decay, probe);
- ``runs`` / ``benchmark``: ``fourm-lightning benchmark --config configs/benchmark/<suite>.yaml``.
"""
