"""Builders for tests and benchmarks: tiny random models in the real checkpoint formats, small real
datasets, and the official methods' schedules kept as references. Never imported by library code.

- :mod:`.clip`: tiny OpenAI-layout and TorchScript CLIP checkpoints.
- :mod:`.llava`: a tiny random LLaVA folder with an offline tokenizer.
- :mod:`.sam3`: random-weight SAM 3 (tiny, small, full size).
- :mod:`.easyvqa`: a LLaVA-format dataset from the ``easy-vqa`` package.
- :mod:`.segearth_ov3_reference`: SegEarth-OV3's official one-prompt-at-a-time schedule.
"""
