"""Measurements of models: FLOPs (`flops`), time and memory (`profiling`), the comparison against the
stock model (`comparison`, `compare_plot`) and the attention visualiser (`attention_viz`)."""
