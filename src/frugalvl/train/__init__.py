"""Training code. It reuses the models' loaders and the segmenters' modules; it defines no model twice.

* :mod:`.upsampler`: SimFeatUp training of a JBU upsampler for any ViT CLIP (SegEarth-OV spec §2.5).
"""
