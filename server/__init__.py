"""FastAPI inference server: /predict, /segment, /robustness, KServe v2 and metrics over the model store."""
