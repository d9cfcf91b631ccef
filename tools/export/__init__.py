"""Export and post-training quantisation of a (LoRA-merged) causal LM, one concern per module.

``exporter``: the export pipeline. ``atomic``: all-or-nothing output folders. ``metadata``: metadata.json of
every artifact. ``merge``: base + adapter -> merged dense model. ``bnb``: INT8 / NF4 bitsandbytes checkpoints.
``gguf_export`` / ``gguf_verify``: GGUF F16 / Q8_0 / Q4_0 files and their read-back check. ``ptq`` with
``dynamic_int8``, ``hqq_ptq``, ``torchao_ptq``: PTQ applied in memory and its measurement. ``methods``: the
registry of every format / method the CLI offers. ``compat``: which architecture supports which method,
answered from config.json before any work. ``calibration``: prompts from a prepared dataset. ``report`` /
``agreement`` / ``chart``: the quality report.
"""
