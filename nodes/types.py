"""Wire types of the pack. Names are a public contract: never rename them."""

from ._comfy import io

Joints = io.Custom("MTV_JOINTS")  # mtv_core.motion.JointSequence
Motion = io.Custom("MTV_MOTION")  # mtv_core.tokenizer.MotionTokens
Tokenizer = io.Custom("MTV_TOKENIZER")  # loaded 4DMoT model
NLFModel = io.Custom("MTV_NLF_MODEL")  # loaded NLF TorchScript model
DiT = io.Custom("MTV_DIT")  # loaded MV-DiT
VideoVAE = io.Custom("MTV_VAE")  # mtv_core.dit.video_vae.VideoVAE (CogVideoX for the 7B)
Latent = io.Custom("MTV_LATENT")  # mtv_core.dit.latents.MTVLatent: every window's latents and how to join them
Boxes = io.Custom("MTV_BOXES")  # per-frame person boxes from NLF

CATEGORY = "MTVCrafter"
