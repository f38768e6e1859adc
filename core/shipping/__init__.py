"""Shipping: a finished run as the model people will serve.

Owns: export (what every export shares and the check that it behaves like the evaluated model), merged_export
(adapter merged into the base), gguf_export (llama.cpp's converter and quantizer, checked by llama.cpp) and
ollama (a Modelfile whose TEMPLATE Go's text/template renders as the model's own chat template).

Imports: any room but training; nothing in core imports shipping.
"""
