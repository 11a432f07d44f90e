"""The MV-DiT-17B side models and conditioning: umT5 text encoder, CLIP ViT-H/14 visual tower, Wan VAE,
the 17B conditioning (``y``, ``clip_fea``, ``seq_len``), aspect buckets and the flow-match schedule.

Nothing here imports transformers or diffusers at module import time (node packs must import fast).
"""
